//! The training data loader over a preprocessed image set (see [`repro::data::shards`]).
//!
//! ```ignore
//! use repro::data::loader::{Loader, LoaderConfig};
//! let cfg = LoaderConfig { batch_size: 64, image_size: 224, train_augment: true, seed: 0,
//!                          workers: 2, ..LoaderConfig::default() };
//! let train = Loader::new("data/cub".as_ref(), "train", cfg)?;
//! for epoch in 0..epochs {
//!     for batch in train.epoch(epoch) {
//!         let (images, labels) = batch?; // f32 [B, 3, S, S] normalised, i64 [B]
//!     }
//! }
//! ```
//!
//! - Order: a permutation of the split drawn from (`seed`, epoch) when `shuffle` (default: same
//!   as `train_augment`), else file order. Each sample's augmentation is drawn from its own RNG
//!   seeded by (`seed`, epoch, position), so batches are identical whatever `workers` is.
//! - Work: `workers` threads each decode and augment whole batches; up to `prefetch` finished
//!   batches wait while the model trains. Batches are yielded in order.
//! - Transforms: [`repro::data::augment`] (random resized crop + flip for training; resize to
//!   `resize_size` and centre crop for testing; ImageNet mean/std normalisation).
//! - `limit` caps the samples per epoch (first `limit` of the permutation); `drop_last` drops a
//!   final partial batch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use anyhow::{Context, Result, anyhow};
use crossbeam_channel::{Receiver, bounded};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

use repro::data::augment;
use repro::data::shards::ShardSet;

/// Loader settings.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Output side in pixels (e.g. 224).
    pub image_size: u32,
    /// Short side before the centre crop when testing (default: `image_size` · 256 / 224).
    pub resize_size: Option<u32>,
    /// Random resized crop + flip (training) instead of resize + centre crop.
    pub train_augment: bool,
    /// Shuffle per epoch (default: `train_augment`).
    pub shuffle: Option<bool>,
    pub seed: u64,
    /// Decoding threads.
    pub workers: usize,
    /// Finished batches kept ready ahead of the consumer.
    pub prefetch: usize,
    /// Use at most this many samples per epoch.
    pub limit: Option<usize>,
    pub drop_last: bool,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 64,
            image_size: 224,
            resize_size: None,
            train_augment: false,
            shuffle: None,
            seed: 0,
            workers: 2,
            prefetch: 4,
            limit: None,
            drop_last: false,
        }
    }
}

/// A split of a preprocessed image set, ready to iterate by epoch.
pub struct Loader {
    set: Arc<ShardSet>,
    cfg: LoaderConfig,
    dir: PathBuf,
    classes: Vec<String>,
}

/// One batch as plain buffers (what the workers produce).
pub struct RawBatch {
    /// CHW images back to back, normalised.
    pub images: Vec<f32>,
    pub labels: Vec<i64>,
}

impl Loader {
    /// Open `<dir>/<split>` of a preprocessed image set.
    pub fn new(dir: &Path, split: &str, cfg: LoaderConfig) -> Result<Self> {
        if cfg.batch_size == 0 || cfg.image_size == 0 {
            return Err(anyhow!(
                "loader: batch_size and image_size must be positive"
            ));
        }
        let set = ShardSet::open(dir, split)?;
        let cpath = dir.join("classes.json");
        let classes: Vec<String> = serde_json::from_slice(
            &std::fs::read(&cpath).with_context(|| format!("reading {}", cpath.display()))?,
        )
        .with_context(|| format!("{} is not a JSON list of names", cpath.display()))?;
        Ok(Self {
            set: Arc::new(set),
            cfg,
            dir: dir.to_path_buf(),
            classes,
        })
    }

