//! A stage's fingerprint: everything that determines its result, and the key derived from it.
//!
//! The fingerprint is written down once, as one walk over its items ([`Fingerprint::walk`]),
//! and the walk goes into one of two sinks: a hasher that makes the key (blake3 over a
//! canonical, length-prefixed encoding of each item) and a record that keeps each item as
//! (part, name, value) so two fingerprints can be compared. The lock file stores the
//! fingerprint itself, so "why is this stale?" compares exactly what the key was computed
//! from, and the explanation is empty exactly when the keys are equal: the code that decides
//! and the code that explains are the same walk. Paths are workspace-relative, so a moved or
//! cloned workspace keeps its keys.

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
    /// `env:` variables → the value the stage sees (`None`: unset). Only declared names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, Option<String>>,
    /// `tools:` → their identity: `file: PATH` → content hash, `cmd: …` → its output.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tools: BTreeMap<String, String>,
    /// `container:` → the image and its digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerId>,
}

/// A container image as it entered the key: as written, and what it was found to be.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerId {
    pub image: String,
    pub digest: String,
}

/// The part of a fingerprint an item (and so a change) belongs to, and (the last five) the other
/// reasons a stage is out of date; `status --json` names it in snake case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// The command, or the kind and its version.
    Action,
    /// A built-in kind's `with:` parameters.
    With,
    /// A declared param.
    Param,
    /// A dep's content.
    Dep,
    /// The declared outputs.
    Outs,
    /// A declared environment variable.
    Env,
    /// A declared tool's identity.
    Tool,
    /// The container image.
    Container,
    /// Not a fingerprint part: the stage has no lock entry.
    NeverRun,
    /// Not a fingerprint part: the lock entry's key was made by another key encoding.
    Encoding,
    /// Not a fingerprint part: a declared output as it is against its recorded content.
    Output,
    /// Not a fingerprint part: a stage this one depends on may change its deps.
    Upstream,
    /// Not a fingerprint part: the stage could not be assessed (a path it cannot hash).
    Error,
}

/// How an item differs from the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum How {
    Added,
    Changed,
    Removed,
    /// An output that is not there.
    Missing,
    /// An output whose content is not the recorded one.
    Modified,
    /// An output the lock entry does not record.
    NotRecorded,
    /// An upstream stage that is out of date.
    Stale,
    /// An upstream stage that may run (it waits on its own upstream).
    MayRun,
}

/// One reason a fingerprint differs from the recorded one (or, with the parts that are not in
/// a fingerprint, a stage is out of date): typed for machines (`status --json`'s `changes`),
/// and in words (`text`, what `status` prints).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    pub part: Part,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub how: Option<How>,
    /// The item: a param, env, tool or upstream stage name, or a `with` key path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The item when it is a file: a dep or an output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The recorded value, as `text` shows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    /// The value now, as `text` shows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
    #[serde(skip)]
    pub text: String,
}

impl Change {
    /// A change of `part` described only in words (the typed fields are filled by the caller).
    pub fn new(part: Part, text: String) -> Change {
        Change {
            part,
            how: None,
            name: None,
            path: None,
            old: None,
            new: None,
            text,
        }
    }

    fn how(mut self, how: How) -> Change {
        self.how = Some(how);
        self
    }

    fn name(mut self, name: &str) -> Change {
        self.name = Some(name.to_string());
        self
    }

    fn path(mut self, path: &str) -> Change {
        self.path = Some(path.to_string());
        self
    }

    fn values(mut self, old: Option<String>, new: Option<String>) -> Change {
        (self.old, self.new) = (old, new);
        self
    }
}

