//! Reading and validating a logits file (safetensors) for evaluation.
//!
//! The file holds `logits` (f32 [n, N], the classification metrics with the learned bias),
//! `labels` (i64 [n], values 0..N-1) and optionally `logits_nobias` (f32 [n, N]), `bias` and
//! `bias_init` (f32 [N] or [1]). The file is memory-mapped and the f32 matrices are viewed in
//! place when the data is 4-byte aligned (the usual case), so a 200 MB matrix is never copied;
//! an unaligned tensor is copied once. Every problem is reported with the file name and what to
//! fix.

use std::borrow::Cow;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use safetensors::{Dtype, SafeTensors};

/// A row-major [n, N] matrix of metrics, borrowed from the mapped file or owned.
pub struct Matrix<'a> {
    pub data: Cow<'a, [f32]>,
    pub rows: usize,
    pub cols: usize,
}

impl<'a> Matrix<'a> {
    /// Wrap a row-major slice; `data.len()` must be `rows * cols`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        if cols == 0 || data.len() != rows * cols {
            bail!(
                "matrix of {} values cannot have shape [{rows}, {cols}]",
                data.len()
            );
        }
        Ok(Self {
            data: Cow::Borrowed(data),
            rows,
            cols,
        })
    }

    /// Row `i` (the N metrics of one sample).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

/// The mapped file; tensors borrow from it.
pub struct LogitsFile {
    path: PathBuf,
    map: memmap2::Mmap,
}

/// Everything the evaluation needs, validated.
pub struct EvalInput<'a> {
    pub logits: Matrix<'a>,
    pub labels: Vec<u32>,
    pub logits_nobias: Option<Matrix<'a>>,
    pub bias: Option<Vec<f32>>,
    pub bias_init: Option<Vec<f32>>,
}

impl LogitsFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path)
            .with_context(|| format!("{}: cannot open logits file", path.display()))?;
        // Mapping a directory fails with "No such device": say what is wrong instead.
        let meta = file
            .metadata()
            .with_context(|| format!("{}: cannot stat logits file", path.display()))?;
        if meta.is_dir() {
            anyhow::bail!(
                "{}: is a directory; --logits takes a safetensors file",
                path.display()
            );
        }
        if !meta.is_file() {
            anyhow::bail!(
                "{}: is not a regular file; --logits takes a safetensors file",
                path.display()
            );
        }
        // SAFETY: the map is read-only; a concurrent writer truncating the file is outside our
        // contract (the engine promotes outputs by rename, never rewrites them in place).
        let map = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("{}: cannot map logits file", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
        })
    }

    /// Only the `logits` matrix: open-set unknowns, whose labels are no class of the model.
    pub fn read_logits(&self) -> Result<Matrix<'_>> {
        let p = self.path.display();
        let st = SafeTensors::deserialize(&self.map).with_context(|| {
            format!("{p}: not a valid safetensors file (write it with safetensors' save_file)")
        })?;
        let view = st.tensor("logits").map_err(|_| {
            anyhow::anyhow!("{p}: no tensor named `logits`; it must hold the [n, N] f32 metrics")
        })?;
        matrix(&self.path, "logits", &view)
    }

    /// Parse and validate the tensors.
    pub fn read(&self) -> Result<EvalInput<'_>> {
        let p = self.path.display();
        let st = SafeTensors::deserialize(&self.map).with_context(|| {
            format!("{p}: not a valid safetensors file (write it with safetensors' save_file)")
        })?;
        let names = || {
            let mut v: Vec<String> = st.names().into_iter().cloned().collect();
            v.sort();
            v.join(", ")
        };
        let logits_view = st.tensor("logits").map_err(|_| {
            anyhow::anyhow!("{p}: no tensor named `logits` (found: {}); it must hold the [n, N] f32 classification metrics", names())
        })?;
        let logits = matrix(&self.path, "logits", &logits_view)?;
        let labels_view = st.tensor("labels").map_err(|_| {
            anyhow::anyhow!(
                "{p}: no tensor named `labels` (found: {}); it must hold the i64 [n] true classes",
                names()
            )
        })?;
        if labels_view.dtype() != Dtype::I64 {
            bail!(
                "{p}: `labels` has dtype {:?}; it must be i64 (torch.long)",
                labels_view.dtype()
            );
        }
        let lshape = labels_view.shape().to_vec();
        if lshape != [logits.rows] {
            bail!(
                "{p}: `labels` has shape {lshape:?} but `logits` has {} rows; `labels` must have shape [{}]",
                logits.rows,
                logits.rows
            );
        }
        let mut labels = Vec::with_capacity(logits.rows);
        for (i, b) in labels_view.data().chunks_exact(8).enumerate() {
            let v = i64::from_le_bytes(b.try_into().expect("8 bytes"));
            if v < 0 || v >= logits.cols as i64 {
                bail!(
                    "{p}: labels[{i}] = {v} is outside 0..{} (N = {} classes, the second dimension of `logits`)",
                    logits.cols - 1,
                    logits.cols
                );
            }
            labels.push(v as u32);
        }
        let logits_nobias = match st.tensor("logits_nobias") {
            Ok(v) => {
                let m = matrix(&self.path, "logits_nobias", &v)?;
                if (m.rows, m.cols) != (logits.rows, logits.cols) {
                    bail!(
                        "{p}: `logits_nobias` has shape [{}, {}] but `logits` has [{}, {}]; they must match",
                        m.rows,
                        m.cols,
                        logits.rows,
                        logits.cols
                    );
                }
                Some(m)
            }
            Err(_) => None,
        };
        let bias = vector(&st, &self.path, "bias", logits.cols)?;
        let bias_init = vector(&st, &self.path, "bias_init", logits.cols)?;
        Ok(EvalInput {
            logits,
            labels,
            logits_nobias,
            bias,
            bias_init,
        })
    }
}

