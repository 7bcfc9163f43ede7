//! Reading a state dict saved by `torch.save`, in either of its two formats:
//!
//! - the zip format (PyTorch ≥ 1.6): `<name>/data.pkl` holds the pickled dict, whose tensors
//!   name their storages by key; each storage's raw little-endian bytes are `<name>/data/<key>`;
//! - the legacy stream (older files, such as torchvision's 2017 DenseNet weights): five pickles
//!   in a row (magic number, protocol version, system info, the dict, the storage keys), then
//!   each storage as an 8-byte element count and its raw bytes, in key order.
//!
//! Tensors are returned contiguous, in the checkpoint's dtype, with the dict's key order.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::pickle::{self, StorageRef, TensorRef, Value};

/// A tensor read from a checkpoint: dtype name as in the storage type (`Float`, `Half`, …).
#[derive(Clone, Debug)]
pub struct RawTensor {
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Contiguous row-major bytes.
    pub data: Vec<u8>,
}

/// Bytes per element of a storage type.
pub fn element_size(dtype: &str) -> Result<usize> {
    Ok(match dtype {
        "Float" | "Int" => 4,
        "Double" | "Long" => 8,
        "Half" | "BFloat16" | "Short" => 2,
        "Byte" | "Char" | "Bool" => 1,
        other => bail!("checkpoint: storage type `torch.{other}Storage` is not supported"),
    })
}

/// The persistent id of a storage: ('storage', type, key, location, numel[, view]).
fn storage_from_pid(pid: Value) -> Result<Value> {
    let Value::Tuple(items) = pid else {
        bail!("checkpoint: a persistent id is not a tuple")
    };
    match items.as_slice() {
        [Value::Str(tag), ty, Value::Str(key), _location, numel, ..] if tag == "storage" => {
            let dtype = ty
                .as_storage_type()
                .context("checkpoint: a storage's type is not a torch storage type")?
                .to_string();
            let Value::Int(numel) = numel else {
                bail!("checkpoint: a storage's size is not an integer")
            };
            Ok(Value::Storage(StorageRef {
                dtype,
                key: key.clone(),
                numel: *numel as usize,
            }))
        }
        _ => bail!("checkpoint: unknown persistent id {items:?}"),
    }
}

/// The tensors of a state dict (a `{"state_dict": …}` wrapper is unwrapped).
fn tensors_of(v: Value) -> Result<Vec<(String, TensorRef)>> {
    let Value::Dict(entries) = v else {
        bail!("the checkpoint does not hold a dict of tensors (a state dict)")
    };
    if let Some((_, inner)) = entries.iter().find(|(k, v)| {
        matches!(k, Value::Str(s) if s == "state_dict") && matches!(v, Value::Dict(_))
    }) {
        return tensors_of(inner.clone());
    }
    let mut out = Vec::new();
    for (k, v) in entries {
        let Value::Str(name) = k else {
            bail!("checkpoint: a key of the state dict is not a string")
        };
        match v {
            Value::Tensor(t) => out.push((name, t)),
            other => bail!(
                "checkpoint: `{name}` is not a tensor ({})",
                kind_name(&other)
            ),
        }
    }
    Ok(out)
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Dict(_) => "a dict",
        Value::List(_) | Value::Tuple(_) => "a sequence",
        Value::Int(_) | Value::Float(_) | Value::Bool(_) => "a number",
        Value::Str(_) => "a string",
        _ => "another object",
    }
}

/// Copy the (possibly strided) view `t` out of its storage's bytes.
fn materialise(name: &str, t: &TensorRef, storage: &[u8]) -> Result<RawTensor> {
    let es = element_size(&t.storage.dtype)?;
    if storage.len() < t.storage.numel * es {
        bail!(
            "checkpoint: the storage of `{name}` has {} bytes, {} expected (truncated file?)",
            storage.len(),
            t.storage.numel * es
        );
    }
    if t.shape.len() != t.stride.len() {
        bail!(
            "checkpoint: `{name}` has {} sizes but {} strides",
            t.shape.len(),
            t.stride.len()
        );
    }
    let numel: usize = t.shape.iter().product();
    if numel > 0 {
        let last = t.offset
            + t.shape
                .iter()
                .zip(&t.stride)
                .map(|(s, st)| (s - 1) * st)
                .sum::<usize>();
        if last >= t.storage.numel {
            bail!("checkpoint: `{name}` reaches past the end of its storage");
        }
    }
    let mut data = Vec::with_capacity(numel * es);
    let mut idx = vec![0usize; t.shape.len()];
    for _ in 0..numel {
        let e = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
        data.extend_from_slice(&storage[e * es..(e + 1) * es]);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < t.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(RawTensor {
        dtype: t.storage.dtype.clone(),
        shape: t.shape.clone(),
        data,
    })
}

/// Read every tensor of a `torch.save`d state dict.
pub fn read(path: &Path) -> Result<Vec<(String, RawTensor)>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let parsed = if bytes.starts_with(b"PK\x03\x04") {
        read_zip(&bytes)
    } else if bytes.starts_with(&[0x80, 0x02]) {
        read_legacy(&bytes)
    } else if bytes.len() > 262 && &bytes[257..262] == b"ustar" {
        bail!(
            "{}: a tar-format checkpoint (PyTorch < 0.4); load and re-save it with a recent PyTorch",
            path.display()
        )
    } else {
        bail!(
            "{}: not a PyTorch checkpoint (neither the zip nor the legacy torch.save format)",
            path.display()
        )
    };
    parsed.with_context(|| format!("{}: cannot read the checkpoint", path.display()))
}