/// One item of a fingerprint, as [`Fingerprint::walk`] visits it.
#[derive(Clone, Copy)]
enum Item<'a> {
    Action(&'a str),
    With(&'a Json),
    Param(&'a str, &'a Json),
    Dep(&'a str, &'a str),
    Out(&'a str),
    /// `None`: the variable is unset (not the same as set to "").
    Env(&'a str, Option<&'a str>),
    Tool(&'a str, &'a str),
    Container(&'a str, &'a str),
}

/// Where a walk goes: [`KeySink`] hashes it (deciding), [`Record`] keeps it (explaining).
trait Sink<'a> {
    fn item(&mut self, item: Item<'a>);
}

/// The terse sink: blake3 over a length-prefixed encoding of every item.
struct KeySink(blake3::Hasher);

impl KeySink {
    fn field(&mut self, tag: &str, bytes: &[u8]) {
        let h = &mut self.0;
        h.update(&(tag.len() as u64).to_le_bytes());
        h.update(tag.as_bytes());
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
}

impl<'a> Sink<'a> for KeySink {
    fn item(&mut self, item: Item<'a>) {
        match item {
            Item::Action(a) => self.field("action", a.as_bytes()),
            Item::With(w) => self.field("with", canonical_json(w).as_bytes()),
            Item::Param(k, v) => {
                self.field("param", k.as_bytes());
                self.field("value", canonical_json(v).as_bytes());
            }
            Item::Dep(p, h) => {
                self.field("dep", p.as_bytes());
                self.field("hash", h.as_bytes());
            }
            Item::Out(o) => self.field("out", o.as_bytes()),
            Item::Env(k, v) => {
                self.field("env", k.as_bytes());
                match v {
                    Some(v) => self.field("set", v.as_bytes()),
                    None => self.field("unset", b""),
                }
            }
            Item::Tool(t, id) => {
                self.field("tool", t.as_bytes());
                self.field("id", id.as_bytes());
            }
            Item::Container(image, digest) => {
                self.field("container", image.as_bytes());
                self.field("digest", digest.as_bytes());
            }
        }
    }
}

/// One recorded item: its part, its name within the part (param name, dep or output path;
/// empty for the action and `with:`), its value exactly as the key encodes it, and the JSON
/// value itself where there is one (for readable explanations).
struct Entry<'a> {
    part: Part,
    name: &'a str,
    value: String,
    json: Option<&'a Json>,
}

/// The explaining sink. Two fingerprints have equal keys exactly when their records hold
/// the same (part, name, value) sequence: the key encodes each of these, injectively, and
/// nothing else.
#[derive(Default)]
struct Record<'a>(Vec<Entry<'a>>);

impl<'a> Sink<'a> for Record<'a> {
    fn item(&mut self, item: Item<'a>) {
        let (part, name, value, json) = match item {
            Item::Action(a) => (Part::Action, "", a.to_string(), None),
            Item::With(w) => (Part::With, "", canonical_json(w), Some(w)),
            Item::Param(k, v) => (Part::Param, k, canonical_json(v), Some(v)),
            Item::Dep(p, h) => (Part::Dep, p, h.to_string(), None),
            Item::Out(o) => (Part::Outs, o, String::new(), None),
            // "unset" cannot be confused with a value: values are quoted.
            Item::Env(k, v) => (
                Part::Env,
                k,
                v.map_or("unset".into(), |v| format!("{v:?}")),
                None,
            ),
            Item::Tool(t, id) => (Part::Tool, t, id.to_string(), None),
            Item::Container(image, digest) => (Part::Container, image, digest.to_string(), None),
        };
        self.0.push(Entry {
            part,
            name,
            value,
            json,
        });
    }
}

impl<'a> Record<'a> {
    fn part(&self, part: Part) -> Vec<&Entry<'a>> {
        self.0.iter().filter(|e| e.part == part).collect()
    }
}