fn matrix<'a>(
    path: &Path,
    name: &str,
    view: &safetensors::tensor::TensorView<'a>,
) -> Result<Matrix<'a>> {
    let p = path.display();
    if view.dtype() != Dtype::F32 {
        bail!(
            "{p}: `{name}` has dtype {:?}; it must be f32 (convert with .float())",
            view.dtype()
        );
    }
    let shape = view.shape().to_vec();
    let [rows, cols] = shape[..] else {
        bail!("{p}: `{name}` has shape {shape:?}; it must be 2-D [n samples, N classes]");
    };
    if rows == 0 {
        bail!("{p}: `{name}` has no rows; there is nothing to evaluate");
    }
    if cols == 0 {
        bail!("{p}: `{name}` has zero columns; it needs one column per class");
    }
    Ok(Matrix {
        data: f32_data(view.data()),
        rows,
        cols,
    })
}

/// View little-endian f32 bytes as `[f32]` without copying where possible.
fn f32_data(bytes: &[u8]) -> Cow<'_, [f32]> {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: every bit pattern is a valid f32; align_to only yields the aligned middle.
        let (head, mid, tail) = unsafe { bytes.align_to::<f32>() };
        if head.is_empty() && tail.is_empty() {
            return Cow::Borrowed(mid);
        }
    }
    Cow::Owned(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect(),
    )
}

fn vector(
    st: &SafeTensors<'_>,
    path: &Path,
    name: &str,
    classes: usize,
) -> Result<Option<Vec<f32>>> {
    let Ok(view) = st.tensor(name) else {
        return Ok(None);
    };
    let p = path.display();
    if view.dtype() != Dtype::F32 {
        bail!("{p}: `{name}` has dtype {:?}; it must be f32", view.dtype());
    }
    let len: usize = view.shape().iter().product();
    if view.shape().len() > 1 || (len != classes && len != 1) {
        bail!(
            "{p}: `{name}` has shape {:?}; it must be [{classes}] (one per class) or [1] (unified)",
            view.shape()
        );
    }
    Ok(Some(f32_data(view.data()).into_owned()))
}
