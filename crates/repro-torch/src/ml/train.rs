//! The training run behind the `train` stage: build a feature extractor and a classifier head
//! for one of the twelve losses, pre-train or fine-tune it with SGD and cosine decay, and write
//! `model.safetensors`, `logits.safetensors` (test split) and `train.json`.
//!
//! Robustness rules: a step whose loss or gradients are not finite is skipped and counted
//! (`on_nonfinite: skip`, as a mixed-precision gradient scaler does) or ends training
//! (`on_nonfinite: stop`); either way the evaluation outputs are still written, with
//! `diverged` recorded. With `grad_scaler: true` the loss is scaled as AMP's gradient scaler
//! does ([`GradScaler`]): a non-finite step is skipped and the scale halved. With a checkpoint directory, the state after each epoch is saved there
//! and a rerun with the same parameters resumes from it ("resuming from epoch K").

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor, nn};

use super::data::{Augment, Batcher, Dataset, Normalize};
use super::io;
use super::loss::{BiasInit, Head};
use super::models::{self, ModelName};
use super::sgd::{Param, Sgd, cosine_lr};
use crate::loader::{Loader, LoaderConfig};

pub use repro::ml_spec::config::{HeadInit, OnNonFinite, TrainConfig};

fn parse_device(s: &str) -> Result<Device> {
    Ok(match s {
        "auto" => Device::cuda_if_available(),
        "cpu" => Device::Cpu,
        "cuda" => {
            if !tch::Cuda::is_available() {
                bail!(
                    "parameter `device: cuda` but CUDA is not available here (run `repro doctor`); use `auto` or `cpu`"
                );
            }
            Device::Cuda(0)
        }
        _ => bail!("parameter `device` must be auto, cpu or cuda, got '{s}'"),
    })
}

/// Everything the run needs besides its config.
pub struct RunEnv {
    /// Base directory for the relative paths of the config (the workspace).
    pub base: PathBuf,
    /// Checkpoint directory for resuming, if any.
    pub checkpoint: Option<Checkpoint>,
    /// CPU threads for libtorch.
    pub threads: usize,
    /// Where progress goes (message, fraction done); the stage kind relays it to the engine.
    pub progress: Progress,
}

/// Receives (message, fraction done) as training goes.
pub type Progress = Box<dyn Fn(&str, Option<f64>)>;

/// A checkpoint directory and the key of the one configuration that may resume from it: the
/// engine's stage key (the stage context's `key`), which covers the parameters, the kind's version and the
/// content of every declared dep (data, starting weights). The engine also clears the
/// directory when the key changes; the key in the checkpoint guards runs outside it.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub key: String,
}

/// One epoch's record in train.json.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochStats {
    pub epoch: usize,
    /// Mean loss over the finite steps of the epoch (null if none).
    pub loss: Option<f64>,
    /// Learning rate at the first and last step of the epoch.
    pub lr_start: f64,
    pub lr_end: f64,
    pub seconds: f64,
    pub images_per_s: f64,
    pub steps: usize,
    pub skipped_steps: usize,
}

/// What is saved after each epoch to resume.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CheckpointMeta {
    /// The stage key that wrote it (older checkpoints called it `fingerprint`).
    #[serde(alias = "fingerprint")]
    key: String,
    epochs_done: usize,
    stats: Vec<EpochStats>,
    stopped: bool,
    /// The loss scaler's state (`grad_scaler: true`).
    #[serde(default)]
    scaler: Option<GradScaler>,
}

/// Summary returned to the caller (also in train.json).
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub diverged: bool,
    pub skipped_steps: usize,
    pub test_accuracy: f64,
    pub resumed_from: Option<usize>,
}

const STATE_FILE: &str = "train-state.safetensors";
const META_FILE: &str = "train-state.json";