impl Fingerprint {
    /// The walk: every item that determines the stage's result, in a fixed order. The key and
    /// the explanation are both computed from it, and from nothing else.
    fn walk<'a>(&'a self, sink: &mut impl Sink<'a>) {
        sink.item(Item::Action(&self.action));
        sink.item(Item::With(&self.with));
        for (k, v) in &self.params {
            sink.item(Item::Param(k, v));
        }
        for (p, h) in &self.deps {
            sink.item(Item::Dep(p, h));
        }
        let mut outs: Vec<&str> = self.outs.iter().map(String::as_str).collect();
        outs.sort_unstable();
        for o in outs {
            sink.item(Item::Out(o));
        }
        // Declared environment, after everything else and only when declared: a stage that
        // declares none hashes exactly the bytes it hashed before these parts existed.
        for (k, v) in &self.env {
            sink.item(Item::Env(k, v.as_deref()));
        }
        for (t, id) in &self.tools {
            sink.item(Item::Tool(t, id));
        }
        if let Some(c) = &self.container {
            sink.item(Item::Container(&c.image, &c.digest));
        }
    }

    /// The stage key.
    pub fn key(&self) -> String {
        let mut sink = KeySink(blake3::Hasher::new());
        sink.field("encoding", ENCODING_VERSION.as_bytes());
        self.walk(&mut sink);
        sink.0.finalize().to_hex().to_string()
    }

    /// Why `self` (now) differs from `old` (recorded), in words. Empty exactly when the two
    /// have the same key.
    pub fn diff(&self, old: &Fingerprint) -> Vec<String> {
        self.changes(old).into_iter().map(|c| c.text).collect()
    }

    /// [`diff`](Self::diff), each reason with the part of the fingerprint it concerns.
    pub fn changes(&self, old: &Fingerprint) -> Vec<Change> {
        let (mut new_rec, mut old_rec) = (Record::default(), Record::default());
        self.walk(&mut new_rec);
        old.walk(&mut old_rec);
        let mut why = Vec::new();
        for part in [
            Part::Action,
            Part::With,
            Part::Param,
            Part::Dep,
            Part::Outs,
            Part::Env,
            Part::Tool,
            Part::Container,
        ] {
            let (n, o) = (new_rec.part(part), old_rec.part(part));
            let same = n.len() == o.len()
                && n.iter()
                    .zip(&o)
                    .all(|(a, b)| a.name == b.name && a.value == b.value);
            if !same {
                // Each arm says something whenever its entries differ, so a part whose
                // entries differ (and only such a part) is explained.
                why.extend(explain(part, &n, &o));
            }
        }
        why
    }
}

/// The reasons for one part whose entries differ (`n`: now, `o`: recorded).
fn explain(part: Part, n: &[&Entry], o: &[&Entry]) -> Vec<Change> {
    let value = |es: &[&Entry]| es.first().map(|e| e.value.clone()).unwrap_or_default();
    let mut why = Vec::new();
    let change = |text: String| Change::new(part, text);
    match part {
        Part::Action => {
            let (a, b) = (value(n), value(o));
            let text = match (a.strip_prefix("uses: "), b.strip_prefix("uses: ")) {
                (Some(x), Some(y)) => format!("code version changed: {x} (was {y})"),
                _ => format!("command changed: {a} (was {b})"),
            };
            why.push(change(text).how(How::Changed).values(Some(b), Some(a)));
        }
        Part::With => {
            let json = |es: &[&Entry]| es.first().and_then(|e| e.json).cloned().unwrap_or_default();
            let mut changed = Vec::new();
            diff_json("", &json(o), &json(n), &mut changed);
            why.extend(changed.into_iter().map(|c| Change {
                part,
                text: format!("parameter {}", c.text),
                ..c
            }));
        }
        Part::Param | Part::Dep => {
            // From maps: names are unique and sorted on both sides.
            let by_name = |es: &[&Entry<'_>]| -> BTreeMap<String, (String, Json)> {
                es.iter()
                    .map(|e| {
                        (
                            e.name.to_string(),
                            (e.value.clone(), e.json.cloned().unwrap_or_default()),
                        )
                    })
                    .collect()
            };
            let (nm, om) = (by_name(n), by_name(o));
            let what = if part == Part::Param { "param" } else { "dep" };
            // A param is named; a dep is a path, whose old and new values are content hashes.
            let item = |c: Change, k: &str| {
                if part == Part::Param {
                    c.name(k)
                } else {
                    c.path(k)
                }
            };
            for (k, (v, vj)) in &nm {
                match om.get(k) {
                    None if part == Part::Param => why.push(
                        change(format!("param {k} added: {}", show(vj)))
                            .how(How::Added)
                            .name(k)
                            .values(None, Some(show(vj))),
                    ),
                    None => why.push(
                        change(format!("dep {k} added"))
                            .how(How::Added)
                            .path(k)
                            .values(None, Some(v.clone())),
                    ),
                    Some((ov, oj)) if ov != v => why.push(if part == Part::Param {
                        // `"1"` and `1` read alike unquoted; then show them as JSON.
                        let (a, b) = match (show(oj), show(vj)) {
                            (a, b) if a == b => (ov.clone(), v.clone()),
                            shown => shown,
                        };
                        change(format!("param {k} changed: {a} -> {b}"))
                            .how(How::Changed)
                            .name(k)
                            .values(Some(a), Some(b))
                    } else {
                        change(format!("dep {k} changed"))
                            .how(How::Changed)
                            .path(k)
                            .values(Some(ov.clone()), Some(v.clone()))
                    }),
                    _ => {}
                }
            }
            for (k, (ov, oj)) in om.iter().filter(|(k, _)| !nm.contains_key(*k)) {
                let old = if part == Part::Param {
                    show(oj)
                } else {
                    ov.clone()
                };
                why.push(
                    item(change(format!("{what} {k} removed")), k)
                        .how(How::Removed)
                        .values(Some(old), None),
                );
            }
        }
        Part::Env | Part::Tool => {
            let by_name = |es: &[&Entry<'_>]| -> BTreeMap<String, String> {
                es.iter()
                    .map(|e| (e.name.to_string(), e.value.clone()))
                    .collect()
            };
            let (nm, om) = (by_name(n), by_name(o));
            let what = if part == Part::Env { "env" } else { "tool" };
            for (k, v) in &nm {
                match om.get(k) {
                    None => why.push(
                        change(format!("{what} {k} added: {}", short(v)))
                            .how(How::Added)
                            .name(k)
                            .values(None, Some(short(v))),
                    ),
                    Some(ov) if ov != v => why.push(
                        change(format!("{what} {k} changed: {} -> {}", short(ov), short(v)))
                            .how(How::Changed)
                            .name(k)
                            .values(Some(short(ov)), Some(short(v))),
                    ),
                    _ => {}
                }
            }
            for (k, ov) in om.iter().filter(|(k, _)| !nm.contains_key(*k)) {
                why.push(
                    change(format!("{what} {k} removed"))
                        .how(How::Removed)
                        .name(k)
                        .values(Some(short(ov)), None),
                );
            }
        }
        Part::Container => {
            let show = |es: &[&Entry]| {
                es.first()
                    .map(|e| format!("{} ({})", e.name, short(&e.value)))
            };
            let (a, b) = (show(n), show(o));
            let how = match (&a, &b) {
                (Some(_), None) => How::Added,
                (None, Some(_)) => How::Removed,
                _ => How::Changed,
            };
            let text = format!(
                "container changed: {} (was {})",
                a.as_deref().unwrap_or("none"),
                b.as_deref().unwrap_or("none")
            );
            why.push(change(text).how(how).values(b, a));
        }
        Part::Outs => {
            let names = |es: &[&Entry]| es.iter().map(|e| e.name).collect::<Vec<_>>().join(", ");
            why.push(
                change(format!(
                    "declared outputs changed: [{}] (were [{}])",
                    names(n),
                    names(o)
                ))
                .how(How::Changed)
                .values(Some(names(o)), Some(names(n))),
            );
        }
        // Not parts of a fingerprint: never walked.
        Part::NeverRun | Part::Encoding | Part::Output | Part::Upstream | Part::Error => {}
    }
    why
}

