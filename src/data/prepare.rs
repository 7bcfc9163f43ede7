//! Turning a downloaded dataset into its training-ready form, checked against the recipe's
//! split sizes (Table IV of the paper): Fashion-MNIST's idx files become `train.safetensors`
//! and `test.safetensors` (`images` u8 [n, H, W], `labels` i64 [n]); image sets are decoded,
//! resized on the short side, re-encoded as JPEG and appended to shards (see [`super::shards`]).
//! Both also write `classes.json` and `meta.json`. The result appears at `out` only when
//! complete ([`super::atomic::StagedDir`]). Progress goes to a callback.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::atomic::StagedDir;
use super::augment;
use super::layouts::{self, find_file};
use super::recipe::{Counts, Layout, Recipe};
use super::shards::ShardWriter;
use super::{idx, imagenet};

/// Where progress goes: a message and, when known, the fraction done.
pub type Progress<'a> = &'a dyn Fn(&str, Option<f64>);

/// How image sets are re-encoded, and with how many threads.
pub struct Encoding {
    /// Pixels of the shorter side after resizing.
    pub short_side: u32,
    /// JPEG quality, 1..=100.
    pub quality: u8,
    /// Shard size in MiB.
    pub shard_mb: u64,
    pub threads: usize,
}

/// Prepare `recipe`'s dataset from the downloaded `input` directory into `out`.
pub fn prepare(
    recipe: &Recipe,
    input: &Path,
    out: &Path,
    encoding: &Encoding,
    progress: Progress,
) -> Result<()> {
    let staged = StagedDir::new(out)?;
    let (classes, counts, extra) = match recipe.layout {
        Layout::Idx => idx_set(recipe, input, staged.path())?,
        _ => image_set(recipe, input, staged.path(), encoding, progress)?,
    };
    recipe.check_counts(&counts)?;
    let meta = serde_json::json!({
        "name": recipe.name,
        "layout": recipe.layout,
        "classes": classes.len(),
        "counts": counts.iter().map(|(s, per)| (s.clone(), serde_json::json!({
            "total": per.iter().sum::<usize>(),
            "per_class": per,
        }))).collect::<serde_json::Map<_, _>>(),
        "format": extra,
    });
    std::fs::write(
        staged.path().join("classes.json"),
        serde_json::to_vec_pretty(&classes)?,
    )?;
    std::fs::write(
        staged.path().join("meta.json"),
        serde_json::to_vec_pretty(&meta)?,
    )?;
    staged.promote()
}

