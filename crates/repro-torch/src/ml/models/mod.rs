//! Feature extractors: the model `M` of the paper that maps an image to a feature vector `x`
//! (the classifier head lives in `ml::loss`).
//!
//! Two families: small models for the embedded Fashion-MNIST default that train on two CPU
//! cores in seconds (`mlp`, `cnn`, `resnet-small`), and the paper's ImageNet models
//! (`resnet50`, `resnet101`, `densenet161`) with torchvision's variable names, so that
//! torchvision weights exported to safetensors load directly. Every model takes NCHW float
//! input, already normalised, and returns [B, dim] features.

use anyhow::Result;
use tch::nn;

pub mod densenet;
mod layers;
pub mod resnet;
pub mod small;

pub use repro::ml_spec::model::{MODEL_NAMES, ModelName};

/// A feature extractor and the length of its features.
pub struct Backbone {
    pub net: nn::FuncT<'static>,
    pub dim: i64,
}

/// Build `name` under `p` for images with `channels` channels of `height`×`width` pixels.
pub fn build(
    p: &nn::Path,
    name: ModelName,
    channels: i64,
    height: i64,
    width: i64,
) -> Result<Backbone> {
    Ok(match name {
        ModelName::Mlp => small::mlp(p, channels * height * width),
        ModelName::Cnn => small::cnn(p, channels, height, width),
        ModelName::ResnetSmall => small::resnet_small(p, channels),
        ModelName::Resnet50 => resnet::resnet(p, &[3, 4, 6, 3]),
        ModelName::Resnet101 => resnet::resnet(p, &[3, 4, 23, 3]),
        ModelName::Densenet161 => densenet::densenet(p, 96, 48, &[6, 12, 36, 24]),
    })
}
