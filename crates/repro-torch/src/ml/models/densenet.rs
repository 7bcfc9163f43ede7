//! DenseNet-161 feature extractor with torchvision's layout and variable names
//! (`features.conv0`, `features.norm0`, `features.denseblock{b}.denselayer{l}.{norm1,conv1,
//! norm2,conv2}`, `features.transition{t}.{norm,conv}`, `features.norm5`).
//!
//! Written here rather than taken from `tch::vision::densenet`, whose transition pooling passes
//! a divisor override of 1 and so sums the 2×2 window instead of averaging it; outputs would
//! differ from torchvision's by a factor of 4 per transition. Here the transition uses a true
//! 2×2 average pool, as torchvision does. Output: 2208 globally average-pooled features after
//! the final norm and ReLU.

use tch::Tensor;
use tch::nn::{self, ModuleT};

use super::Backbone;
use super::layers::{bn, conv};

/// norm1 → relu → conv1 (1×1, bn_size·growth) → norm2 → relu → conv2 (3×3, growth).
fn dense_layer(p: nn::Path, c_in: i64, growth: i64, bn_size: i64) -> impl ModuleT + use<> {
    let inter = bn_size * growth;
    let norm1 = bn(&p / "norm1", c_in);
    let conv1 = conv(&p / "conv1", c_in, inter, 1, 1, 0);
    let norm2 = bn(&p / "norm2", inter);
    let conv2 = conv(&p / "conv2", inter, growth, 3, 1, 1);
    nn::func_t(move |xs, train| {
        xs.apply_t(&norm1, train)
            .relu()
            .apply(&conv1)
            .apply_t(&norm2, train)
            .relu()
            .apply(&conv2)
    })
}

/// One dense block's layers and the transition (norm, conv) after it; the last block has none.
type DenseStage = (Vec<Box<dyn ModuleT>>, Option<(nn::BatchNorm, nn::Conv2D)>);

/// The torchvision DenseNet with `init` stem channels, growth rate `growth`, bn_size 4 and
/// `blocks[i]` layers in dense block i (DenseNet-161: 96, 48, [6, 12, 36, 24]).
pub fn densenet(p: &nn::Path, init: i64, growth: i64, blocks: &[usize; 4]) -> Backbone {
    let f = p / "features";
    let conv0 = conv(&f / "conv0", 3, init, 7, 2, 3);
    let norm0 = bn(&f / "norm0", init);
    let mut c = init;
    let mut stages: Vec<DenseStage> = Vec::new();
    for (b, &n) in blocks.iter().enumerate() {
        let bp = &f / format!("denseblock{}", b + 1);
        let mut layers: Vec<Box<dyn ModuleT>> = Vec::new();
        for l in 0..n {
            layers.push(Box::new(dense_layer(
                &bp / format!("denselayer{}", l + 1),
                c,
                growth,
                4,
            )));
            c += growth;
        }
        let trans = (b + 1 < blocks.len()).then(|| {
            let tp = &f / format!("transition{}", b + 1);
            let t = (bn(&tp / "norm", c), conv(&tp / "conv", c, c / 2, 1, 1, 0));
            c /= 2;
            t
        });
        stages.push((layers, trans));
    }
    let norm5 = bn(&f / "norm5", c);
    let dim = c;
    let net = nn::func_t(move |xs, train| {
        let mut ys = xs.apply(&conv0).apply_t(&norm0, train).relu().max_pool2d(
            [3, 3],
            [2, 2],
            [1, 1],
            [1, 1],
            false,
        );
        for (layers, trans) in &stages {
            // Each layer sees the concatenation of everything before it.
            let mut feats = vec![ys];
            for layer in layers {
                let input = Tensor::cat(&feats, 1);
                feats.push(layer.forward_t(&input, train));
            }
            ys = Tensor::cat(&feats, 1);
            if let Some((norm, conv)) = trans {
                ys = ys.apply_t(norm, train).relu().apply(conv).avg_pool2d(
                    [2, 2],
                    [2, 2],
                    [0, 0],
                    false,
                    true,
                    None::<i64>,
                );
            }
        }
        ys.apply_t(&norm5, train)
            .relu()
            .adaptive_avg_pool2d([1, 1])
            .flatten(1, -1)
    });
    Backbone { net, dim }
}
