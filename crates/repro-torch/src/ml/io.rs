//! Atomic output files for training: every file is written to a temporary name in its final
//! directory, flushed to disk, then renamed over the final name, so an interrupted run never
//! leaves a complete-looking partial file.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use tch::Tensor;

/// Write bytes atomically (and durably: file and directory fsync'd).
pub use repro_engine::write_atomic;
use repro_engine::write_atomic_with;

/// Write a JSON value (pretty, with a final newline) atomically.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Write named tensors as safetensors atomically. Tensors are moved to the CPU and made
/// contiguous; names are sorted so the same values give the same bytes.
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut named: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                t.detach().to_device(tch::Device::Cpu).contiguous(),
            )
        })
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    write_atomic_with(path, |tmp| Ok(Tensor::write_safetensors(&named, tmp)?))
}

/// Read every tensor of a safetensors file, by name.
pub fn read_safetensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let v = Tensor::read_safetensors(path)
        .with_context(|| format!("{}: cannot read as safetensors", path.display()))?;
    Ok(v.into_iter().collect())
}
