//! The convolution and batch-norm layers ResNet and DenseNet share, configured as torchvision
//! configures them (no convolution bias: a batch norm follows every convolution), so the
//! weights of a torchvision state dict load under the same names.

use tch::nn;

/// A 2-D convolution without bias, `k`×`k`, with the given stride and padding.
pub(super) fn conv(
    p: nn::Path,
    c_in: i64,
    c_out: i64,
    k: i64,
    stride: i64,
    padding: i64,
) -> nn::Conv2D {
    let config = nn::ConvConfig {
        stride,
        padding,
        bias: false,
        ..Default::default()
    };
    nn::conv2d(p, c_in, c_out, k, config)
}

/// A 2-D batch norm with PyTorch's defaults (eps 1e-5, momentum 0.1, affine).
pub(super) fn bn(p: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(p, c, Default::default())
}