/// Run a training as configured; writes the outputs into `cfg.out`.
pub fn run(cfg: &TrainConfig, env: &RunEnv) -> Result<TrainSummary> {
    let (kind, model_name) = cfg.validate()?;
    let device = parse_device(&cfg.device)?;
    tch::set_num_threads(env.threads.max(1) as i32);
    let abs = |p: &Path| env.base.join(p);
    let data_dir = abs(&cfg.data);
    let out_dir = abs(&cfg.out);
    let mut data = Source::open(&data_dir, cfg, env.threads)?;
    let unknown_test = match (cfg.known_classes, &mut data) {
        (None, _) => None,
        (Some(k), Source::Memory(d)) => Some(
            d.keep_known(k)
                .with_context(|| format!("{}", data_dir.display()))?,
        ),
        (Some(_), Source::Sharded { .. }) => {
            bail!("parameter `known_classes` needs an in-memory dataset, not a sharded one")
        }
    };
    let classes = data.classes() as i64;
    let (h, w, c) = data.shape();
    let model_channels = if model_name.is_imagenet() { 3 } else { c };
    if model_name.is_imagenet() && c != 1 && c != 3 {
        bail!(
            "{}: images have {c} channels; {model_name} takes 1 (repeated) or 3",
            data_dir.display()
        );
    }
    let norm = match &data {
        Source::Memory(d) if !model_name.is_imagenet() => Normalize::of(&d.train),
        // ImageNet models expect ImageNet statistics; the sharded loader normalises with them.
        _ => Normalize::imagenet(),
    };

    // Model and head, in a fixed order after seeding, so the initial weights depend on the seed.
    tch::manual_seed(cfg.seed as i64);
    let vs = nn::VarStore::new(device);
    let root = vs.root();
    let backbone = models::build(&root, model_name, model_channels, h, w)?;
    let init = BiasInit {
        mode: cfg.bias_mode,
        unified: cfg
            .unified_bias_init
            .map(|b| b.value(kind, classes as usize)),
    };
    let mut head = Head::new(
        &(&root / "head"),
        backbone.dim,
        classes,
        kind,
        cfg.gamma,
        &init,
    )?;
    head.numerics = cfg.numerics;
    if let Some(src) = &cfg.init_from {
        load_feature_extractor(&vs, &abs(src), model_name)?;
        if cfg.epochs == 0 {
            load_head(&head, &abs(src))?;
        } else if cfg.head_init == HeadInit::Pretrained {
            start_head_from(&head, &abs(src), cfg.bias_mode)?;
        }
    }
    let bias_init = head.bias_values();

    let mut params: Vec<Param> = {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        // The head's bias is a threshold (Corollary 1); decay would pull it towards 0.
        vars.into_iter()
            .map(|(name, tensor)| Param {
                decay: name != "head.bias",
                name,
                tensor,
                momentum: None,
            })
            .collect()
    };
    let n_params: i64 = params.iter().map(|p| p.tensor.numel() as i64).sum();

    // Resume from the checkpoint when it belongs to this very configuration.
    let mut stats: Vec<EpochStats> = Vec::new();
    let mut start_epoch = 0;
    let mut stopped = false;
    let mut resumed_from = None;
    let mut scaler = cfg.grad_scaler.then(GradScaler::new);
    if let Some(Checkpoint { dir, key }) = &env.checkpoint
        && let Some(meta) = read_checkpoint(dir, key)?
    {
        let state = io::read_safetensors(&dir.join(STATE_FILE))?;
        restore(&vs, &mut params, &state, device).with_context(|| {
            format!(
                "{}: checkpoint does not match the model; delete the directory to start over",
                dir.display()
            )
        })?;
        start_epoch = meta.epochs_done;
        stats = meta.stats;
        stopped = meta.stopped;
        if scaler.is_some() {
            scaler = Some(meta.scaler.unwrap_or_default());
        }
        resumed_from = Some(start_epoch);
        println!("resuming from epoch {start_epoch}");
    }
    let mut opt = Sgd::new(params, cfg.momentum, cfg.weight_decay);

    let bs = cfg.batch_size;
    let (n_train, n_test) = data.sizes();
    // The last partial batch is used unless it has a single sample (batch norm cannot train on it).
    let steps_per_epoch = n_train / bs + usize::from(n_train % bs >= 2);
    let total_steps = steps_per_epoch * cfg.epochs;
    let amp = cfg.mixed_precision && device.is_cuda();
    let aug = cfg.augment.then(|| Augment {
        pad: cfg.crop_padding.unwrap_or(h as usize / 8),
        flip: true,
    });
    let train_start = Instant::now();
    let prior_seconds: f64 = stats.iter().map(|s| s.seconds).sum();

    let mut epoch = start_epoch;
    while epoch < cfg.epochs && !stopped {
        let t0 = Instant::now();
        // One stream per epoch: the batch order and augmentation depend on (seed, epoch) only,
        // so a resumed run draws exactly what the uninterrupted one would have.
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        rng.set_stream(epoch as u64 + 1);
        let batches = data.train_batches(
            epoch,
            bs,
            aug,
            model_channels as usize,
            &norm,
            device,
            &mut rng,
        );
        let (mut loss_sum, mut ok_steps, mut skipped, mut images) = (0.0, 0usize, 0usize, 0usize);
        let mut last_report = Instant::now();
        let lr_start = cosine_lr(cfg.lr, epoch * steps_per_epoch, total_steps);
        let mut lr = lr_start;
        for (b, batch) in batches.enumerate() {
            let (x, y) = batch?;
            let bsz = y.size()[0] as usize;
            if bsz < 2 {
                continue;
            }
            let step = epoch * steps_per_epoch + b;
            lr = cosine_lr(cfg.lr, step, total_steps);
            let (finite, loss_value) = train_step(
                &backbone,
                &head,
                &mut opt,
                &x,
                &y,
                lr,
                Precision {
                    autocast: amp,
                    scaler: scaler.as_mut(),
                },
            )?;
            images += bsz;
            if finite {
                loss_sum += loss_value;
                ok_steps += 1;
            } else {
                // Counted as skipped (non-finite) either way; `apply` still takes the step.
                skipped += 1;
                if cfg.on_nonfinite == OnNonFinite::Apply {
                    opt.step(lr);
                }
                if cfg.on_nonfinite == OnNonFinite::Stop {
                    println!(
                        "non-finite loss or gradient at epoch {} step {}: stopping",
                        epoch + 1,
                        b + 1
                    );
                    stopped = true;
                    break;
                }
            }
            if last_report.elapsed().as_secs_f64() >= 1.0 || b + 1 == steps_per_epoch {
                last_report = Instant::now();
                let rate = images as f64 / t0.elapsed().as_secs_f64().max(1e-9);
                let mean = if ok_steps > 0 {
                    loss_sum / ok_steps as f64
                } else {
                    f64::NAN
                };
                let frac = (step + 1) as f64 / total_steps.max(1) as f64;
                (env.progress)(
                    &format!(
                        "epoch {}/{} batch {}/{} loss {:.4} {:.0} img/s{}",
                        epoch + 1,
                        cfg.epochs,
                        b + 1,
                        steps_per_epoch,
                        mean,
                        rate,
                        if skipped > 0 {
                            format!(" skipped {skipped}")
                        } else {
                            String::new()
                        }
                    ),
                    Some(frac),
                );
            }
        }
        let seconds = t0.elapsed().as_secs_f64();
        stats.push(EpochStats {
            epoch: epoch + 1,
            loss: (ok_steps > 0).then(|| loss_sum / ok_steps as f64),
            lr_start,
            lr_end: lr,
            seconds,
            images_per_s: images as f64 / seconds.max(1e-9),
            steps: ok_steps + skipped,
            skipped_steps: skipped,
        });
        epoch += 1;
        if let Some(Checkpoint { dir, key }) = &env.checkpoint {
            save_checkpoint(
                dir,
                &vs,
                &opt,
                &CheckpointMeta {
                    key: key.clone(),
                    epochs_done: epoch,
                    stats: stats.clone(),
                    stopped,
                    scaler: scaler.clone(),
                },
            )?;
        }
    }
    let train_seconds = prior_seconds + train_start.elapsed().as_secs_f64();

    // Evaluation on the test split (always written, also after divergence).
    (env.progress)("evaluating on the test split", None);
    let (logits, logits_nobias, labels) = tch::autocast(amp, || {
        evaluate(
            &backbone,
            &head,
            &data,
            model_channels as usize,
            &norm,
            device,
            cfg.eval_batch_size,
        )
    })?;
    let correct = logits
        .argmax(1, false)
        .eq_tensor(&labels)
        .sum(Kind::Int64)
        .int64_value(&[]);
    // Open-set study: the same model on the test images of the classes it never saw.
    let unknown_samples = match unknown_test {
        None => None,
        Some(u) => {
            let n_unknown = u.n;
            let only = Source::Memory(Dataset {
                train: u.empty_like(),
                test: u,
                classes: Vec::new(),
            });
            let (ul, uln, uy) = evaluate(
                &backbone,
                &head,
                &only,
                model_channels as usize,
                &norm,
                device,
                cfg.eval_batch_size,
            )?;
            io::write_safetensors(
                &out_dir.join("logits_unknown.safetensors"),
                &[
                    ("logits".into(), ul.to_kind(Kind::Float)),
                    ("logits_nobias".into(), uln.to_kind(Kind::Float)),
                    ("labels".into(), uy.to_kind(Kind::Int64)),
                ],
            )?;
            Some(n_unknown)
        }
    };
    let test_accuracy = 100.0 * correct as f64 / n_test as f64;
    let logits_finite = logits.isfinite().all().int64_value(&[]) != 0;
    let bias_final = head.bias_values();

    let skipped_steps: usize = stats.iter().map(|s| s.skipped_steps).sum();
    let last_mostly_skipped = stats.last().is_some_and(|s| s.skipped_steps * 2 > s.steps);
    let diverged = stopped || !logits_finite || last_mostly_skipped;

    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    io::write_safetensors(&out_dir.join("model.safetensors"), &named)?;
    let f32v = |v: &[f32]| Tensor::from_slice(v);
    io::write_safetensors(
        &out_dir.join("logits.safetensors"),
        &[
            ("logits".into(), logits.to_kind(Kind::Float)),
            ("logits_nobias".into(), logits_nobias.to_kind(Kind::Float)),
            ("labels".into(), labels.shallow_clone()),
            ("bias".into(), f32v(&bias_final)),
            ("bias_init".into(), f32v(&bias_init)),
        ],
    )?;
    let device_name = match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    };
    let report = json!({
        "loss": kind.to_string(),
        "model": model_name.to_string(),
        "gamma": cfg.gamma,
        "bias_mode": cfg.bias_mode,
        "head_init": cfg.head_init,
        "unified_bias_init": cfg.unified_bias_init,
        "bias_init": bias_init,
        "bias_final": bias_final,
        "classes": classes,
        "feature_dim": backbone.dim,
        "parameters": n_params,
        "train_samples": n_train,
        "test_samples": n_test,
        "image_size": [h, w, c],
        "normalize": norm,
        "epochs": stats,
        "skipped_steps": skipped_steps,
        "stopped_on_nonfinite": stopped,
        "diverged": diverged,
        "test_accuracy": test_accuracy,
        "seed": cfg.seed,
        "mixed_precision": amp,
        "grad_scaler": scaler.as_ref().map(|s| json!({
            "final_scale": s.scale,
            "backoffs": s.backoffs,
        })),
        "numerics": cfg.numerics,
        "known_classes": cfg.known_classes,
        "unknown_test_samples": unknown_samples,
        "on_nonfinite": cfg.on_nonfinite,
        "device": device_name,
        "threads": env.threads,
        "cpu_model": super::cpu_model(),
        "libtorch": super::libtorch_version(),
        "train_seconds": train_seconds,
        "resumed_from_epoch": resumed_from,
        "params": cfg,
    });
    io::write_json(&out_dir.join("train.json"), &report)?;
    println!(
        "{kind} on {model_name}: test accuracy {test_accuracy:.2}%, {skipped_steps} skipped steps{}, {train_seconds:.1} s",
        if diverged { ", DIVERGED" } else { "" }
    );
    Ok(TrainSummary {
        diverged,
        skipped_steps,
        test_accuracy,
        resumed_from,
    })
}

