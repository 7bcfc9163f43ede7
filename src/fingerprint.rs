//! A stage's fingerprint: everything that determines its result, and the key derived from it.
//!
//! The key is blake3 over a canonical, length-prefixed encoding of the fingerprint's fields.
//! The lock file stores the fingerprint itself, so "why is this stale?" is answered by
//! comparing the same fields the key was computed from: the code that decides and the code
//! that explains cannot disagree (if the keys differ, some field differs, because the encoding
//! is injective). Paths are workspace-relative, so a moved or cloned workspace keeps its keys.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// Bumped when the encoding itself changes (every key changes with it).
const ENCODING_VERSION: &str = "repro-key-v1";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// `cmd: <text>` or `uses: <kind>@<version>`.
    pub action: String,
    /// Resolved `with:` parameters of a built-in kind.
    #[serde(default, skip_serializing_if = "Json::is_null")]
    pub with: Json,
    /// Declared params and their values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, Json>,
    /// Dep path → content hash.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deps: BTreeMap<String, String>,
    /// Declared output paths (their hashes are results, not inputs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outs: Vec<String>,
}

impl Fingerprint {
    /// The stage key.
    pub fn key(&self) -> String {
        let mut h = blake3::Hasher::new();
        let mut field = |tag: &str, bytes: &[u8]| {
            h.update(&(tag.len() as u64).to_le_bytes());
            h.update(tag.as_bytes());
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field("encoding", ENCODING_VERSION.as_bytes());
        field("action", self.action.as_bytes());
        field("with", canonical_json(&self.with).as_bytes());
        for (k, v) in &self.params {
            field("param", k.as_bytes());
            field("value", canonical_json(v).as_bytes());
        }
        for (p, hash) in &self.deps {
            field("dep", p.as_bytes());
            field("hash", hash.as_bytes());
        }
        let mut outs = self.outs.clone();
        outs.sort();
        for o in &outs {
            field("out", o.as_bytes());
        }
        h.finalize().to_hex().to_string()
    }

    /// Why `self` (now) differs from `old` (recorded), field by field, in words.
    pub fn diff(&self, old: &Fingerprint) -> Vec<String> {
        let mut why = Vec::new();
        if self.action != old.action {
            if self.action.starts_with("uses:") && old.action.starts_with("uses:") {
                why.push(format!(
                    "code version changed: {} (was {})",
                    self.action.trim_start_matches("uses: "),
                    old.action.trim_start_matches("uses: ")
                ));
            } else {
                why.push(format!(
                    "command changed: {} (was {})",
                    self.action, old.action
                ));
            }
        }
        if canonical_json(&self.with) != canonical_json(&old.with) {
            let mut changed = Vec::new();
            diff_json("", &old.with, &self.with, &mut changed);
            for c in changed {
                why.push(format!("parameter {c}"));
            }
        }
        for (k, v) in &self.params {
            match old.params.get(k) {
                None => why.push(format!("param {k} added: {}", show(v))),
                Some(o) if canonical_json(o) != canonical_json(v) => {
                    why.push(format!("param {k} changed: {} -> {}", show(o), show(v)))
                }
                _ => {}
            }
        }
        for k in old.params.keys().filter(|k| !self.params.contains_key(*k)) {
            why.push(format!("param {k} removed"));
        }
        for (p, h) in &self.deps {
            match old.deps.get(p) {
                None => why.push(format!("dep {p} added")),
                Some(o) if o != h => why.push(format!("dep {p} changed")),
                _ => {}
            }
        }
        for p in old.deps.keys().filter(|p| !self.deps.contains_key(*p)) {
            why.push(format!("dep {p} removed"));
        }
        let (mut a, mut b) = (self.outs.clone(), old.outs.clone());
        a.sort();
        b.sort();
        if a != b {
            why.push(format!(
                "declared outputs changed: [{}] (were [{}])",
                a.join(", "),
                b.join(", ")
            ));
        }
        if why.is_empty() && self.key() != old.key() {
            // Unreachable while the encoding is injective; kept so a bug cannot hide a rerun's cause.
            why.push("stage key changed".into());
        }
        why
    }
}

fn show(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => canonical_json(other),
    }
}

/// `a.b: 1 -> 2` lines for the leaves that differ.
fn diff_json(path: &str, old: &Json, new: &Json, out: &mut Vec<String>) {
    match (old, new) {
        (Json::Object(a), Json::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff_json(&p, x, y, out),
                    (None, Some(y)) => out.push(format!("{p} added: {}", show(y))),
                    (Some(_), None) => out.push(format!("{p} removed")),
                    (None, None) => {}
                }
            }
        }
        (a, b) if canonical_json(a) != canonical_json(b) => out.push(format!(
            "{} changed: {} -> {}",
            if path.is_empty() { "with" } else { path },
            show(a),
            show(b)
        )),
        _ => {}
    }
}

/// JSON with object keys sorted at every level, so equal values encode equally.
pub fn canonical_json(v: &Json) -> String {
    fn sort(v: &Json) -> Json {
        match v {
            Json::Object(m) => {
                let sorted: BTreeMap<&String, Json> = m.iter().map(|(k, v)| (k, sort(v))).collect();
                Json::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Json::Array(a) => Json::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string(&sort(v)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fp() -> Fingerprint {
        Fingerprint {
            action: "cmd: python train.py".into(),
            with: Json::Null,
            params: [("lr".to_string(), json!(0.1))].into(),
            deps: [("data.csv".to_string(), "aa".to_string())].into(),
            outs: vec!["model.bin".into()],
        }
    }

    #[test]
    fn key_ignores_map_order_but_not_content() {
        let mut a = fp();
        a.with = json!({"x": 1, "y": {"b": 2, "a": 1}});
        let mut b = fp();
        b.with = serde_json::from_str(r#"{"y": {"a": 1, "b": 2}, "x": 1}"#).unwrap();
        assert_eq!(a.key(), b.key());
        b.with = json!({"x": 1, "y": {"a": 1, "b": 3}});
        assert_ne!(a.key(), b.key());
        assert_eq!(
            a.diff(&b),
            vec!["parameter y.b changed: 3 -> 2".to_string()]
        );
    }

    #[test]
    fn encoding_is_injective_across_fields() {
        // Moving text between fields must change the key.
        let mut a = fp();
        a.deps = [("ab".to_string(), "c".to_string())].into();
        let mut b = fp();
        b.deps = [("a".to_string(), "bc".to_string())].into();
        assert_ne!(a.key(), b.key());
        let mut c = fp();
        c.outs = vec!["data.csv".into()];
        c.deps.clear();
        let mut d = fp();
        d.deps = [("data.csv".to_string(), String::new())].into();
        d.outs.clear();
        assert_ne!(c.key(), d.key());
    }

    #[test]
    fn diff_explains_each_change() {
        let old = fp();
        let mut new = fp();
        new.params.insert("lr".into(), json!(0.2));
        new.deps.insert("data.csv".into(), "bb".into());
        new.action = "cmd: python train2.py".into();
        let why = new.diff(&old);
        assert!(
            why.contains(&"param lr changed: 0.1 -> 0.2".to_string()),
            "{why:?}"
        );
        assert!(why.contains(&"dep data.csv changed".to_string()), "{why:?}");
        assert!(
            why.iter().any(|w| w.starts_with("command changed")),
            "{why:?}"
        );
        assert!(fp().diff(&fp()).is_empty());
    }
}
