//! `resources:` of a stage (cpus, gpus, mem, time, partition), parsed and checked.

use serde_json::Value as Json;

use super::interp::{Scope, interpolate_node};
use super::yaml::Node;
use super::*;

/// Resources a stage declared (`resources:` in pipeline.yaml), already resolved.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// CPU threads (default 1).
    pub cpus: usize,
    /// Number of GPUs.
    pub gpus: usize,
    /// Memory in MiB (Slurm `--mem`), if declared.
    pub mem_mb: Option<u64>,
    /// Wall-time limit in minutes (Slurm `--time`), if declared.
    pub time_min: Option<u64>,
    /// The same limit in seconds, as declared: the local executor enforces it.
    #[serde(default)]
    pub time_s: Option<u64>,
    /// Slurm partition, if declared.
    pub partition: Option<String>,
}

pub(super) fn parse_resources(r: &Node, scope: &Scope, errors: &mut Vec<SpecError>) -> Resources {
    let mut res = Resources {
        cpus: 1,
        ..Default::default()
    };
    let Some(entries) = r.as_map() else {
        errors.push(SpecError::at(
            &r.mark,
            "`resources:` must be a mapping such as {cpus: 2, gpu: 1}",
        ));
        return res;
    };
    for (k, v) in entries {
        let key = k.as_str().unwrap_or_default();
        if !RESOURCE_KEYS.contains(&key) {
            errors.push(unknown_key(k, key, RESOURCE_KEYS, "resource"));
            continue;
        }
        let value = match interpolate_node(v, scope) {
            Ok(x) => x,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let as_count = |value: &Json| value.as_u64().map(|n| n as usize);
        match key {
            "cpus" => match as_count(&value) {
                Some(n) if n >= 1 => res.cpus = n,
                _ => errors.push(SpecError::at(&v.mark, "`cpus:` must be a whole number ≥ 1")),
            },
            "gpu" | "gpus" => match as_count(&value) {
                Some(n) => res.gpus = n,
                None => errors.push(SpecError::at(
                    &v.mark,
                    format!("`{key}:` must be a whole number"),
                )),
            },
            "mem" => match parse_mem(&value) {
                Some(mb) => res.mem_mb = Some(mb),
                None => errors.push(SpecError::at(
                    &v.mark,
                    "`mem:` must be like 4096 (MiB), 512M or 8G",
                )),
            },
            "time" => match parse_seconds(&value) {
                Some(secs) => {
                    res.time_min = Some(secs.div_ceil(60));
                    res.time_s = Some(secs);
                }
                None => errors.push(SpecError::at(
                    &v.mark,
                    "`time:` must be minutes (90) or H:MM:SS",
                )),
            },
            "partition" => res.partition = interp::scalar_text(&value),
            _ => {}
        }
    }
    res
}

fn parse_mem(v: &Json) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let s = v.as_str()?.trim();
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1.0 / 1024.0),
        'M' | 'm' => (&s[..s.len() - 1], 1.0),
        'G' | 'g' => (&s[..s.len() - 1], 1024.0),
        'T' | 't' => (&s[..s.len() - 1], 1024.0 * 1024.0),
        _ => (s, 1.0),
    };
    let n: f64 = num.parse().ok()?;
    Some((n * mult).ceil() as u64)
}

/// `time:` in seconds: minutes (90), M:SS or H:MM:SS.
fn parse_seconds(v: &Json) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n * 60);
    }
    let parts: Vec<u64> = v
        .as_str()?
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let secs = match parts.as_slice() {
        [m] => m * 60,
        [h, m, s] => h * 3600 + m * 60 + s,
        [m, s] => m * 60 + s,
        _ => return None,
    };
    Some(secs)
}