/// One SGD step on a batch: forward (under autocast when `amp`), loss, backward, and the
/// update if the loss and every gradient are finite. One device sync per step, for that check
/// and the loss value. Returns (finite, loss). Shared by training and `repro-torch bench`.
pub fn train_step(
    backbone: &models::Backbone,
    head: &Head,
    opt: &mut Sgd,
    x: &Tensor,
    y: &Tensor,
    lr: f64,
    precision: Precision<'_>,
) -> Result<(bool, f64)> {
    let Precision {
        autocast: amp,
        scaler,
    } = precision;
    opt.zero_grad();
    let loss = tch::autocast(amp, || {
        let feats = backbone.net.forward_t(x, true);
        head.loss(&feats, y)
    });
    let scale = scaler.as_ref().map(|s| s.scale);
    match scale {
        // The scaled loss goes backward; the gradients are checked while still scaled (an
        // overflow of the scaled gradient is what the scaler reacts to), then unscaled.
        Some(s) => (&loss * s).backward(),
        None => loss.backward(),
    }
    let ok = loss.isfinite().logical_and(&opt.grads_finite());
    let vals = Vec::<f64>::try_from(&Tensor::stack(
        &[
            ok.to_kind(Kind::Double),
            loss.detach().to_kind(Kind::Double),
        ],
        0,
    ))?;
    let finite = vals[0] != 0.0;
    if let Some(sc) = scaler {
        sc.update(finite);
        if finite {
            opt.unscale_grads(1.0 / scale.unwrap_or(1.0));
        }
    }
    if finite {
        opt.step(lr);
    }
    Ok((finite, vals[1]))
}

