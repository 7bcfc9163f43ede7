//! `repro-torch bench-train`: training throughput of one of the paper's models on synthetic
//! data, with the very step the `train` stage runs ([`crate::ml::train::train_step`]: forward,
//! loss, backward, finiteness check, SGD update). `scripts/gpu-check.sh` runs it next to the
//! same model in PyTorch eager (`scripts/bench_gpu.py`) and prints the ratio.
//!
//! Usage: `repro-torch bench-train [--model resnet50] [--batch 64] [--size 224] [--steps 30]
//! [--warmup 5] [--classes 1000] [--amp] [--device cuda|cpu]`; prints one JSON object.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use tch::{Device, Kind, Tensor, nn};

use crate::ml::loss::{BiasInit, Head, LossKind};
use crate::ml::models::{self, ModelName};
use crate::ml::sgd::{Param, Sgd};
use crate::ml::train::{Precision, train_step};

pub fn run(args: &[String]) -> Result<i32> {
    let mut model = "resnet50".to_string();
    let (mut batch, mut size, mut steps, mut warmup, mut classes) =
        (64i64, 224i64, 30usize, 5usize, 1000i64);
    let mut amp = false;
    let mut device = if tch::Cuda::is_available() {
        "cuda".to_string()
    } else {
        "cpu".to_string()
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--model" => model = val()?,
            "--batch" => batch = val()?.parse()?,
            "--size" => size = val()?.parse()?,
            "--steps" => steps = val()?.parse()?,
            "--warmup" => warmup = val()?.parse()?,
            "--classes" => classes = val()?.parse()?,
            "--device" => device = val()?,
            "--amp" => amp = true,
            other => bail!("bench-train: unknown option {other}"),
        }
    }
    let dev = match device.as_str() {
        "cuda" => Device::Cuda(0),
        "cpu" => Device::Cpu,
        other => bail!("--device must be cuda or cpu, got {other}"),
    };
    let name: ModelName = model.parse()?;
    tch::manual_seed(0);
    let vs = nn::VarStore::new(dev);
    let root = vs.root();
    let backbone = models::build(&root, name, 3, size, size)?;
    let kind: LossKind = "soft-d".parse()?;
    let head = Head::new(
        &(&root / "head"),
        backbone.dim,
        classes,
        kind,
        96.0,
        &BiasInit::default(),
    )?;
    let params: Vec<Param> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(name, tensor)| Param {
            decay: name != "head.bias",
            name,
            tensor,
            momentum: None,
        })
        .collect();
    let mut opt = Sgd::new(params, 0.9, 5e-4);
    // One fixed batch on the device: this measures the model step, not the data path.
    let x = Tensor::randn([batch, 3, size, size], (Kind::Float, dev));
    let y = Tensor::randint(classes, [batch], (Kind::Int64, dev));
    let amp = amp && dev.is_cuda();
    // The same step for the warm-up and the timed loop.
    let mut step = || {
        let precision = Precision {
            autocast: amp,
            scaler: None,
        };
        train_step(&backbone, &head, &mut opt, &x, &y, 1e-3, precision)
    };
    for _ in 0..warmup {
        step()?;
    }
    if dev.is_cuda() {
        tch::Cuda::synchronize(0);
    }
    let t0 = Instant::now();
    let mut skipped = 0;
    for _ in 0..steps {
        let (finite, _) = step()?;
        skipped += usize::from(!finite);
    }
    if dev.is_cuda() {
        tch::Cuda::synchronize(0);
    }
    let secs = t0.elapsed().as_secs_f64();
    let out = serde_json::json!({
        "impl": "repro-torch",
        "model": model,
        "batch": batch,
        "size": size,
        "steps": steps,
        "amp": amp,
        "device": device,
        "seconds": secs,
        "skipped_steps": skipped,
        "images_per_s": (steps as f64 * batch as f64) / secs,
    });
    println!("{out}");
    Ok(0)
}
