//! The names of the feature extractors `train` knows, without libtorch.

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, bail};

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

pub const MODEL_NAMES: [&str; 6] = [
    "mlp",
    "cnn",
    "resnet-small",
    "resnet50",
    "resnet101",
    "densenet161",
];

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
            _ => bail!(
                "unknown model '{s}' (expected one of {})",
                MODEL_NAMES.join(", ")
            ),
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
        matches!(
            self,
            ModelName::Resnet50 | ModelName::Resnet101 | ModelName::Densenet161
        )
    }
}