/// How a training step computes: under CUDA autocast (fp16) or not, with a loss scaler or not.
pub struct Precision<'a> {
    pub autocast: bool,
    pub scaler: Option<&'a mut GradScaler>,
}

/// A dynamic loss scaler as PyTorch AMP's `GradScaler` (its defaults): the loss is multiplied
/// by `scale` before the backward pass so that small fp16 gradients do not flush to zero; a
/// step whose scaled loss or gradient is not finite is skipped and the scale halved; after
/// [`GradScaler::GROWTH_INTERVAL`] finite steps in a row the scale doubles. Scales are powers
/// of two, so scaling and unscaling are exact in fp32 (barring overflow and subnormals).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GradScaler {
    pub scale: f64,
    /// Finite steps since the last change of the scale.
    pub good_steps: usize,
    /// How often the scale was halved (each time a step was skipped).
    pub backoffs: usize,
}

impl Default for GradScaler {
    fn default() -> Self {
        Self::new()
    }
}

impl GradScaler {
    pub const INIT_SCALE: f64 = 65536.0;
    pub const GROWTH_INTERVAL: usize = 2000;

    pub fn new() -> Self {
        GradScaler {
            scale: Self::INIT_SCALE,
            good_steps: 0,
            backoffs: 0,
        }
    }

