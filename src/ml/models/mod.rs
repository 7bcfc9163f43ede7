//! Feature extractors: the model `M` of the paper that maps an image to a feature vector `x`
//! (the classifier head lives in `ml::loss`).
//!
//! Two families: small models for the embedded Fashion-MNIST default that train on two CPU
//! cores in seconds (`mlp`, `cnn`, `resnet-small`), and the paper's ImageNet models
//! (`resnet50`, `resnet101`, `densenet161`) with torchvision's variable names, so that
//! torchvision weights exported to safetensors load directly. Every model takes NCHW float
//! input, already normalised, and returns [B, dim] features.

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, bail};
use tch::nn;

pub mod densenet;
pub mod resnet;
pub mod small;

/// The models `train` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelName {
    Mlp,
    Cnn,
    ResnetSmall,
    Resnet50,
    Resnet101,
    Densenet161,
}

pub const MODEL_NAMES: [&str; 6] = ["mlp", "cnn", "resnet-small", "resnet50", "resnet101", "densenet161"];

impl FromStr for ModelName {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "mlp" => ModelName::Mlp,
            "cnn" => ModelName::Cnn,
            "resnet-small" => ModelName::ResnetSmall,
            "resnet50" => ModelName::Resnet50,
            "resnet101" => ModelName::Resnet101,
            "densenet161" => ModelName::Densenet161,
            _ => bail!("unknown model '{s}' (expected one of {})", MODEL_NAMES.join(", ")),
        })
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ModelName::Mlp => "mlp",
            ModelName::Cnn => "cnn",
            ModelName::ResnetSmall => "resnet-small",
            ModelName::Resnet50 => "resnet50",
            ModelName::Resnet101 => "resnet101",
            ModelName::Densenet161 => "densenet161",
        };
        f.write_str(s)
    }
}

impl ModelName {
    /// ImageNet models expect 3 channels normalised with ImageNet statistics (their pretrained
    /// weights were trained so); small models take the data's channels and its own statistics.
    pub fn is_imagenet(self) -> bool {
        matches!(self, ModelName::Resnet50 | ModelName::Resnet101 | ModelName::Densenet161)
    }
}

/// A feature extractor and the length of its features.
pub struct Backbone {
    pub net: nn::FuncT<'static>,
    pub dim: i64,
}

/// Build `name` under `p` for images with `channels` channels of `height`×`width` pixels.
pub fn build(p: &nn::Path, name: ModelName, channels: i64, height: i64, width: i64) -> Result<Backbone> {
    Ok(match name {
        ModelName::Mlp => small::mlp(p, channels * height * width),
        ModelName::Cnn => small::cnn(p, channels, height, width),
        ModelName::ResnetSmall => small::resnet_small(p, channels),
        ModelName::Resnet50 => resnet::resnet(p, &[3, 4, 6, 3]),
        ModelName::Resnet101 => resnet::resnet(p, &[3, 4, 23, 3]),
        ModelName::Densenet161 => densenet::densenet(p, 96, 48, &[6, 12, 36, 24]),
    })
}
