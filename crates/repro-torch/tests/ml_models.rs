//! Feature extractors: torchvision-compatible variable names and parameter counts for the
//! ImageNet models (so torchvision weights load), output shapes of every model, DenseNet's
//! transition really averaging, and fine-tuning loading only the feature extractor.

use repro_torch::ml::models::{self, ModelName};
use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor, nn};

/// Trainable parameter count and the variable names of a model built alone.
fn build(name: ModelName, c: i64, h: i64, w: i64) -> (nn::VarStore, models::Backbone, i64) {
    let vs = nn::VarStore::new(Device::Cpu);
    let b = models::build(&vs.root(), name, c, h, w).unwrap();
    let n: i64 = vs
        .trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum();
    (vs, b, n)
}

#[test]
fn imagenet_models_match_torchvision_parameter_counts_and_names() {
    // torchvision totals (with the 1000-class head): ResNet50 25,557,032; ResNet101 44,549,160;
    // DenseNet161 28,681,000. The head is not part of the feature extractor:
    // fc = 2048·1000 + 1000, classifier = 2208·1000 + 1000.
    for (name, total, head, dim, probe) in [
        (
            ModelName::Resnet50,
            25_557_032i64,
            2_049_000i64,
            2048,
            "layer4.2.bn3.running_var",
        ),
        (
            ModelName::Resnet101,
            44_549_160,
            2_049_000,
            2048,
            "layer3.22.conv2.weight",
        ),
        (
            ModelName::Densenet161,
            28_681_000,
            2_209_000,
            2208,
            "features.denseblock3.denselayer36.conv2.weight",
        ),
    ] {
        let (vs, b, n) = build(name, 3, 64, 64);
        assert_eq!(n, total - head, "{name}: parameter count");
        assert_eq!(b.dim, dim);
        let vars = vs.variables();
        assert!(vars.contains_key(probe), "{name}: no variable {probe}");
        for first in [
            "conv1.weight",
            "bn1.weight",
            "layer1.0.downsample.0.weight",
            "layer1.0.downsample.1.running_mean",
        ] {
            if name != ModelName::Densenet161 {
                assert!(vars.contains_key(first), "{name}: no {first}");
            }
        }
        if name == ModelName::Densenet161 {
            for v in [
                "features.conv0.weight",
                "features.norm0.running_mean",
                "features.transition1.conv.weight",
                "features.transition3.norm.weight",
                "features.norm5.bias",
                "features.denseblock1.denselayer1.norm1.weight",
            ] {
                assert!(vars.contains_key(v), "densenet161: no {v}");
            }
        }
    }
}

#[test]
fn every_model_gives_features_of_its_dimension() {
    for (name, c, h) in [
        (ModelName::Mlp, 1, 28),
        (ModelName::Cnn, 1, 28),
        (ModelName::Cnn, 3, 32),
        (ModelName::ResnetSmall, 1, 28),
        (ModelName::Resnet50, 3, 64),
        (ModelName::Densenet161, 3, 64),
    ] {
        tch::manual_seed(0);
        let (_vs, b, _) = build(name, c, h, h);
        let x = Tensor::randn([2, c, h, h], (Kind::Float, Device::Cpu));
        for train in [true, false] {
            let f = tch::no_grad(|| b.net.forward_t(&x, train));
            assert_eq!(f.size(), vec![2, b.dim], "{name}");
            assert!(f.isfinite().all().int64_value(&[]) != 0);
        }
    }
}

#[test]
fn cnn_is_small_enough_for_two_cpu_cores() {
    let (_vs, b, n) = build(ModelName::Cnn, 1, 28, 28);
    assert_eq!(b.dim, 128);
    assert!(n < 200_000, "cnn has {n} parameters");
}

#[test]
fn densenet_transition_averages_instead_of_summing() {
    // tch's DenseNet sums each 2×2 window (divisor override 1). Compare ours against the same
    // graph written with an explicit mean over 2×2 windows: a sum would be 4× off per
    // transition.
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let b = models::densenet::densenet(&vs.root(), 8, 4, &[1, 1, 1, 1]);
    let x = Tensor::rand([1, 3, 64, 64], (Kind::Float, Device::Cpu));
    let got = tch::no_grad(|| b.net.forward_t(&x, false));
    let v = vs.variables();
    let bn = |p: &str, t: &Tensor| {
        t.batch_norm(
            Some(&v[&format!("{p}.weight")]),
            Some(&v[&format!("{p}.bias")]),
            Some(&v[&format!("{p}.running_mean")]),
            Some(&v[&format!("{p}.running_var")]),
            false,
            0.1,
            1e-5,
            false,
        )
    };
    let conv = |p: &str, t: &Tensor, stride: i64, pad: i64| {
        t.conv2d(
            &v[&format!("{p}.weight")],
            None::<Tensor>,
            [stride],
            [pad],
            [1],
            1,
        )
    };
    let mean2x2 = |t: &Tensor| {
        let s = t.size();
        t.view([s[0], s[1], s[2] / 2, 2, s[3] / 2, 2]).mean_dim(
            [3i64, 5].as_slice(),
            false,
            Kind::Float,
        )
    };
    tch::no_grad(|| {
        let mut y = bn("features.norm0", &conv("features.conv0", &x, 2, 3))
            .relu()
            .max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for blk in 1..=4 {
            let l = format!("features.denseblock{blk}.denselayer1");
            let z = bn(&format!("{l}.norm1"), &y).relu();
            let z = conv(&format!("{l}.conv1"), &z, 1, 0);
            let z = bn(&format!("{l}.norm2"), &z).relu();
            let z = conv(&format!("{l}.conv2"), &z, 1, 1);
            y = Tensor::cat(&[y, z], 1);
            if blk < 4 {
                let t = format!("features.transition{blk}");
                y = mean2x2(&conv(
                    &format!("{t}.conv"),
                    &bn(&format!("{t}.norm"), &y).relu(),
                    1,
                    0,
                ));
            }
        }
        let want =
            bn("features.norm5", &y)
                .relu()
                .mean_dim([2i64, 3].as_slice(), false, Kind::Float);
        let diff = (&got - &want).abs().max().double_value(&[]);
        assert!(
            diff < 1e-5,
            "densenet differs from the reference graph by {diff}"
        );
    });
}