    /// Class names (label i is `classes()[i]`).
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Samples per epoch (after `limit`).
    pub fn len(&self) -> usize {
        self.cfg
            .limit
            .map_or(self.set.len(), |l| l.min(self.set.len()))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Batches per epoch.
    pub fn batches(&self) -> usize {
        let (n, b) = (self.len(), self.cfg.batch_size);
        if self.cfg.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The sample order of `epoch`.
    fn order(&self, epoch: u64) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.set.len()).collect();
        if self.cfg.shuffle.unwrap_or(self.cfg.train_augment) {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(self.cfg.seed, epoch, u64::MAX));
            idx.shuffle(&mut rng);
        }
        idx.truncate(self.len());
        idx
    }

    /// Iterate the batches of one epoch as tch tensors (CPU): images f32 [B, 3, S, S],
    /// labels i64 [B].
    pub fn epoch(&self, epoch: u64) -> EpochIter {
        let s = self.cfg.image_size as i64;
        EpochIter {
            raw: self.epoch_raw(epoch),
            size: s,
        }
    }

    /// Iterate one epoch as plain buffers (used by `epoch`, and by benchmarks that want no
    /// tensor conversion).
    pub fn epoch_raw(&self, epoch: u64) -> RawIter {
        let order = Arc::new(self.order(epoch));
        let nb = self.batches();
        let (tx, rx) = bounded::<(usize, Result<RawBatch>)>(self.cfg.prefetch.max(1));
        let next = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let workers = self.cfg.workers.max(1).min(nb.max(1));
        let handles = (0..workers)
            .map(|_| {
                let (tx, next, stop, order) =
                    (tx.clone(), next.clone(), stop.clone(), order.clone());
                let (set, cfg, dir) = (self.set.clone(), self.cfg.clone(), self.dir.clone());
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    loop {
                        let b = next.fetch_add(1, Ordering::Relaxed);
                        if b >= nb || stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let lo = b * cfg.batch_size;
                        let hi = (lo + cfg.batch_size).min(order.len());
                        let r = make_batch(&set, &cfg, epoch, &order[lo..hi], lo, &mut buf)
                            .with_context(|| format!("loading a batch from {}", dir.display()));
                        if tx.send((b, r)).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        RawIter {
            rx,
            pending: BTreeMap::new(),
            next: 0,
            total: nb,
            stop,
            handles,
        }
    }
}

/// Mix seed, epoch and position into one RNG seed (splitmix64 steps).
fn mix(seed: u64, epoch: u64, pos: u64) -> u64 {
    let mut z =
        seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ pos.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn make_batch(
    set: &ShardSet,
    cfg: &LoaderConfig,
    epoch: u64,
    samples: &[usize],
    first_pos: usize,
    buf: &mut Vec<u8>,
) -> Result<RawBatch> {
    let s = cfg.image_size as usize;
    let per = 3 * s * s;
    let mut images = vec![0f32; per * samples.len()];
    let mut labels = Vec::with_capacity(samples.len());
    let resize = cfg
        .resize_size
        .unwrap_or((cfg.image_size * 256).div_ceil(224));
    for (k, &i) in samples.iter().enumerate() {
        set.read(i, buf)?;
        let img = augment::decode(buf).with_context(|| format!("sample {i}"))?;
        let (w, h) = img.dimensions();
        let dst = &mut images[k * per..(k + 1) * per];
        if cfg.train_augment {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(cfg.seed, epoch, (first_pos + k) as u64));
            let bx = augment::random_resized_crop(w, h, &mut rng);
            let flip = rand::Rng::gen_bool(&mut rng, 0.5);
            augment::resample_into(&img, bx, s, s, flip, dst);
        } else {
            augment::resample_into(
                &img,
                augment::center_crop(w, h, resize, cfg.image_size),
                s,
                s,
                false,
                dst,
            );
        }
        labels.push(set.labels[i]);
    }
    Ok(RawBatch { images, labels })
}

/// Batches of one epoch as buffers, in order.
pub struct RawIter {
    rx: Receiver<(usize, Result<RawBatch>)>,
    pending: BTreeMap<usize, Result<RawBatch>>,
    next: usize,
    total: usize,
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl Iterator for RawIter {
    type Item = Result<RawBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.total {
            return None;
        }
        loop {
            if let Some(b) = self.pending.remove(&self.next) {
                self.next += 1;
                return Some(b);
            }
            match self.rx.recv() {
                Ok((i, b)) => {
                    self.pending.insert(i, b);
                }
                Err(_) => {
                    self.next = self.total;
                    return Some(Err(anyhow!("loader workers stopped unexpectedly")));
                }
            }
        }
    }
}

impl Drop for RawIter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblock workers waiting to send, then wait for them.
        while self.rx.try_recv().is_ok() {}
        let rx = std::mem::replace(&mut self.rx, crossbeam_channel::never());
        drop(rx);
        for h in self.handles.drain(..) {
            h.join().ok();
        }
    }
}

/// Batches of one epoch as tensors.
pub struct EpochIter {
    raw: RawIter,
    size: i64,
}

impl Iterator for EpochIter {
    type Item = Result<(Tensor, Tensor)>;

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.raw.next()?;
        Some(b.map(|b| {
            let n = b.labels.len() as i64;
            let images = Tensor::from_slice(&b.images).view([n, 3, self.size, self.size]);
            (images, Tensor::from_slice(&b.labels))
        }))
    }
}