    /// After a step: ×½ on a non-finite one, ×2 after `GROWTH_INTERVAL` finite ones in a row.
    pub fn update(&mut self, finite: bool) {
        if finite {
            self.good_steps += 1;
            if self.good_steps == Self::GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.good_steps = 0;
            }
        } else {
            self.scale *= 0.5;
            self.good_steps = 0;
            self.backoffs += 1;
        }
    }
}

/// Forward the test split in eval mode: (logits with bias, logits without, labels), on the CPU.
fn evaluate(
    backbone: &models::Backbone,
    head: &Head,
    data: &Source,
    model_channels: usize,
    norm: &Normalize,
    device: Device,
    eval_bs: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    let mut with = Vec::new();
    let mut without = Vec::new();
    let mut labels = Vec::new();
    tch::no_grad(|| -> Result<()> {
        for batch in data.test_batches(eval_bs, model_channels, norm, device) {
            let (x, y) = batch?;
            let feats = backbone.net.forward_t(&x, false);
            let (a, b) = head.metrics(&feats);
            with.push(a.to_device(Device::Cpu));
            without.push(b.to_device(Device::Cpu));
            labels.push(y.to_device(Device::Cpu));
        }
        Ok(())
    })?;
    Ok((
        Tensor::cat(&with, 0),
        Tensor::cat(&without, 0),
        Tensor::cat(&labels, 0),
    ))
}

