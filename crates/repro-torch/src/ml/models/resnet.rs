//! ResNet50 / ResNet101 feature extractors with torchvision's layout and variable names
//! (`conv1`, `bn1`, `layer{1..4}.{k}.conv{1,2,3}`, `bn{1,2,3}`, `downsample.{0,1}`), so a
//! torchvision state dict saved as safetensors loads as is (its `fc.*` is ignored: the head is
//! new). Bottleneck blocks stride on the 3×3 convolution (torchvision's "ResNet v1.5").
//! Output: the 2048 globally average-pooled features.

use tch::nn::{self, ModuleT};

use super::Backbone;
use super::layers::{bn, conv};

fn bottleneck(p: nn::Path, c_in: i64, width: i64, stride: i64) -> impl ModuleT + use<> {
    let c_out = width * 4;
    let conv1 = conv(&p / "conv1", c_in, width, 1, 1, 0);
    let bn1 = bn(&p / "bn1", width);
    let conv2 = conv(&p / "conv2", width, width, 3, stride, 1);
    let bn2 = bn(&p / "bn2", width);
    let conv3 = conv(&p / "conv3", width, c_out, 1, 1, 0);
    let bn3 = bn(&p / "bn3", c_out);
    let down = (stride != 1 || c_in != c_out).then(|| {
        (
            conv(&p / "downsample" / "0", c_in, c_out, 1, stride, 0),
            bn(&p / "downsample" / "1", c_out),
        )
    });
    nn::func_t(move |xs, train| {
        let ys = xs
            .apply(&conv1)
            .apply_t(&bn1, train)
            .relu()
            .apply(&conv2)
            .apply_t(&bn2, train)
            .relu()
            .apply(&conv3)
            .apply_t(&bn3, train);
        let skip = match &down {
            Some((c, b)) => xs.apply(c).apply_t(b, train),
            None => xs.shallow_clone(),
        };
        (skip + ys).relu()
    })
}

/// A bottleneck ResNet with `blocks[i]` blocks in stage i (`[3,4,6,3]` = ResNet50,
/// `[3,4,23,3]` = ResNet101).
pub fn resnet(p: &nn::Path, blocks: &[usize; 4]) -> Backbone {
    let conv1 = conv(p / "conv1", 3, 64, 7, 2, 3);
    let bn1 = bn(p / "bn1", 64);
    let mut layers = Vec::new();
    let mut c_in = 64;
    for (i, (&n, width)) in blocks.iter().zip([64i64, 128, 256, 512]).enumerate() {
        let lp = p / format!("layer{}", i + 1);
        let mut seq = nn::seq_t();
        for k in 0..n {
            let stride = if k == 0 && i > 0 { 2 } else { 1 };
            seq = seq.add(bottleneck(&lp / k.to_string(), c_in, width, stride));
            c_in = width * 4;
        }
        layers.push(seq);
    }
    let net = nn::func_t(move |xs, train| {
        let mut ys = xs.apply(&conv1).apply_t(&bn1, train).relu().max_pool2d(
            [3, 3],
            [2, 2],
            [1, 1],
            [1, 1],
            false,
        );
        for l in &layers {
            ys = ys.apply_t(l, train);
        }
        ys.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    });
    Backbone { net, dim: 2048 }
}
