//! The `with:` parameters of a `train` stage and their checks, without libtorch, so that the
//! engine rejects a bad stage before anything runs.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::loss::{BiasMode, DEFAULT_GAMMA, LossKind};
use super::model::ModelName;

/// The head at the start of a fine-tune (see `TrainConfig::head_init`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HeadInit {
    #[default]
    New,
    Pretrained,
}

/// What to do with a step whose loss or gradients are not finite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnNonFinite {
    Skip,
    Stop,
    /// Take the step anyway, as an implementation without a guard does (non-finite values
    /// then reach the weights); for studying the paper's overflow, with `numerics: direct`.
    Apply,
}

/// How the loss is evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Numerics {
    /// softplus / log-sum-exp: finite for every finite metric.
    #[default]
    Stable,
    /// The formulas as written, in fp32: BCE log(1 + e^x), SoftMax −log(e^{c_y} / Σ e^{c_j});
    /// e^x overflows for x > 88.7.
    Direct,
}

/// The `with:` parameters of a `train` stage (paths relative to the workspace).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Dataset directory (train.safetensors, test.safetensors, classes.json).
    pub data: PathBuf,
    /// Output directory: model.safetensors, logits.safetensors, train.json.
    pub out: PathBuf,
    /// One of the twelve losses (`soft-d`, `bce-nu`, …).
    pub loss: String,
    /// mlp | cnn | resnet-small | resnet50 | resnet101 | densenet161.
    #[serde(default = "d_model")]
    pub model: String,
    /// Scale of the normalized classifier.
    #[serde(default = "d_gamma")]
    pub gamma: f64,
    /// Diverse-bias initialisation, 0 (random, mean zero) or 1–7 (Section V-B).
    #[serde(default)]
    pub bias_mode: u8,
    /// Initial unified bias of the unified-bias losses (`*-u`, `*-nu`; the other losses ignore
    /// it, so one value can serve a whole matrix of losses): a number, `log10n` (ln(10·N) for
    /// the normalized classifier, 0 for the linear one: the paper's start, docs/training.md) or
    /// `balanced`; default (null) log(N−1) with the classifier's sign.
    #[serde(default)]
    pub unified_bias_init: Option<super::loss::BiasStart>,
    /// The head at the start of a fine-tune: `new` (uniform ±1/√M), or `pretrained`: the
    /// classifier of `init_from` (rows normalised for the normalized classifier; its per-class
    /// bias kept for the diverse-bias losses at bias_mode 0). Only where the classes are the
    /// pre-training's (ImageNet); the FGVC sets have new classes and keep a new head.
    #[serde(default)]
    pub head_init: HeadInit,
    /// Passes over the training split. 0 = no training: the `init_from` model is evaluated as
    /// it is, with its own classifier (`head.*` of the file) — the pre-training column of the
    /// paper's Table II.
    #[serde(default = "d_epochs")]
    pub epochs: usize,
    /// Initial learning rate (cosine decay to 0 over all steps).
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default = "d_momentum")]
    pub momentum: f64,
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    #[serde(default)]
    pub seed: u64,
    /// auto | cpu | cuda.
    #[serde(default = "d_device")]
    pub device: String,
    /// Random crop (zero padding) and horizontal flip on training images. Off by default:
    /// the short CPU trainings of the default profile learn faster without it.
    #[serde(default)]
    pub augment: bool,
    /// Padding of the random crop in pixels; default H/8.
    #[serde(default)]
    pub crop_padding: Option<usize>,
    /// A model.safetensors (or torchvision weights as safetensors) to fine-tune from: the
    /// feature extractor is loaded, the head is new.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    #[serde(default)]
    pub limit_train: Option<usize>,
    #[serde(default)]
    pub limit_test: Option<usize>,
    #[serde(default = "d_nonfinite")]
    pub on_nonfinite: OnNonFinite,
    /// Open-set study: train and test on classes 0..k only; the test images of the other
    /// classes go to `logits_unknown.safetensors`.
    #[serde(default)]
    pub known_classes: Option<usize>,
    /// stable (default) or direct: see [`Numerics`].
    #[serde(default)]
    pub numerics: Numerics,
    /// Side of the square images cut from a sharded JPEG set (ignored for in-memory sets).
    #[serde(default = "d_image_size")]
    pub image_size: u32,
    /// Batch size of the test-set evaluation.
    #[serde(default = "d_eval_batch")]
    pub eval_batch_size: usize,
    /// Mixed precision on CUDA (autocast to float16 in the forward pass; a step with a
    /// non-finite loss or gradient is skipped, as a gradient scaler would). Off by default.
    #[serde(default)]
    pub mixed_precision: bool,
    /// A dynamic loss scaler as AMP's `GradScaler` (scale 2¹⁶ at the start, halved and the
    /// step skipped on a non-finite gradient, doubled after 2,000 finite steps in a row): what
    /// a mixed-precision PyTorch training (the UCE code) runs with. Works on the CPU as well,
    /// where it changes nothing but the skipped steps (power-of-two scales are exact in fp32).
    /// Needs `on_nonfinite: skip`. Off by default.
    #[serde(default)]
    pub grad_scaler: bool,
}