type Batches<'a> = Box<dyn Iterator<Item = Result<(Tensor, Tensor)>> + 'a>;

/// Where batches come from: a dataset held in memory (u8 safetensors), or a sharded JPEG set
/// decoded by `data::loader` (random resized crop + flip when augmenting, resize + centre crop
/// otherwise, ImageNet normalisation).
enum Source {
    Memory(Dataset),
    Sharded {
        train: Loader,
        test: Loader,
        size: i64,
    },
}

impl Source {
    fn open(dir: &Path, cfg: &TrainConfig, threads: usize) -> Result<Self> {
        if dir.join("train.safetensors").exists()
            || !dir.join("train").join("index.safetensors").exists()
        {
            return Ok(Source::Memory(Dataset::load(
                dir,
                cfg.limit_train,
                cfg.limit_test,
            )?));
        }
        // Training batches are shuffled per (seed, epoch); the test split stays in file order.
        let lc = |augment: bool, shuffle: bool, limit: Option<usize>, bs: usize| LoaderConfig {
            batch_size: bs,
            image_size: cfg.image_size,
            train_augment: augment,
            shuffle: Some(shuffle),
            seed: cfg.seed,
            workers: threads.max(1),
            limit,
            ..LoaderConfig::default()
        };
        let train_cfg = lc(cfg.augment, true, cfg.limit_train, cfg.batch_size);
        let test_cfg = lc(false, false, cfg.limit_test, cfg.eval_batch_size);
        let train = Loader::new(dir, "train", train_cfg)
            .with_context(|| format!("{}: train split", dir.display()))?;
        let test = Loader::new(dir, "test", test_cfg)
            .with_context(|| format!("{}: test split", dir.display()))?;
        if train.classes().len() < 2 {
            bail!(
                "{}: classes.json lists {} classes; a classifier needs at least 2",
                dir.display(),
                train.classes().len()
            );
        }
        Ok(Source::Sharded {
            train,
            test,
            size: cfg.image_size as i64,
        })
    }

    fn classes(&self) -> usize {
        match self {
            Source::Memory(d) => d.classes.len(),
            Source::Sharded { train, .. } => train.classes().len(),
        }
    }

    /// (H, W, C) of the images the model sees.
    fn shape(&self) -> (i64, i64, i64) {
        match self {
            Source::Memory(d) => (d.train.h as i64, d.train.w as i64, d.train.c as i64),
            Source::Sharded { size, .. } => (*size, *size, 3),
        }
    }

    /// Samples per epoch: (train, test).
    fn sizes(&self) -> (usize, usize) {
        match self {
            Source::Memory(d) => (d.train.n, d.test.n),
            Source::Sharded { train, test, .. } => (train.len(), test.len()),
        }
    }