fn read_zip(bytes: &[u8]) -> Result<Vec<(String, RawTensor)>> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .context("the zip archive is damaged or truncated")?;
    let pkl = zip
        .file_names()
        .find(|n| n.ends_with("/data.pkl") || *n == "data.pkl")
        .map(String::from)
        .context("the archive has no data.pkl (not a torch.save file)")?;
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    let mut read_entry = |name: &str| -> Result<Vec<u8>> {
        let mut f = zip
            .by_name(name)
            .with_context(|| format!("the archive has no entry {name} (truncated?)"))?;
        let mut b = Vec::with_capacity(f.size() as usize);
        f.read_to_end(&mut b)
            .with_context(|| format!("reading {name} (truncated?)"))?;
        Ok(b)
    };
    let pkl_bytes = read_entry(&pkl)?;
    let (dict, _) = pickle::load(&pkl_bytes, &storage_from_pid)?;
    let tensors = tensors_of(dict)?;
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut out = Vec::new();
    for (name, t) in tensors {
        if !storages.contains_key(&t.storage.key) {
            let b = read_entry(&format!("{prefix}data/{}", t.storage.key))?;
            storages.insert(t.storage.key.clone(), b);
        }
        out.push((
            name.clone(),
            materialise(&name, &t, &storages[&t.storage.key])?,
        ));
    }
    Ok(out)
}

fn read_legacy(bytes: &[u8]) -> Result<Vec<(String, RawTensor)>> {
    let no_pid =
        |_: Value| -> Result<Value> { bail!("unexpected persistent id in a header pickle") };
    let mut pos = 0;
    let (magic, n) = pickle::load(bytes, &no_pid)?;
    pos += n;
    // 0x1950a86a20f9469cfc6c, little-endian.
    let want = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
    if magic != Value::BigInt(want.to_vec()) {
        bail!("not a legacy torch.save stream (bad magic number)");
    }
    let (_protocol, n) = pickle::load(&bytes[pos..], &no_pid)?;
    pos += n;
    let (_sys_info, n) = pickle::load(&bytes[pos..], &no_pid)?;
    pos += n;
    let (dict, n) = pickle::load(&bytes[pos..], &storage_from_pid)?;
    pos += n;
    let (keys, n) = pickle::load(&bytes[pos..], &no_pid)?;
    pos += n;
    let Value::List(keys) = keys else {
        bail!("the storage key list is missing")
    };
    let tensors = tensors_of(dict)?;
    let dtypes: HashMap<&str, &str> = tensors
        .iter()
        .map(|(_, t)| (t.storage.key.as_str(), t.storage.dtype.as_str()))
        .collect();
    let mut storages: HashMap<String, &[u8]> = HashMap::new();
    for k in keys {
        let Value::Str(k) = k else {
            bail!("a storage key is not a string")
        };
        let head = bytes
            .get(pos..pos + 8)
            .context("the storage data ends early (truncated file?)")?;
        let numel = u64::from_le_bytes(head.try_into().expect("8 bytes")) as usize;
        pos += 8;
        let es = element_size(dtypes.get(k.as_str()).copied().unwrap_or("Byte"))?;
        let data = bytes
            .get(pos..pos + numel * es)
            .context("the storage data ends early (truncated file?)")?;
        pos += numel * es;
        storages.insert(k, data);
    }
    tensors
        .into_iter()
        .map(|(name, t)| {
            let s = storages
                .get(&t.storage.key)
                .with_context(|| format!("the storage of `{name}` is missing (truncated file?)"))?;
            Ok((name.clone(), materialise(&name, &t, s)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(t: &RawTensor) -> Vec<f32> {
        t.data
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn reads_both_formats_with_views_offsets_and_dtypes() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoints");
        for file in ["tiny-zip.pth", "tiny-legacy.pth"] {
            let t = read(&dir.join(file)).unwrap();
            let names: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["w", "b", "h", "n"], "{file}");
            let w = &t[0].1;
            assert_eq!(
                (w.dtype.as_str(), w.shape.as_slice()),
                ("Float", &[4usize, 3][..])
            );
            // arange(12).reshape(3, 4).t(), row-major
            assert_eq!(
                f32s(w),
                [0., 4., 8., 1., 5., 9., 2., 6., 10., 3., 7., 11.],
                "{file}"
            );
            assert_eq!(f32s(&t[1].1), [4., 5., 6., 7.], "{file}");
            assert_eq!(t[2].1.dtype, "Half");
            assert_eq!(
                t[2].1.data,
                [0x00, 0x38, 0x00, 0xc0],
                "{file}: float16 0.5, -2"
            );
            assert_eq!((t[3].1.dtype.as_str(), t[3].1.shape.len()), ("Long", 0));
            assert_eq!(t[3].1.data, 7i64.to_le_bytes(), "{file}");
        }
    }

    #[test]
    fn a_truncated_or_foreign_file_is_refused() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoints");
        let tmp = tempfile::tempdir().unwrap();
        for file in ["tiny-zip.pth", "tiny-legacy.pth"] {
            let b = std::fs::read(dir.join(file)).unwrap();
            let cut = tmp.path().join(file);
            std::fs::write(&cut, &b[..b.len() - 20]).unwrap();
            let e = format!("{:#}", read(&cut).unwrap_err());
            assert!(
                e.contains("truncated") || e.contains("damaged"),
                "{file}: {e}"
            );
        }
        let other = tmp.path().join("x.pth");
        std::fs::write(&other, b"not a checkpoint at all").unwrap();
        let e = format!("{:#}", read(&other).unwrap_err());
        assert!(e.contains("not a PyTorch checkpoint"), "{e}");
    }
}
