//! The GPUs stages may be handed locally: the user's `CUDA_VISIBLE_DEVICES`, else what
//! `nvidia-smi -L` lists, else none. The engine hands out slots (indices into this list);
//! the local executor's stages see the device ids the slots stand for.

/// The device ids for the GPU slots of a run: `--resources gpu=N` gives N slots, named after
/// the user's visible devices where there are enough of them; otherwise the detected GPUs,
/// looked for (which may spawn `nvidia-smi`) only when a selected stage `wants` one.
pub(crate) fn slots(requested: Option<usize>, wants: bool) -> Vec<String> {
    match requested {
        Some(n) => ids_for_slots(n),
        None if wants => detect_gpu_ids(),
        None => Vec::new(),
    }
}

/// The device ids stages may be handed, as `CUDA_VISIBLE_DEVICES` spells them: the user's own
/// list when the variable is set (a user who allowed `2,3` must never get `0`), else
/// `0..n` for the `n` GPUs `nvidia-smi -L` lists. Tests fake GPUs through the variable alone.
pub(crate) fn detect_gpu_ids() -> Vec<String> {
    if let Some(ids) = visible_device_ids() {
        return ids;
    }
    (0..count_nvidia_smi_gpus())
        .map(|i| i.to_string())
        .collect()
}

/// `CUDA_VISIBLE_DEVICES`, split (`None` when unset).
fn visible_device_ids() -> Option<Vec<String>> {
    let v = std::env::var("CUDA_VISIBLE_DEVICES").ok()?;
    Some(
        v.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    )
}

/// `--resources gpu=N`: N slots, named after the user's visible devices where there are
/// enough of them.
fn ids_for_slots(n: usize) -> Vec<String> {
    match visible_device_ids() {
        Some(ids) if ids.len() >= n => ids.into_iter().take(n).collect(),
        _ => (0..n).map(|i| i.to_string()).collect(),
    }
}

fn count_nvidia_smi_gpus() -> usize {
    std::process::Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with("GPU "))
                .count()
        })
        .unwrap_or(0)
}
