//! The `train` stage kind: pre-train or fine-tune a feature extractor and classifier head under
//! one of the twelve losses, and write `model.safetensors`, `logits.safetensors` (the input of
//! `evaluate`) and `train.json` into the `out` directory.
//!
//! Parameters are [`crate::ml_spec::config::TrainConfig`] (unknown fields rejected), checked
//! here before anything runs. The training itself needs libtorch and runs in the
//! `repro-torch` binary (`repro_torch::train_kind`), to which `repro internal run-kind` hands
//! the stage. A non-finite loss is never a stage failure: it is recorded in `train.json`.

use std::path::PathBuf;

use anyhow::Result;
use repro_engine::kinds::{Kind, param_error};

use crate::ml_spec::config::{InvalidParam, TrainConfig};

/// The kind as the engine sees it: its parameters, version and outputs. Its body is
/// `repro_torch::train_kind`, registered where it runs (`crate::kinds::registry`).
pub struct Train;

/// Part of the stage key: bump when a change to training could change its outputs — any byte
/// of them, train.json's fields included (2: train.json records `cpu_model` and the gradient
/// scaler; `repro verify` found version-1 trainings "fresh" whose rerun wrote those fields).
pub const TRAIN_VERSION: u32 = 2;

impl Kind for Train {
    type Params = TrainConfig;

    fn name(&self) -> &'static str {
        "train"
    }

    fn version(&self) -> u32 {
        TRAIN_VERSION
    }

    fn written_paths(&self, cfg: &TrainConfig) -> Vec<(&'static str, PathBuf)> {
        // The files `repro-torch` writes into `out` (crates/repro-torch/src/ml/train.rs).
        let mut files = vec!["model.safetensors", "logits.safetensors", "train.json"];
        // The open-set study also scores the held-out classes' test images.
        if cfg.known_classes.is_some() {
            files.push("logits_unknown.safetensors");
        }
        files.iter().map(|f| ("out", cfg.out.join(f))).collect()
    }

    /// `train.json`'s wall times and rates vary between identical seeded runs; `repro verify`
    /// ignores them. Everything else in it (the loss per epoch, accuracy, biases, device,
    /// threads, CPU model, libtorch version) is part of what makes the result, and compared.
    fn volatile(&self, cfg: &TrainConfig) -> Vec<(String, Vec<String>)> {
        let file = cfg.out.join("train.json").to_string_lossy().into_owned();
        let file = file.trim_start_matches("./").to_string();
        let fields = ["train_seconds", "epochs.*.seconds", "epochs.*.images_per_s"];
        vec![(file, fields.iter().map(|f| f.to_string()).collect())]
    }

    fn check(&self, cfg: &TrainConfig) -> Result<()> {
        cfg.validate().map(|_| ()).map_err(|e| {
            // The science's typed parameter, as the engine's: the error points at its line.
            match e.downcast_ref::<InvalidParam>() {
                Some(p) => param_error(p.param, format!("{e:#}")).into(),
                None => e,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `check` hands `validate`'s parameter on to the engine by type, with its message whole.
    #[test]
    fn check_names_the_parameter_for_the_engine() {
        let cfg = |extra: serde_json::Value| -> TrainConfig {
            let mut v = serde_json::json!({"data": "d", "out": "o", "loss": "soft-d"});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            serde_json::from_value(v).unwrap()
        };
        let e = Train
            .check(&cfg(serde_json::json!({"lr": 0.0})))
            .unwrap_err();
        let p = repro_engine::kinds::ParamError::find(&e).expect("typed");
        assert_eq!(
            (p.param.as_str(), format!("{e:#}").as_str()),
            ("lr", "parameter `lr` must be a positive number, got 0")
        );
        let e = Train
            .check(&cfg(serde_json::json!({"model": "vgg"})))
            .unwrap_err();
        let p = repro_engine::kinds::ParamError::find(&e).expect("typed");
        assert_eq!(p.param, "model");
        assert!(format!("{e:#}").starts_with("parameter `model`: "), "{e:#}");
        Train.check(&cfg(serde_json::json!({}))).unwrap();
    }

    /// What `repro verify` ignores in a training's outputs: its wall times and rates in
    /// `train.json`, and nothing that makes the result (the CPU model, accuracy, losses).
    #[test]
    fn train_declares_its_wall_times_and_rates_volatile() {
        let cfg: TrainConfig = serde_json::from_value(serde_json::json!({
            "data": "data/fashion-mnist",
            "model": "mlp",
            "loss": "soft-0",
            "out": "runs/x/seed0",
        }))
        .expect("a minimal train config");
        let v = Train.volatile(&cfg);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].0, "runs/x/seed0/train.json");
        assert_eq!(
            v[0].1,
            ["train_seconds", "epochs.*.seconds", "epochs.*.images_per_s"]
        );
        for kept in [
            "cpu_model",
            "test_accuracy",
            "epochs.*.loss",
            "libtorch",
            "threads",
        ] {
            assert!(!v[0].1.iter().any(|f| f == kept), "{kept} must be compared");
        }
    }
}
