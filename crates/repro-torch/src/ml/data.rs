//! Training data in memory: reading a preprocessed dataset directory and cutting it into
//! (optionally augmented) batches.
//!
//! Input contract (written by the `preprocess` stage): `train.safetensors` and
//! `test.safetensors`, each with `images` (u8, [n, H, W] grey or [n, H, W, C]) and `labels`
//! (i64, [n]), plus `classes.json` (list of class names). Images stay u8 in memory; a batch is
//! assembled in Rust (shuffled order, random crop with zero padding, horizontal flip, all drawn
//! from a seeded ChaCha generator so the batch sequence depends on the seed alone), then
//! moved to the device and normalised there.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use safetensors::{Dtype, SafeTensors};
use tch::{Device, Kind, Tensor};

/// One split of a dataset, images u8 NHWC in row-major order.
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<i64>,
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

/// A dataset directory read into memory.
pub struct Dataset {
    pub train: Split,
    pub test: Split,
    pub classes: Vec<String>,
}

impl Split {
    /// The samples whose label is below `k` (`known`) or not.
    fn by_known(&self, k: usize, known: bool) -> Split {
        let per = self.h * self.w * self.c;
        let idx: Vec<usize> = (0..self.n)
            .filter(|&i| ((self.labels[i] as usize) < k) == known)
            .collect();
        let mut images = Vec::with_capacity(idx.len() * per);
        for &i in &idx {
            images.extend_from_slice(&self.images[i * per..(i + 1) * per]);
        }
        Split {
            images,
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            n: idx.len(),
            h: self.h,
            w: self.w,
            c: self.c,
        }
    }

    /// An empty split of the same image shape.
    pub fn empty_like(&self) -> Split {
        Split {
            images: Vec::new(),
            labels: Vec::new(),
            n: 0,
            h: self.h,
            w: self.w,
            c: self.c,
        }
    }
}

impl Dataset {
    /// Open-set study: keep classes 0..k for training and testing, and return the test images
    /// of the other classes (the unknowns, labels as they were).
    pub fn keep_known(&mut self, k: usize) -> Result<Split> {
        if k < 2 || k >= self.classes.len() {
            bail!(
                "known_classes must be 2..{} (the dataset has {} classes), got {k}",
                self.classes.len() - 1,
                self.classes.len()
            );
        }
        let unknown = self.test.by_known(k, false);
        self.train = self.train.by_known(k, true);
        self.test = self.test.by_known(k, true);
        self.classes.truncate(k);
        Ok(unknown)
    }

    /// Read `dir`; keep only the first `limit_train` / `limit_test` samples when given.
    pub fn load(dir: &Path, limit_train: Option<usize>, limit_test: Option<usize>) -> Result<Self> {
        if !dir.join("train.safetensors").exists()
            && dir.join("train").join("index.safetensors").exists()
        {
            bail!(
                "{}: this is a sharded JPEG image set (train/index.safetensors); read it with \
                 `data::loader` (the `train` stage does so), not as an in-memory set",
                dir.display()
            );
        }
        let classes_path = dir.join("classes.json");
        let text = fs::read_to_string(&classes_path).with_context(|| {
            format!(
                "{}: cannot read the class list (the `preprocess` stage writes it)",
                classes_path.display()
            )
        })?;
        let classes: Vec<String> = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: must be a JSON list of class names",
                classes_path.display()
            )
        })?;
        if classes.len() < 2 {
            bail!(
                "{}: {} classes; a classifier needs at least 2",
                classes_path.display(),
                classes.len()
            );
        }
        let train = read_split(&dir.join("train.safetensors"), classes.len(), limit_train)?;
        let test = read_split(&dir.join("test.safetensors"), classes.len(), limit_test)?;
        if (train.h, train.w, train.c) != (test.h, test.w, test.c) {
            bail!(
                "{}: train images are {}×{}×{} but test images are {}×{}×{}; both splits must have one size",
                dir.display(),
                train.h,
                train.w,
                train.c,
                test.h,
                test.w,
                test.c
            );
        }
        Ok(Dataset {
            train,
            test,
            classes,
        })
    }
}

fn read_split(path: &Path, classes: usize, limit: Option<usize>) -> Result<Split> {
    let p = path.display();
    let bytes = fs::read(path)
        .with_context(|| format!("{p}: cannot read (the `preprocess` stage writes it)"))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{p}: not a valid safetensors file"))?;
    let images = st
        .tensor("images")
        .map_err(|_| anyhow::anyhow!("{p}: no tensor `images` (u8 [n, H, W] or [n, H, W, C])"))?;
    let labels = st
        .tensor("labels")
        .map_err(|_| anyhow::anyhow!("{p}: no tensor `labels` (i64 [n])"))?;
    if images.dtype() != Dtype::U8 {
        bail!(
            "{p}: `images` has dtype {:?}; it must be u8",
            images.dtype()
        );
    }
    let (n, h, w, c) = match images.shape() {
        &[n, h, w] => (n, h, w, 1),
        &[n, h, w, c] => (n, h, w, c),
        s => bail!("{p}: `images` has shape {s:?}; it must be [n, H, W] or [n, H, W, C]"),
    };
    if labels.dtype() != Dtype::I64 || labels.shape() != [n] {
        bail!(
            "{p}: `labels` is {:?} {:?}; it must be i64 [{n}] (one per image)",
            labels.dtype(),
            labels.shape()
        );
    }
    let keep = limit.map_or(n, |l| l.min(n));
    if keep == 0 {
        bail!("{p}: no samples (n = {n}, limit = {limit:?})");
    }
    let per = h * w * c;
    let images_out = images.data()[..keep * per].to_vec();
    let labels_out: Vec<i64> = labels.data()[..keep * 8]
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    if let Some((i, y)) = labels_out
        .iter()
        .enumerate()
        .find(|(_, y)| **y < 0 || **y as usize >= classes)
    {
        bail!(
            "{p}: label {y} of sample {i} is outside 0..{classes} (classes.json lists {classes} classes)"
        );
    }
    Ok(Split {
        images: images_out,
        labels: labels_out,
        n: keep,
        h,
        w,
        c,
    })
}