fn d_model() -> String {
    "cnn".into()
}
fn d_gamma() -> f64 {
    DEFAULT_GAMMA
}
fn d_epochs() -> usize {
    2
}
fn d_lr() -> f64 {
    0.01
}
fn d_momentum() -> f64 {
    0.9
}
fn d_wd() -> f64 {
    5e-4
}
fn d_batch() -> usize {
    128
}
fn d_device() -> String {
    "auto".into()
}
fn d_nonfinite() -> OnNonFinite {
    OnNonFinite::Skip
}
fn d_image_size() -> u32 {
    224
}
fn d_eval_batch() -> usize {
    512
}

/// A check of [`TrainConfig::validate`] that failed on one parameter: which (a `with:` key of
/// a `train` stage), and the message. The `train` kind hands it on to the engine as a typed
/// parameter error, so that the spec error points at the parameter's line (this module names
/// nothing of the engine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidParam {
    /// The parameter, as written under `with:`.
    pub param: &'static str,
    /// The message, which may name the parameter in its own words.
    pub message: String,
}

impl std::fmt::Display for InvalidParam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InvalidParam {}

fn invalid(param: &'static str, message: impl Into<String>) -> InvalidParam {
    InvalidParam {
        param,
        message: message.into(),
    }
}

/// `bail!` with an [`InvalidParam`]: the parameter, then the message as for `format!`.
macro_rules! bail_param {
    ($param:expr, $($fmt:tt)+) => {
        return Err(invalid($param, format!($($fmt)+)).into())
    };
}