    /// The training batches of `epoch`, on `device`.
    #[allow(clippy::too_many_arguments)]
    fn train_batches<'a>(
        &'a self,
        epoch: usize,
        bs: usize,
        aug: Option<Augment>,
        model_channels: usize,
        norm: &Normalize,
        device: Device,
        rng: &'a mut ChaCha8Rng,
    ) -> Batches<'a> {
        match self {
            Source::Memory(d) => {
                let batcher = Batcher::new(&d.train, model_channels, norm.clone(), device);
                let order = batcher.shuffled(rng);
                let chunks: Vec<Vec<usize>> = order.chunks(bs).map(|c| c.to_vec()).collect();
                Box::new(
                    chunks
                        .into_iter()
                        .map(move |c| Ok(batcher.batch(&c, aug, rng))),
                )
            }
            Source::Sharded { train, .. } => Box::new(
                train
                    .epoch(epoch as u64)
                    .map(move |r| r.map(|(x, y)| (x.to_device(device), y.to_device(device)))),
            ),
        }
    }

    /// The test batches, in file order, on `device`.
    fn test_batches<'a>(
        &'a self,
        bs: usize,
        model_channels: usize,
        norm: &Normalize,
        device: Device,
    ) -> Batches<'a> {
        match self {
            Source::Memory(d) => {
                let batcher = Batcher::new(&d.test, model_channels, norm.clone(), device);
                let idx: Vec<usize> = (0..d.test.n).collect();
                let chunks: Vec<Vec<usize>> = idx.chunks(bs).map(|c| c.to_vec()).collect();
                let mut rng = ChaCha8Rng::seed_from_u64(0); // unused without augmentation
                Box::new(
                    chunks
                        .into_iter()
                        .map(move |c| Ok(batcher.batch(&c, None, &mut rng))),
                )
            }
            Source::Sharded { test, .. } => Box::new(
                test.epoch(0)
                    .map(move |r| r.map(|(x, y)| (x.to_device(device), y.to_device(device)))),
            ),
        }
    }
}

/// Load the feature extractor's variables from `path` (everything but `head.*`); a
/// torchvision file's own classifier (`fc.*`, `classifier.*`) is simply not used.
fn load_feature_extractor(vs: &nn::VarStore, path: &Path, model: ModelName) -> Result<()> {
    let file = io::read_safetensors(path)
        .with_context(|| format!("parameter `init_from` ({})", path.display()))?;
    let mut missing = Vec::new();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, mut var) in vars {
        if name.starts_with("head.") {
            continue;
        }
        match file.get(&name) {
            None => missing.push(name),
            Some(src) => {
                if src.size() != var.size() {
                    bail!(
                        "{}: `{name}` has shape {:?} but {model} needs {:?}; is this a {model} checkpoint for images with the same channels?",
                        path.display(),
                        src.size(),
                        var.size()
                    );
                }
                tch::no_grad(|| var.copy_(&src.to_kind(var.kind())));
            }
        }
    }
    if !missing.is_empty() {
        let shown: Vec<_> = missing.iter().take(5).cloned().collect();
        bail!(
            "{}: not a {model} feature extractor: {} of its variables are missing (e.g. {}); the file must use torchvision's variable names",
            path.display(),
            missing.len(),
            shown.join(", ")
        );
    }
    Ok(())
}

/// The classifier of the `init_from` file (`head.weight`, `head.bias`: a torchvision model's
/// own ImageNet classifier after `repro weights import`), for evaluating a model as it is.
/// `head_init: pretrained`: the fine-tune's head starts from the pre-trained classifier of
/// `path` — its weight rows (unit length for the normalized classifier, whose metric is
/// γ·cos and so ignores the rows' norms; normalising keeps their update scale like a new
/// head's), and its per-class bias for the diverse-bias losses at bias_mode 0. A unified bias
/// keeps its start (`unified_bias_init`): the pre-trained classifier has none.
pub fn start_head_from(head: &Head, path: &Path, bias_mode: u8) -> Result<()> {
    let file = io::read_safetensors(path)?;
    let w = file.get("head.weight").with_context(|| {
        format!(
            "{}: `head_init: pretrained` needs the model's classifier, but the file has no `head.weight`",
            path.display()
        )
    })?;
    if w.size() != head.weight.size() {
        bail!(
            "{}: `head.weight` has shape {:?} but this head needs {:?}: `head_init: pretrained` only fits the classes of the pre-training (the FGVC sets keep `head_init: new`)",
            path.display(),
            w.size(),
            head.weight.size()
        );
    }
    let w = w.to_kind(Kind::Float);
    let w = if head.kind.classifier == repro::ml_spec::loss::Classifier::Normalized {
        let n = w
            .norm_scalaropt_dim(2, [1].as_slice(), true)
            .clamp_min(1e-12);
        &w / n
    } else {
        w
    };
    let mut v = head.weight.shallow_clone();
    tch::no_grad(|| v.copy_(&w.to_kind(v.kind()).to_device(v.device())));
    if let (Some(b), Some(src)) = (head.bias.as_ref(), file.get("head.bias"))
        && b.size() == src.size()
        && head.kind.bias == repro::ml_spec::loss::BiasMode::Diverse
        && bias_mode == 0
    {
        let mut b = b.shallow_clone();
        tch::no_grad(|| b.copy_(&src.to_kind(b.kind()).to_device(b.device())));
    }
    Ok(())
}