/// A value for an explanation: long ones (hashes, command output) cut to a readable length.
fn short(v: &str) -> String {
    let v = v.trim();
    match v.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &v[..i]),
        None => v.to_string(),
    }
}

fn show(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => canonical_json(other),
    }
}

/// `a.b: 1 -> 2` lines for the leaves that differ.
fn diff_json(path: &str, old: &Json, new: &Json, out: &mut Vec<Change>) {
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
                    (None, Some(y)) => out.push(
                        Change::new(Part::With, format!("{p} added: {}", show(y)))
                            .how(How::Added)
                            .name(&p)
                            .values(None, Some(show(y))),
                    ),
                    (Some(x), None) => out.push(
                        Change::new(Part::With, format!("{p} removed"))
                            .how(How::Removed)
                            .name(&p)
                            .values(Some(show(x)), None),
                    ),
                    (None, None) => {}
                }
            }
        }
        (a, b) if canonical_json(a) != canonical_json(b) => {
            let name = if path.is_empty() { "with" } else { path };
            out.push(
                Change::new(
                    Part::With,
                    format!("{name} changed: {} -> {}", show(a), show(b)),
                )
                .how(How::Changed)
                .name(name)
                .values(Some(show(a)), Some(show(b))),
            );
        }
        _ => {}
    }
}