impl TrainConfig {
    /// Check everything that can be checked without reading data.
    pub fn validate(&self) -> Result<(LossKind, ModelName)> {
        // Each error names its parameter by type: see `InvalidParam`.
        let kind: LossKind = self
            .loss
            .parse()
            .context(invalid("loss", "parameter `loss`"))?;
        let model: ModelName = self
            .model
            .parse()
            .context(invalid("model", "parameter `model`"))?;
        if !(self.gamma.is_finite() && self.gamma > 0.0) {
            bail_param!(
                "gamma",
                "parameter `gamma` must be a positive number, got {}",
                self.gamma
            );
        }
        if self.bias_mode > 7 {
            bail_param!(
                "bias_mode",
                "parameter `bias_mode` must be 0–7 (Section V-B), got {}",
                self.bias_mode
            );
        }
        if self.bias_mode != 0 && kind.bias != BiasMode::Diverse {
            bail_param!(
                "bias_mode",
                "parameter `bias_mode` applies to diverse-bias losses only (soft-d, soft-nd, bce-d, bce-nd), not {kind}"
            );
        }
        if self.head_init == HeadInit::Pretrained && self.init_from.is_none() {
            bail_param!(
                "head_init",
                "parameter `head_init: pretrained` needs `init_from` (the pre-trained model)"
            );
        }
        if let Some(super::loss::BiasStart::Value(b)) = self.unified_bias_init
            && !b.is_finite()
        {
            bail_param!(
                "unified_bias_init",
                "parameter `unified_bias_init` must be a finite number, got {b}"
            );
        }
        if self.grad_scaler && self.on_nonfinite != OnNonFinite::Skip {
            bail_param!(
                "grad_scaler",
                "parameter `grad_scaler: true` skips every non-finite step (and halves its scale), so it needs `on_nonfinite: skip`"
            );
        }
        if self.known_classes.is_some_and(|k| k < 2) {
            bail_param!(
                "known_classes",
                "parameter `known_classes` must be at least 2"
            );
        }
        if self.epochs == 0 {
            // Evaluating a model as it is needs the model, with a classifier of this shape.
            if self.init_from.is_none() {
                bail_param!(
                    "epochs",
                    "parameter `epochs: 0` evaluates the `init_from` model as it is, but `init_from` is not set"
                );
            }
            if kind.bias != BiasMode::Diverse || kind.classifier != super::loss::Classifier::Linear
            {
                bail_param!(
                    "epochs",
                    "parameter `epochs: 0` evaluates the `init_from` model with its own linear classifier and \
                     per-class bias, which is the head of soft-d or bce-d, not {kind}"
                );
            }
            if self.bias_mode != 0 {
                bail_param!(
                    "bias_mode",
                    "parameter `bias_mode` has no effect with `epochs: 0` (the bias is loaded)"
                );
            }
        }
        if self.batch_size < 2 {
            bail_param!(
                "batch_size",
                "parameter `batch_size` must be at least 2 (batch norm needs two samples)"
            );
        }
        if self.eval_batch_size == 0 {
            bail_param!(
                "eval_batch_size",
                "parameter `eval_batch_size` must be at least 1"
            );
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail_param!(
                "lr",
                "parameter `lr` must be a positive number, got {}",
                self.lr
            );
        }
        if !(0.0..1.0).contains(&self.momentum) || self.weight_decay < 0.0 {
            // One message for both; the parameter is the one that is out of range.
            let param = if (0.0..1.0).contains(&self.momentum) {
                "weight_decay"
            } else {
                "momentum"
            };
            bail_param!(
                param,
                "parameters `momentum` must be in [0, 1) and `weight_decay` ≥ 0"
            );
        }
        // Only the spelling here: whether CUDA is there is checked where the stage runs (the
        // engine may validate on a machine without the GPU that a Slurm job will have).
        if !matches!(self.device.as_str(), "auto" | "cpu" | "cuda") {
            bail_param!(
                "device",
                "parameter `device` must be auto, cpu or cuda, got '{}'",
                self.device
            );
        }
        Ok((kind, model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: serde_json::Value) -> TrainConfig {
        let mut v =
            serde_json::json!({"data": "d", "out": "o", "loss": "soft-d", "model": "resnet50"});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    /// Each check names its parameter by type, for the spec error's line; the message keeps
    /// its words.
    #[test]
    fn errors_name_their_parameter() {
        let param = |extra| {
            let e = cfg(extra).validate().unwrap_err();
            let p = e.downcast_ref::<InvalidParam>().map(|p| p.param);
            (p.unwrap_or_default(), format!("{e:#}"))
        };
        let (p, msg) = param(serde_json::json!({"gamma": -1.0}));
        assert_eq!(p, "gamma", "{msg}");
        assert_eq!(msg, "parameter `gamma` must be a positive number, got -1");
        let (p, msg) = param(serde_json::json!({"loss": "soft-x"}));
        assert_eq!(p, "loss", "{msg}");
        assert!(msg.starts_with("parameter `loss`: "), "{msg}");
        // One message for momentum and weight decay: the parameter is the one out of range.
        assert_eq!(param(serde_json::json!({"momentum": 1.0})).0, "momentum");
        assert_eq!(
            param(serde_json::json!({"weight_decay": -1.0})).0,
            "weight_decay"
        );
        assert_eq!(param(serde_json::json!({"batch_size": 1})).0, "batch_size");
        assert_eq!(
            param(serde_json::json!({"eval_batch_size": 0})).0,
            "eval_batch_size"
        );
        assert_eq!(param(serde_json::json!({"epochs": 0})).0, "epochs");
    }

    #[test]
    fn grad_scaler_needs_skip() {
        cfg(serde_json::json!({"grad_scaler": true}))
            .validate()
            .unwrap();
        for mode in ["apply", "stop"] {
            let e = cfg(serde_json::json!({"grad_scaler": true, "on_nonfinite": mode}))
                .validate()
                .unwrap_err()
                .to_string();
            assert!(e.contains("on_nonfinite: skip"), "{e}");
        }
        assert!(!cfg(serde_json::json!({})).grad_scaler);
    }

    #[test]
    fn zero_epochs_evaluates_the_init_model_with_its_own_classifier() {
        cfg(serde_json::json!({"epochs": 0, "init_from": "w.safetensors"}))
            .validate()
            .unwrap();
        let e = cfg(serde_json::json!({"epochs": 0}))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`epochs: 0`") && e.contains("`init_from` is not set"),
            "{e}"
        );
        let e = cfg(serde_json::json!({"epochs": 0, "init_from": "w", "loss": "bce-nu"}))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("soft-d or bce-d, not bce-nu"), "{e}");
    }

    #[test]
    fn unified_bias_start_is_ignored_by_other_losses_but_must_be_finite() {
        cfg(serde_json::json!({"unified_bias_init": 0.0}))
            .validate()
            .unwrap();
        cfg(serde_json::json!({"unified_bias_init": 0.0, "loss": "bce-nu"}))
            .validate()
            .unwrap();
        let mut c = cfg(serde_json::json!({"loss": "bce-u"}));
        c.unified_bias_init = Some(super::super::loss::BiasStart::Value(f64::NAN));
        assert!(c.validate().unwrap_err().to_string().contains("finite"));
    }
}
