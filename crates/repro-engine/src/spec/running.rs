//! How a stage is run, beside what it computes: `retry:` (runs again after a failure) and a
//! stage's own `executor:`. Neither is part of the stage key: they change how often or where
//! a stage runs, not what it produces.

use serde::{Deserialize, Serialize};

use super::SpecError;
use super::interp::{Scope, interpolate_node};
use super::yaml::Node;

/// `retry:`: how many times a failed stage runs again, and how long the runner waits first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Retry {
    /// Runs after the first failure (0: none).
    pub count: u32,
    /// Seconds between a failure and the next attempt.
    pub backoff_s: f64,
}

/// The backoff when `retry:` gives only a count: long enough for a flaky server or a
/// pre-empted node to come back, short enough not to be noticed.
const DEFAULT_BACKOFF_S: f64 = 1.0;

const RETRY_KEYS: &[&str] = &["count", "backoff"];

/// `retry: 3` or `retry: {count: 3, backoff: 10s}` (backoff in seconds: `10`, `10s`, `2m`).
pub(super) fn parse_retry(body: &Node, scope: &Scope, errors: &mut Vec<SpecError>) -> Retry {
    let Some(node) = body.get("retry") else {
        return Retry::default();
    };
    let mut retry = Retry {
        count: 0,
        backoff_s: DEFAULT_BACKOFF_S,
    };
    let count = |v: &serde_json::Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    if let Some(entries) = node.as_map() {
        for (k, v) in entries {
            let key = k.as_str().unwrap_or_default();
            if !RETRY_KEYS.contains(&key) {
                errors.push(super::unknown_key(k, key, RETRY_KEYS, "retry key"));
                continue;
            }
            let value = match interpolate_node(v, scope) {
                Ok(x) => x,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            match key {
                "count" => match count(&value) {
                    Some(n) => retry.count = n,
                    None => errors.push(SpecError::at(
                        &v.mark,
                        "`retry: {count}` must be a whole number",
                    )),
                },
                _ => match parse_duration(&value) {
                    Some(s) => retry.backoff_s = s,
                    None => errors.push(SpecError::at(
                        &v.mark,
                        "`backoff:` must be seconds such as 10, 10s, 1.5s or 2m",
                    )),
                },
            }
        }
        return retry;
    }
    match interpolate_node(node, scope) {
        Ok(v) => match count(&v) {
            Some(n) => retry.count = n,
            None => errors.push(SpecError::at(
                &node.mark,
                "`retry:` must be a count such as 3, or {count: 3, backoff: 10s}",
            )),
        },
        Err(e) => errors.push(e),
    }
    retry
}

/// Seconds from `10`, `1.5`, `10s`, `2m` or `1h`.
fn parse_duration(v: &serde_json::Value) -> Option<f64> {
    if let Some(n) = v.as_f64() {
        return (n >= 0.0).then_some(n);
    }
    let s = v.as_str()?.trim();
    let (num, mult) = match s.chars().last()? {
        's' => (&s[..s.len() - 1], 1.0),
        'm' => (&s[..s.len() - 1], 60.0),
        'h' => (&s[..s.len() - 1], 3600.0),
        _ => (s, 1.0),
    };
    let n: f64 = num.trim().parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some(n * mult)
}

/// A stage's `executor:`: only `local`, which runs it on this machine when the pipeline runs
/// on Slurm (a report or a plot that needs no compute node). `None` when not written.
pub(super) fn parse_executor(
    body: &Node,
    scope: &Scope,
    errors: &mut Vec<SpecError>,
) -> Option<String> {
    let node = body.get("executor")?;
    match interpolate_node(node, scope) {
        Ok(serde_json::Value::String(s)) if s == "local" => Some(s),
        Ok(_) => {
            errors.push(SpecError::at(
                &node.mark,
                "a stage's `executor:` can only be `local` (it runs the stage on this machine \
                 when the pipeline runs elsewhere)",
            ));
            None
        }
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

/// A stage's `verify: {ignore: [FILE:FIELD, …]}`: JSON fields of its outputs that measure the
/// run rather than its result (a wall time, a rate), which `repro verify` ignores when it
/// compares a rerun with the recorded run. FILE is an output (workspace-relative), FIELD a
/// dotted path with `*` or a last segment (`train_seconds`, `epochs.*.seconds`). Not part of
/// the stage key: it changes how a result is checked, not what it is.
pub(super) fn parse_verify(
    body: &Node,
    scope: &Scope,
    errors: &mut Vec<SpecError>,
) -> Vec<(String, String)> {
    let Some(node) = body.get("verify") else {
        return Vec::new();
    };
    let bad = |m: &super::yaml::Mark| {
        SpecError::at(
            m,
            "`verify:` is `{ignore: [FILE:FIELD, …]}`: an output file and a JSON field that \
             measures the run, not its result (`out/train.json:epochs.*.seconds`)",
        )
    };
    let Some(entries) = node.as_map() else {
        errors.push(bad(&node.mark));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in entries {
        let key = k.as_str().unwrap_or_default();
        if key != "ignore" {
            errors.push(super::unknown_key(k, key, &["ignore"], "verify key"));
            continue;
        }
        let value = match interpolate_node(v, scope) {
            Ok(x) => x,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let items = match &value {
            serde_json::Value::Array(a) => a.clone(),
            one @ serde_json::Value::String(_) => vec![one.clone()],
            _ => {
                errors.push(bad(&v.mark));
                continue;
            }
        };
        for item in items {
            match item.as_str().and_then(|t| t.rsplit_once(':')) {
                Some((file, field)) if !file.trim().is_empty() && !field.trim().is_empty() => {
                    let file = file.trim().trim_start_matches("./").to_string();
                    out.push((file, field.trim().to_string()));
                }
                _ => errors.push(bad(&v.mark)),
            }
        }
    }
    out
}
