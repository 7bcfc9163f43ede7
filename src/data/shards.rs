//! The on-disk form of a preprocessed image set: per split, shards of concatenated JPEG
//! bytes and an index. Layout of a preprocessed directory:
//!
//! ```text
//! classes.json              JSON list of class names (label i is classes[i])
//! meta.json                 dataset name, image size, counts per split and per class
//! <split>/shard-00000.bin   JPEG files back to back (train/, test/)
//! <split>/index.safetensors i64 tensors `shard`, `offset`, `length`, `labels`, all [n]
//! ```
//!
//! Samples are in a fixed order (the order the layout lists them), so the same input gives
//! byte-identical shards and index, which keeps the engine's content hashes stable.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, TensorView};

/// Appends encoded images to shards of about `shard_bytes` each.
pub struct ShardWriter {
    dir: PathBuf,
    shard_bytes: u64,
    current: Option<BufWriter<File>>,
    shard: i64,
    written: u64,
    index: [Vec<i64>; 4],
}

impl ShardWriter {
    pub fn new(dir: &Path, shard_bytes: u64) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            shard_bytes: shard_bytes.max(1),
            current: None,
            shard: -1,
            written: 0,
            index: Default::default(),
        })
    }

    pub fn push(&mut self, jpeg: &[u8], label: i64) -> Result<()> {
        if self.current.is_none() || self.written >= self.shard_bytes {
            self.roll()?;
        }
        let w = self.current.as_mut().unwrap();
        w.write_all(jpeg)?;
        let [s, o, l, y] = &mut self.index;
        s.push(self.shard);
        o.push(self.written as i64);
        l.push(jpeg.len() as i64);
        y.push(label);
        self.written += jpeg.len() as u64;
        Ok(())
    }

    fn roll(&mut self) -> Result<()> {
        if let Some(mut w) = self.current.take() {
            w.flush()?;
        }
        self.shard += 1;
        let path = self.dir.join(format!("shard-{:05}.bin", self.shard));
        let f = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        self.current = Some(BufWriter::with_capacity(1 << 20, f));
        self.written = 0;
        Ok(())
    }

    /// Flush the last shard and write the index; returns the number of samples.
    pub fn finish(mut self) -> Result<usize> {
        if let Some(mut w) = self.current.take() {
            w.flush()?;
            w.get_ref().sync_all().ok();
        }
        let n = self.index[3].len();
        let bytes: Vec<Vec<u8>> = self
            .index
            .iter()
            .map(|v| v.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        let names = ["shard", "offset", "length", "labels"];
        let views = names
            .iter()
            .zip(&bytes)
            .map(|(name, b)| Ok((*name, TensorView::new(Dtype::I64, vec![n], b)?)))
            .collect::<Result<Vec<_>>>()?;
        let data = safetensors::serialize(views, &None)?;
        fs::write(self.dir.join("index.safetensors"), data)?;
        Ok(n)
    }
}

/// Read access to one split of a preprocessed image set.
pub struct ShardSet {
    files: Vec<File>,
    shard: Vec<u32>,
    offset: Vec<u64>,
    length: Vec<u32>,
    pub labels: Vec<i64>,
}

fn i64s(st: &SafeTensors, name: &str, path: &Path) -> Result<Vec<i64>> {
    let t = st
        .tensor(name)
        .with_context(|| format!("{}: no tensor '{name}'", path.display()))?;
    if t.dtype() != Dtype::I64 {
        bail!(
            "{}: tensor '{name}' is {:?}, expected I64",
            path.display(),
            t.dtype()
        );
    }
    Ok(t.data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect())
}

impl ShardSet {
    /// Open `<dir>/<split>/`.
    pub fn open(dir: &Path, split: &str) -> Result<Self> {
        let sdir = dir.join(split);
        let ipath = sdir.join("index.safetensors");
        let raw = fs::read(&ipath).with_context(|| {
            format!(
                "reading {} (is {} a preprocessed image set?)",
                ipath.display(),
                dir.display()
            )
        })?;
        let st = SafeTensors::deserialize(&raw)
            .with_context(|| format!("{} is not a valid safetensors file", ipath.display()))?;
        let shard = i64s(&st, "shard", &ipath)?;
        let offset = i64s(&st, "offset", &ipath)?;
        let length = i64s(&st, "length", &ipath)?;
        let labels = i64s(&st, "labels", &ipath)?;
        let n = labels.len();
        if shard.len() != n || offset.len() != n || length.len() != n {
            bail!("{}: index tensors have different lengths", ipath.display());
        }
        let nshards = shard.iter().copied().max().map(|m| m + 1).unwrap_or(0) as usize;
        let files = (0..nshards)
            .map(|s| {
                let p = sdir.join(format!("shard-{s:05}.bin"));
                File::open(&p).with_context(|| format!("opening {}", p.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            files,
            shard: shard.into_iter().map(|v| v as u32).collect(),
            offset: offset.into_iter().map(|v| v as u64).collect(),
            length: length.into_iter().map(|v| v as u32).collect(),
            labels,
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The encoded bytes of sample `i` (safe to call from several threads).
    pub fn read(&self, i: usize, buf: &mut Vec<u8>) -> Result<()> {
        buf.resize(self.length[i] as usize, 0);
        self.files[self.shard[i] as usize]
            .read_exact_at(buf, self.offset[i])
            .with_context(|| format!("reading sample {i} from shard {}", self.shard[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_back_across_shards() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::new(&dir.path().join("train"), 10).unwrap();
        let items: Vec<Vec<u8>> = (0..7u8).map(|i| vec![i; 4 + i as usize]).collect();
        for (i, it) in items.iter().enumerate() {
            w.push(it, i as i64 % 3).unwrap();
        }
        assert_eq!(w.finish().unwrap(), 7);
        let s = ShardSet::open(dir.path(), "train").unwrap();
        assert!(s.files.len() > 1);
        let mut buf = Vec::new();
        for (i, it) in items.iter().enumerate() {
            s.read(i, &mut buf).unwrap();
            assert_eq!(&buf, it);
            assert_eq!(s.labels[i], i as i64 % 3);
        }
    }
}