fn idx_set(
    recipe: &Recipe,
    input: &Path,
    out: &Path,
) -> Result<(Vec<String>, Counts, serde_json::Value)> {
    let names = recipe
        .class_names
        .clone()
        .unwrap_or_else(|| (0..recipe.classes).map(|c| format!("class_{c}")).collect());
    let splits = [("train", "train"), ("test", "t10k")];
    // (split, images per class, image dims) of each split, read in parallel.
    type SplitResult = Result<(String, Vec<usize>, Vec<usize>)>;
    let results: Vec<SplitResult> = std::thread::scope(|s| {
        let handles: Vec<_> = splits
            .iter()
            .map(|(split, prefix)| {
                s.spawn(move || -> SplitResult {
                    let ipath = find_idx(input, &format!("{prefix}-images-idx3-ubyte"))?;
                    let lpath = find_idx(input, &format!("{prefix}-labels-idx1-ubyte"))?;
                    let images = idx::read_u8(&ipath)?;
                    let labels = idx::read_u8(&lpath)?;
                    if images.dims.len() != 3 || labels.dims.len() != 1 || images.dims[0] != labels.dims[0] {
                        bail!(
                            "{} ({:?}) and {} ({:?}) do not match as images [n, H, W] and labels [n]",
                            ipath.display(), images.dims, lpath.display(), labels.dims
                        );
                    }
                    let mut per = vec![0usize; recipe.classes];
                    let mut lab = Vec::with_capacity(labels.data.len());
                    for &l in &labels.data {
                        let l = l as usize;
                        if l >= recipe.classes {
                            bail!("{}: label {l} outside 0..{}", lpath.display(), recipe.classes);
                        }
                        per[l] += 1;
                        lab.push(l as i64);
                    }
                    let bytes = idx::to_safetensors(&images, &lab)?;
                    std::fs::write(out.join(format!("{split}.safetensors")), bytes)?;
                    Ok((split.to_string(), per, images.dims.clone()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("idx worker panicked"))
            .collect()
    });
    let mut counts = Counts::new();
    let mut shape = Vec::new();
    for r in results {
        let (split, per, dims) = r?;
        shape = dims[1..].to_vec();
        counts.insert(split, per);
    }
    Ok((
        names,
        counts,
        serde_json::json!({"kind": "safetensors", "image_shape": shape}),
    ))
}

fn find_idx(dir: &Path, stem: &str) -> Result<PathBuf> {
    find_file(dir, &format!("{stem}.gz")).or_else(|_| find_file(dir, stem))
}

fn image_set(
    recipe: &Recipe,
    input: &Path,
    out: &Path,
    p: &Encoding,
    progress: Progress,
) -> Result<(Vec<String>, Counts, serde_json::Value)> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(p.threads.max(1))
        .build()?;
    let extra = serde_json::json!({
        "kind": "jpeg-shards", "short_side": p.short_side, "quality": p.quality,
    });
    if recipe.layout == Layout::Imagenet {
        let devkit = imagenet::read_devkit(&find_file(input, "ILSVRC2012_devkit_t12.tar.gz")?)?;
        let total = recipe.splits.values().sum();
        let mut counts = Counts::new();
        let mut done = 0;
        for (split, file) in [
            ("train", "ILSVRC2012_img_train.tar"),
            ("test", "ILSVRC2012_img_val.tar"),
        ] {
            let archive = find_file(input, file)?;
            let mut enc = SplitEncoder::new(
                out,
                split,
                devkit.wnids.len(),
                (p, progress),
                &pool,
                (total, done),
            )?;
            let mut push = |name: String, label: usize, bytes: Vec<u8>| {
                enc.push(Pending {
                    label,
                    name,
                    payload: Payload::Bytes(bytes),
                })
            };
            if split == "train" {
                imagenet::for_each_train(&archive, &devkit, &mut push)?;
            } else {
                imagenet::for_each_val(&archive, &devkit, &mut push)?;
            }
            done = enc.done;
            counts.insert(split.to_string(), enc.finish()?);
        }
        let classes = devkit
            .wnids
            .iter()
            .zip(&devkit.names)
            .map(|(w, n)| format!("{w} {n}"))
            .collect();
        return Ok((classes, counts, extra));
    }

    let listing = layouts::list(recipe, input)?;
    let mut counts = Counts::new();
    for (split, items) in &listing.splits {
        let mut per = vec![0usize; listing.classes.len()];
        items.iter().for_each(|it| per[it.label] += 1);
        counts.insert(split.clone(), per);
    }
    // Fail before hours of decoding when the archive does not match the recipe.
    recipe.check_counts(&counts)?;
    let total: usize = listing.splits.iter().map(|(_, v)| v.len()).sum();
    let mut done = 0;
    for (split, items) in &listing.splits {
        let mut enc = SplitEncoder::new(
            out,
            split,
            listing.classes.len(),
            (p, progress),
            &pool,
            (total, done),
        )?;
        for it in items {
            let name = it.file.display().to_string();
            enc.push(Pending {
                label: it.label,
                name,
                payload: Payload::File(it.file.clone()),
            })?;
        }
        done = enc.done;
        enc.finish()?;
    }
    Ok((listing.classes, counts, extra))
}

enum Payload {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// One image waiting to be re-encoded.
struct Pending {
    label: usize,
    /// For messages.
    name: String,
    payload: Payload,
}

/// Re-encodes one split in parallel chunks and appends them, in order, to its shards.
struct SplitEncoder<'a> {
    split: String,
    writer: ShardWriter,
    buf: Vec<Pending>,
    per_class: Vec<usize>,
    pool: &'a rayon::ThreadPool,
    progress: Progress<'a>,
    short: u32,
    quality: u8,
    total: usize,
    done: usize,
    t0: std::time::Instant,
}

impl<'a> SplitEncoder<'a> {
    const CHUNK: usize = 256;

    fn new(
        out: &Path,
        split: &str,
        classes: usize,
        (p, progress): (&Encoding, Progress<'a>),
        pool: &'a rayon::ThreadPool,
        (total, done): (usize, usize),
    ) -> Result<Self> {
        Ok(Self {
            split: split.to_string(),
            writer: ShardWriter::new(&out.join(split), p.shard_mb << 20)?,
            buf: Vec::with_capacity(Self::CHUNK),
            per_class: vec![0; classes],
            pool,
            progress,
            short: p.short_side,
            quality: p.quality,
            total,
            done,
            t0: std::time::Instant::now(),
        })
    }

    fn push(&mut self, item: Pending) -> Result<()> {
        if item.label >= self.per_class.len() {
            bail!(
                "{}: label {} outside the {} classes",
                item.name,
                item.label,
                self.per_class.len()
            );
        }
        self.buf.push(item);
        if self.buf.len() >= Self::CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        use rayon::prelude::*;
        let (short, quality) = (self.short, self.quality);
        let chunk = std::mem::take(&mut self.buf);
        let encoded: Vec<Result<Vec<u8>>> = self.pool.install(|| {
            chunk
                .par_iter()
                .map(|it| encode(it, short, quality))
                .collect()
        });
        for (it, e) in chunk.iter().zip(encoded) {
            self.writer.push(&e?, it.label as i64)?;
            self.per_class[it.label] += 1;
        }
        self.done += chunk.len();
        let rate = self.done as f64 / self.t0.elapsed().as_secs_f64().max(1e-3);
        (self.progress)(
            &format!(
                "{}: {}/{} images {rate:.0} img/s",
                self.split, self.done, self.total
            ),
            Some(self.done as f64 / self.total.max(1) as f64),
        );
        Ok(())
    }

    /// Write the last chunk and the index; images per class.
    fn finish(mut self) -> Result<Vec<usize>> {
        self.flush()?;
        self.writer.finish()?;
        Ok(self.per_class)
    }
}

/// Read, decode, resize the short side, re-encode as JPEG. Deterministic for equal input.
fn encode(item: &Pending, short: u32, quality: u8) -> Result<Vec<u8>> {
    let owned;
    let bytes = match &item.payload {
        Payload::Bytes(b) => b,
        Payload::File(f) => {
            owned = std::fs::read(f).with_context(|| {
                format!(
                    "reading {} (listed by the dataset's annotations)",
                    f.display()
                )
            })?;
            &owned
        }
    };
    let img = augment::decode(bytes).with_context(|| format!("{} cannot be decoded", item.name))?;
    let small = augment::resize_short_side(&img, short);
    let mut out = Vec::with_capacity(64 * 1024);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(&small)
        .with_context(|| format!("re-encoding {}", item.name))?;
    Ok(out)
}