fn load_head(head: &Head, path: &Path) -> Result<()> {
    let file = io::read_safetensors(path)?;
    let classes = head.weight.size()[0];
    for (name, var) in [
        ("head.weight", Some(&head.weight)),
        ("head.bias", head.bias.as_ref()),
    ] {
        let Some(var) = var else { continue };
        let src = file.get(name).with_context(|| {
            format!(
                "{}: `epochs: 0` evaluates the model with its own classifier, but the file has no `{name}`",
                path.display()
            )
        })?;
        if src.size() != var.size() {
            bail!(
                "{}: `{name}` has shape {:?} but this dataset needs {:?} ({classes} classes): the model's own \
                 classifier only fits the dataset it was trained on",
                path.display(),
                src.size(),
                var.size()
            );
        }
        let mut v = var.shallow_clone();
        tch::no_grad(|| v.copy_(&src.to_kind(v.kind()).to_device(v.device())));
    }
    Ok(())
}

fn read_checkpoint(dir: &Path, key: &str) -> Result<Option<CheckpointMeta>> {
    let meta_path = dir.join(META_FILE);
    let Ok(text) = std::fs::read_to_string(&meta_path) else {
        return Ok(None);
    };
    let Ok(meta) = serde_json::from_str::<CheckpointMeta>(&text) else {
        println!("ignoring unreadable checkpoint {}", meta_path.display());
        return Ok(None);
    };
    if meta.key != key {
        println!(
            "ignoring checkpoint in {} (made with other parameters or data)",
            dir.display()
        );
        return Ok(None);
    }
    if !dir.join(STATE_FILE).exists() {
        return Ok(None);
    }
    Ok(Some(meta))
}

fn save_checkpoint(dir: &Path, vs: &nn::VarStore, opt: &Sgd, meta: &CheckpointMeta) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    for p in &opt.params {
        if let Some(m) = &p.momentum {
            named.push((format!("momentum:{}", p.name), m.shallow_clone()));
        }
    }
    // Metadata removed first and rewritten last: a crash in between leaves no metadata, so
    // the next run starts afresh instead of pairing a new state with an old epoch count.
    let meta_path = dir.join(META_FILE);
    let _ = std::fs::remove_file(&meta_path);
    io::write_safetensors(&dir.join(STATE_FILE), &named)?;
    io::write_json(&meta_path, &serde_json::to_value(meta)?)
}

fn restore(
    vs: &nn::VarStore,
    params: &mut [Param],
    state: &std::collections::HashMap<String, Tensor>,
    device: Device,
) -> Result<()> {
    for (name, mut var) in vs.variables() {
        let src = state
            .get(&name)
            .with_context(|| format!("variable `{name}` missing"))?;
        tch::no_grad(|| var.f_copy_(src))?;
    }
    for p in params {
        p.momentum = state
            .get(&format!("momentum:{}", p.name))
            .map(|m| m.to_device(device));
    }
    Ok(())
}