/// Per-channel normalisation applied on the device: `(x/255 − mean) / std`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Normalize {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Normalize {
    /// ImageNet statistics, which the pretrained ImageNet models expect.
    pub fn imagenet() -> Self {
        Normalize {
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        }
    }

    /// Mean and standard deviation of each channel over a split.
    pub fn of(split: &Split) -> Self {
        let c = split.c;
        let mut sum = vec![0f64; c];
        let mut sq = vec![0f64; c];
        for px in split.images.chunks_exact(c) {
            for (k, &v) in px.iter().enumerate() {
                let v = v as f64 / 255.0;
                sum[k] += v;
                sq[k] += v * v;
            }
        }
        let count = (split.images.len() / c) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(q, m)| (q / count - m * m).max(1e-12).sqrt())
            .collect();
        Normalize { mean, std }
    }
}

/// Random crop (zero padding of `pad` pixels each side) and horizontal flip, as torchvision's
/// `RandomCrop(size, padding=pad)` + `RandomHorizontalFlip()`.
#[derive(Clone, Copy, Debug)]
pub struct Augment {
    pub pad: usize,
    pub flip: bool,
}

/// Assembles batches from a split.
pub struct Batcher<'a> {
    split: &'a Split,
    /// Channels the model wants (ImageNet models take 3; grey images are repeated).
    pub model_channels: usize,
    norm: Normalize,
    device: Device,
}

impl<'a> Batcher<'a> {
    pub fn new(split: &'a Split, model_channels: usize, norm: Normalize, device: Device) -> Self {
        Batcher {
            split,
            model_channels,
            norm,
            device,
        }
    }

    /// The sample order of one epoch: a permutation drawn from `rng`.
    pub fn shuffled(&self, rng: &mut ChaCha8Rng) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.split.n).collect();
        idx.shuffle(rng);
        idx
    }

    /// Images [B, C, H, W] (float, normalised, on the device) and labels [B] for `idx`.
    pub fn batch(
        &self,
        idx: &[usize],
        aug: Option<Augment>,
        rng: &mut ChaCha8Rng,
    ) -> (Tensor, Tensor) {
        let s = self.split;
        let (h, w, c) = (s.h, s.w, s.c);
        let per = h * w * c;
        let mut buf = vec![0u8; idx.len() * per];
        for (b, &i) in idx.iter().enumerate() {
            let src = &s.images[i * per..(i + 1) * per];
            let dst = &mut buf[b * per..(b + 1) * per];
            match aug {
                None => dst.copy_from_slice(src),
                Some(a) => {
                    let p = a.pad as i64;
                    let dy = rng.gen_range(-p..=p);
                    let dx = rng.gen_range(-p..=p);
                    let flip = a.flip && rng.gen_bool(0.5);
                    for y in 0..h as i64 {
                        let sy = y + dy;
                        if sy < 0 || sy >= h as i64 {
                            continue; // stays 0 (the padding)
                        }
                        for x in 0..w as i64 {
                            let xo = if flip { w as i64 - 1 - x } else { x };
                            let sx = xo + dx;
                            if sx < 0 || sx >= w as i64 {
                                continue;
                            }
                            let d = (y as usize * w + x as usize) * c;
                            let o = (sy as usize * w + sx as usize) * c;
                            dst[d..d + c].copy_from_slice(&src[o..o + c]);
                        }
                    }
                }
            }
        }
        let labels: Vec<i64> = idx.iter().map(|&i| s.labels[i]).collect();
        let x = Tensor::from_slice(&buf)
            .view([idx.len() as i64, h as i64, w as i64, c as i64])
            .to_device(self.device)
            .permute([0, 3, 1, 2])
            .to_kind(Kind::Float);
        let x = self.normalize(x);
        let x = if self.model_channels != c && c == 1 {
            x.expand([-1, self.model_channels as i64, -1, -1], false)
        } else {
            x
        };
        (
            x.contiguous(),
            Tensor::from_slice(&labels).to_device(self.device),
        )
    }

    fn normalize(&self, x: Tensor) -> Tensor {
        let c = x.size()[1];
        let mean = Tensor::from_slice(&self.norm.mean)
            .to_kind(Kind::Float)
            .to_device(self.device);
        let std = Tensor::from_slice(&self.norm.std)
            .to_kind(Kind::Float)
            .to_device(self.device);
        let (mean, std) = if mean.size()[0] != c {
            // Grey images into an ImageNet model: use the mean of the channel statistics.
            (
                mean.mean(Kind::Float).reshape([1]),
                std.mean(Kind::Float).reshape([1]),
            )
        } else {
            (mean, std)
        };
        (x / 255.0 - mean.view([1, c, 1, 1])) / std.view([1, c, 1, 1])
    }
}