/// JSON with object keys sorted at every level, so equal values encode equally.
pub(crate) fn canonical_json(v: &Json) -> String {
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
            ..Default::default()
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

    /// The v1 key as it was computed before the walk existed, written out by hand: the walk
    /// must hash exactly these bytes, or every recorded stage would rerun after an upgrade.
    fn v1_key(f: &Fingerprint) -> String {
        let mut h = blake3::Hasher::new();
        let mut field = |tag: &str, bytes: &[u8]| {
            h.update(&(tag.len() as u64).to_le_bytes());
            h.update(tag.as_bytes());
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        field("encoding", b"repro-key-v1");
        field("action", f.action.as_bytes());
        field("with", canonical_json(&f.with).as_bytes());
        for (k, v) in &f.params {
            field("param", k.as_bytes());
            field("value", canonical_json(v).as_bytes());
        }
        for (p, hash) in &f.deps {
            field("dep", p.as_bytes());
            field("hash", hash.as_bytes());
        }
        let mut outs = f.outs.clone();
        outs.sort();
        for o in &outs {
            field("out", o.as_bytes());
        }
        h.finalize().to_hex().to_string()
    }

    #[test]
    fn keys_are_unchanged_from_v1() {
        let mut f = fp();
        f.with = json!({"b": [1, 2], "a": {"y": null, "x": "s"}});
        f.outs = vec!["z".into(), "a".into()];
        assert_eq!(f.key(), v1_key(&f));
        assert_eq!(fp().key(), v1_key(&fp()));
    }

    /// Each single change to one part of the fingerprint: the explanation is non-empty exactly
    /// when the key changes, and names only that part.
    #[test]
    fn explanation_lists_exactly_the_parts_whose_change_changes_the_key() {
        let mut base = fp();
        base.with = json!({"opt": {"lr": 0.1, "m": 0.9}, "n": [1, 2]});
        base.params.insert("seed".into(), json!("a"));
        base.deps.insert("b.csv".into(), "bb".into());
        base.outs = vec!["m.bin".into(), "log.txt".into()];
        base.env.insert("SEED".into(), Some(String::new()));
        base.tools.insert("cmd: torch".into(), "2.5".into());
        type Edit = fn(&mut Fingerprint);
        let edits: Vec<(&str, Option<Part>, Edit)> = vec![
            ("action", Some(Part::Action), |f| {
                f.action = "cmd: other".into()
            }),
            ("kind version", Some(Part::Action), |f| {
                f.action = "uses: x@2".into()
            }),
            ("with leaf", Some(Part::With), |f| {
                f.with["opt"]["lr"] = json!(0.2)
            }),
            ("with key added", Some(Part::With), |f| {
                f.with["new"] = json!(1)
            }),
            ("with list", Some(Part::With), |f| {
                f.with["n"] = json!([2, 1])
            }),
            ("with int vs float", Some(Part::With), |f| {
                f.with["opt"]["m"] = json!(1)
            }),
            ("with reordered", None, |f| {
                f.with =
                    serde_json::from_str(r#"{"n": [1, 2], "opt": {"m": 0.9, "lr": 0.1}}"#).unwrap()
            }),
            ("param value", Some(Part::Param), |f| {
                f.params.insert("lr".into(), json!(0.5));
            }),
            ("param string vs number", Some(Part::Param), |f| {
                f.params.insert("lr".into(), json!("0.1"));
            }),
            ("param added", Some(Part::Param), |f| {
                f.params.insert("new".into(), json!(null));
            }),
            ("param removed", Some(Part::Param), |f| {
                f.params.remove("seed");
            }),
            ("dep hash", Some(Part::Dep), |f| {
                f.deps.insert("b.csv".into(), "cc".into());
            }),
            ("dep added", Some(Part::Dep), |f| {
                f.deps.insert("c.csv".into(), "cc".into());
            }),
            ("dep removed", Some(Part::Dep), |f| {
                f.deps.remove("data.csv");
            }),
            ("out added", Some(Part::Outs), |f| f.outs.push("x".into())),
            ("out duplicated", Some(Part::Outs), |f| {
                f.outs.push("m.bin".into())
            }),
            ("outs reordered", None, |f| f.outs.reverse()),
            ("env declared", Some(Part::Env), |f| {
                f.env.insert("OMP".into(), Some("1".into()));
            }),
            ("env unset vs empty", Some(Part::Env), |f| {
                f.env.insert("SEED".into(), None);
            }),
            ("env value", Some(Part::Env), |f| {
                f.env.insert("SEED".into(), Some("2".into()));
            }),
            ("tool added", Some(Part::Tool), |f| {
                f.tools.insert("file: req.lock".into(), "ab".into());
            }),
            ("tool changed", Some(Part::Tool), |f| {
                f.tools.insert("cmd: torch".into(), "2.6".into());
            }),
            ("container added", Some(Part::Container), |f| {
                f.container = Some(ContainerId {
                    image: "bb".into(),
                    digest: "sha256:1".into(),
                })
            }),
        ];
        for (what, part, edit) in edits {
            let mut now = base.clone();
            edit(&mut now);
            let changes = now.changes(&base);
            assert_eq!(
                now.key() != base.key(),
                !changes.is_empty(),
                "{what}: key changed = {}, explanation {changes:?}",
                now.key() != base.key()
            );
            assert!(
                changes.iter().all(|c| Some(c.part) == part),
                "{what}: expected only {part:?}, got {changes:?}"
            );
            assert_eq!(part.is_some(), !changes.is_empty(), "{what}");
        }
    }

    fn arb_json() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::from),
            (0i64..3).prop_map(Json::from),
            prop_oneof![Just(0.5f64), Just(1.0f64)].prop_map(Json::from),
            "[ab]{0,2}".prop_map(Json::from),
        ];
        leaf.prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Json::from),
                proptest::collection::btree_map("[ab]", inner, 0..3)
                    .prop_map(|m| Json::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_fingerprint() -> impl Strategy<Value = Fingerprint> {
        (
            prop_oneof![
                Just("cmd: a"),
                Just("cmd: b"),
                Just("uses: k@1"),
                Just("uses: k@2")
            ],
            arb_json(),
            proptest::collection::btree_map("[ab]{1,2}", arb_json(), 0..3),
            proptest::collection::btree_map("[ab]{1,2}", "[xy]{0,2}", 0..3),
            proptest::collection::vec("[ab]{1,2}", 0..3),
            proptest::collection::btree_map("[ab]", proptest::option::of("[ab]{0,1}"), 0..2),
            proptest::collection::btree_map("[ab]", "[xy]{0,1}", 0..2),
            proptest::option::of(("[ab]", "[xy]")),
        )
            .prop_map(
                |(action, with, params, deps, outs, env, tools, container)| Fingerprint {
                    action: action.to_string(),
                    with,
                    params,
                    deps,
                    outs,
                    env,
                    tools,
                    container: container.map(|(image, digest)| ContainerId { image, digest }),
                },
            )
    }

    #[test]
    fn a_change_says_which_part_and_how_typed() {
        let mut old = Fingerprint::default();
        old.params.insert("lr".into(), serde_json::json!(0.005));
        old.deps.insert("data.csv".into(), "aaa".into());
        let mut new = old.clone();
        new.params.insert("lr".into(), serde_json::json!(0.004));
        new.deps.insert("data.csv".into(), "bbb".into());
        let json = serde_json::to_value(new.changes(&old)).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"part": "param", "how": "changed", "name": "lr", "old": "0.005", "new": "0.004"},
                {"part": "dep", "how": "changed", "path": "data.csv", "old": "aaa", "new": "bbb"},
            ])
        );
        assert_eq!(
            new.diff(&old),
            ["param lr changed: 0.005 -> 0.004", "dep data.csv changed"]
        );
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Over random pairs (small alphabets, so that equal parts are common): the
        /// explanation is empty exactly when the keys are equal, and every part it names
        /// differs in what the key encodes.
        #[test]
        fn explanation_is_empty_exactly_when_keys_are_equal(a in arb_fingerprint(), b in arb_fingerprint()) {
            let changes = a.changes(&b);
            prop_assert_eq!(a.key() == b.key(), changes.is_empty(), "{:?}", changes);
            for c in &changes {
                let mut a2 = a.clone();
                // Taking that part from `b` must change `a`'s key: the part really differs.
                match c.part {
                    Part::Action => a2.action = b.action.clone(),
                    Part::With => a2.with = b.with.clone(),
                    Part::Param => a2.params = b.params.clone(),
                    Part::Dep => a2.deps = b.deps.clone(),
                    Part::Outs => a2.outs = b.outs.clone(),
                    Part::Env => a2.env = b.env.clone(),
                    Part::Tool => a2.tools = b.tools.clone(),
                    Part::Container => a2.container = b.container.clone(),
                    other => prop_assert!(false, "not a fingerprint part: {:?}", other),
                }
                prop_assert_ne!(a2.key(), a.key(), "{:?}", c);
            }
        }
    }
}
