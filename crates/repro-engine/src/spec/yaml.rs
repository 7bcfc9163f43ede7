//! A YAML tree that remembers where every node came from.
//!
//! serde deserialisation loses positions, but every error about a pipeline must name the file,
//! line and column and quote the line. So pipeline files are parsed with yaml-rust2's event
//! parser into [`Node`]s carrying a [`Mark`], and the spec code walks that tree itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::error::SpecError;

/// A source file, shared by all the marks that point into it.
#[derive(Debug)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

impl Source {
    /// The text of a 1-based line, for quoting in errors.
    pub fn line(&self, line: usize) -> &str {
        self.text.lines().nth(line.saturating_sub(1)).unwrap_or("")
    }
}

/// Where a node starts: file, 1-based line and column.
#[derive(Clone, Debug)]
pub struct Mark {
    pub source: Arc<Source>,
    pub line: usize,
    pub col: usize,
}

impl Mark {
    pub fn path(&self) -> &Path {
        &self.source.path
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Value {
    Null,
    /// A scalar; `plain` is false for quoted scalars (so `"1"` stays a string).
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Mapping, in source order (YAML keys here are always scalars).
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub value: Value,
    pub mark: Mark,
}

impl Node {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    pub(crate) fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub(crate) fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// Look up a key of a mapping.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// A short word for the node's type, for error messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// Convert to JSON, typing plain scalars as YAML 1.2 core does (bool, int, float, null).
    pub(crate) fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Scalar { text, plain } => {
                if *plain {
                    scalar_to_json(text)
                } else {
                    serde_json::Value::String(text.clone())
                }
            }
            Value::Seq(items) => items.iter().map(Node::to_json).collect(),
            Value::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// Type a plain scalar (YAML 1.2 core schema).
pub(crate) fn scalar_to_json(text: &str) -> serde_json::Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return serde_json::Value::Null,
        "true" | "True" | "TRUE" => return serde_json::Value::Bool(true),
        "false" | "False" | "FALSE" => return serde_json::Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = text.parse::<i64>() {
        return serde_json::Value::from(i);
    }
    let looks_numeric = text
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        && text.chars().any(|c| c.is_ascii_digit());
    if looks_numeric
        && let Ok(f) = text.parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        return serde_json::Value::Number(n);
    }
    serde_json::Value::String(text.to_string())
}

/// At most this many nodes may be created by copying anchors (`*name`): real pipelines use a
/// handful, while a few hundred bytes of nested aliases could otherwise ask for billions.
pub(crate) const MAX_ALIAS_NODES: usize = 100_000;

/// Parse a file's bytes (the path is used for messages): they must be UTF-8, an initial BOM
/// is dropped, and control characters YAML does not allow are refused — yaml-rust2 would
/// otherwise stop reading at a NUL and silently drop the rest of the file.
pub(crate) fn parse_bytes(path: &Path, bytes: Vec<u8>) -> Result<Node, SpecError> {
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let good = e.utf8_error().valid_up_to();
            let bad = e.as_bytes()[good];
            let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let mark = mark_of_offset(path, text, &String::from_utf8_lossy(&e.as_bytes()[..good]));
            return Err(SpecError::at(
                &mark,
                format!("the file is not valid UTF-8 (byte 0x{bad:02X})"),
            )
            .note("save it as UTF-8"));
        }
    };
    parse_str(path, text)
}

/// A mark for the character just after `prefix` (a prefix of `text`).
fn mark_of_offset(path: &Path, text: String, prefix: &str) -> Mark {
    let line = prefix.matches('\n').count() + 1;
    let col = prefix.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    Mark {
        source: Arc::new(Source {
            path: path.to_path_buf(),
            text,
        }),
        line,
        col,
    }
}

/// The first character YAML forbids in a file (c-printable), with its byte offset.
fn forbidden_char(text: &str) -> Option<(usize, char)> {
    text.char_indices().find(|&(_, c)| {
        let u = c as u32;
        (u < 0x20 && !matches!(c, '\t' | '\n' | '\r'))
            || u == 0x7F
            || ((0x80..=0x9F).contains(&u) && u != 0x85)
            || matches!(u, 0xFFFE | 0xFFFF)
    })
}

/// Parse one YAML document held in memory (the path is used for messages).
pub(crate) fn parse_str(path: &Path, mut text: String) -> Result<Node, SpecError> {
    // A BOM is how some editors mark UTF-8; it is not part of the first key.
    if text.starts_with('\u{FEFF}') {
        text.drain(..'\u{FEFF}'.len_utf8());
    }
    if let Some((at, c)) = forbidden_char(&text) {
        let prefix = text[..at].to_string();
        let name = match c {
            '\0' => "NUL".to_string(),
            _ => format!("U+{:04X}", c as u32),
        };
        return Err(SpecError::at(
            &mark_of_offset(path, text, &prefix),
            format!("control character {name} is not allowed in a YAML file"),
        )
        .note("a pipeline file is text: remove the character (write it as an escape in a quoted string if it is meant)"));
    }
    let source = Arc::new(Source {
        path: path.to_path_buf(),
        text,
    });
    let mut builder = Builder {
        source: source.clone(),
        stack: Vec::new(),
        root: None,
        anchors: Vec::new(),
        alias_nodes: 0,
        documents: 0,
        error: None,
    };
    let mut parser = Parser::new_from_str(&source.text);
    // Read the whole stream (multi = true) so that a second document is seen and refused.
    let parsed = parser.load(&mut builder, true);
    if let Some(e) = builder.error {
        return Err(e);
    }
    if let Err(e) = parsed {
        let m = e.marker();
        let mark = Mark {
            source: source.clone(),
            line: m.line(),
            col: m.col() + 1,
        };
        let mut err = SpecError::at(&mark, format!("invalid YAML: {}", e.info()));
        if source.line(mark.line).contains("${") {
            err = err.note("inside [ ] or { }, quote values that contain ${…}: [\"out/${item}\"]");
        }
        return Err(err);
    }
    Ok(builder.root.unwrap_or(Node {
        value: Value::Null,
        mark: Mark {
            source,
            line: 1,
            col: 1,
        },
    }))
}

/// An open collection: the node being filled, its anchor id (0 = none) and its size so far
/// in nodes (itself included). A mapping also holds its pending key and the keys it has.
enum Frame {
    Seq(Node, usize, usize),
    Map(MapFrame),
}

struct MapFrame {
    node: Node,
    anchor: usize,
    size: usize,
    pending: Option<Node>,
    /// Keys seen so far → line, to refuse a duplicate (YAML says keys are unique).
    keys: HashMap<String, usize>,
}

struct Builder {
    source: Arc<Source>,
    stack: Vec<Frame>,
    root: Option<Node>,
    /// Anchored nodes with their sizes, for aliases.
    anchors: Vec<(usize, Node, usize)>,
    /// Nodes created so far by copying anchors.
    alias_nodes: usize,
    documents: usize,
    /// The first problem; later events are ignored.
    error: Option<SpecError>,
}

impl Builder {
    fn mark(&self, m: Marker) -> Mark {
        Mark {
            source: self.source.clone(),
            line: m.line(),
            col: m.col() + 1,
        }
    }

    /// The keys (and list indices) leading to the collection being built: `stages.train`.
    fn path(&self) -> String {
        let parents = &self.stack[..self.stack.len().saturating_sub(1)];
        let parts: Vec<String> = parents
            .iter()
            .map(|f| match f {
                Frame::Seq(n, _, _) => n.as_seq().map_or(0, <[Node]>::len).to_string(),
                Frame::Map(m) => m
                    .pending
                    .as_ref()
                    .and_then(Node::as_str)
                    .unwrap_or("?")
                    .to_string(),
            })
            .collect();
        parts.join(".")
    }

    /// A key already present in the mapping being built, refused: YAML keys are unique, and
    /// keeping either one silently would run something the author did not mean.
    fn duplicate_key(&self, node: &Node) -> Option<SpecError> {
        let Some(Frame::Map(map)) = self.stack.last() else {
            return None;
        };
        let key = node.as_str().filter(|_| map.pending.is_none())?;
        let first = map.keys.get(key)?;
        let path = self.path();
        let within = if path.is_empty() {
            String::new()
        } else {
            format!(" in `{path}`")
        };
        Some(
            SpecError::at(&node.mark, format!("duplicate key '{key}'{within}")).note(format!(
                "it is already set at line {first}; remove or rename one of the two"
            )),
        )
    }

    /// Add a finished node (of `size` nodes) to the collection being built.
    fn push_value(&mut self, node: Node, anchor: usize, size: usize) {
        if let Some(e) = self.duplicate_key(&node) {
            self.error = Some(e);
            return;
        }
        if anchor > 0 {
            self.anchors.push((anchor, node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq(seq, _, total)) => {
                *total += size;
                if let Value::Seq(items) = &mut seq.value {
                    items.push(node);
                }
            }
            Some(Frame::Map(map)) => {
                map.size += size;
                match map.pending.take() {
                    None => {
                        if let Some(key) = node.as_str() {
                            map.keys.insert(key.to_string(), node.mark.line);
                        }
                        map.pending = Some(node);
                    }
                    Some(key) => {
                        if let Value::Map(entries) = &mut map.node.value {
                            entries.push((key, node));
                        }
                    }
                }
            }
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, marker: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    self.error = Some(
                        SpecError::at(
                            &self.mark(marker),
                            "a second YAML document (after `---`): a pipeline file holds one",
                        )
                        .note("everything after the first document would be ignored; merge it into the first or delete it"),
                    );
                }
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = matches!(style, TScalarStyle::Plain);
                let value = if plain && matches!(text.as_str(), "~" | "null" | "") {
                    Value::Null
                } else {
                    Value::Scalar { text, plain }
                };
                let node = Node {
                    value,
                    mark: self.mark(marker),
                };
                self.push_value(node, anchor, 1);
            }
            Event::SequenceStart(anchor, _) => {
                let node = Node {
                    value: Value::Seq(Vec::new()),
                    mark: self.mark(marker),
                };
                self.stack.push(Frame::Seq(node, anchor, 1));
            }
            Event::MappingStart(anchor, _) => {
                let node = Node {
                    value: Value::Map(Vec::new()),
                    mark: self.mark(marker),
                };
                self.stack.push(Frame::Map(MapFrame {
                    node,
                    anchor,
                    size: 1,
                    pending: None,
                    keys: HashMap::new(),
                }));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(frame) = self.stack.pop() {
                    let (node, anchor, size) = match frame {
                        Frame::Seq(n, a, s) => (n, a, s),
                        Frame::Map(m) => (m.node, m.anchor, m.size),
                    };
                    self.push_value(node, anchor, size);
                }
            }
            Event::Alias(id) => {
                let found = self
                    .anchors
                    .iter()
                    .rev()
                    .find(|(a, _, _)| *a == id)
                    .map(|(_, n, size)| (n, *size));
                let Some((node, size)) = found else {
                    let node = Node {
                        value: Value::Null,
                        mark: self.mark(marker),
                    };
                    self.push_value(node, 0, 1);
                    return;
                };
                // Check before copying, so an alias bomb fails fast instead of filling memory.
                self.alias_nodes = self.alias_nodes.saturating_add(size);
                if self.alias_nodes > MAX_ALIAS_NODES {
                    self.error = Some(
                        SpecError::at(
                            &self.mark(marker),
                            format!(
                                "YAML aliases (`*name`) expand to more than {MAX_ALIAS_NODES} nodes"
                            ),
                        )
                        .note("each alias copies its anchor; nested aliases multiply (an \"alias bomb\"): write the values out, or use fewer levels"),
                    );
                    return;
                }
                let node = node.clone();
                self.push_value(node, 0, size);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_point_at_keys_and_values() {
        let text = "stages:\n  a:\n    cmd: echo hi\n    deps: [x, y]\n".to_string();
        let root = parse_str(Path::new("p.yaml"), text).unwrap();
        let a = root.get("stages").unwrap().get("a").unwrap();
        let cmd = a.get("cmd").unwrap();
        assert_eq!((cmd.mark.line, cmd.mark.col), (3, 10));
        let deps = a.get("deps").unwrap().as_seq().unwrap();
        assert_eq!(deps[1].as_str(), Some("y"));
        assert_eq!((deps[1].mark.line, deps[1].mark.col), (4, 15));
    }

    #[test]
    fn scalars_are_typed_like_yaml() {
        let root = parse_str(
            Path::new("p.yaml"),
            "a: 1\nb: '1'\nc: 1e-3\nd: true\ne: x\n".into(),
        )
        .unwrap();
        assert_eq!(
            root.to_json(),
            serde_json::json!({"a": 1, "b": "1", "c": 0.001, "d": true, "e": "x"})
        );
    }

    #[test]
    fn anchors_and_aliases_resolve() {
        let root = parse_str(Path::new("p.yaml"), "a: &x [1, 2]\nb: *x\n".into()).unwrap();
        assert_eq!(
            root.to_json(),
            serde_json::json!({"a": [1, 2], "b": [1, 2]})
        );
    }

    fn parse_err(text: &str) -> String {
        parse_bytes(Path::new("p.yaml"), text.as_bytes().to_vec())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_bom_is_dropped() {
        let root = parse_str(Path::new("p.yaml"), "\u{FEFF}stages: {a: 1}\n".into()).unwrap();
        assert!(root.get("stages").is_some());
        assert_eq!(root.get("stages").unwrap().mark.col, 9);
    }

    #[test]
    fn control_characters_are_refused_with_their_position() {
        let e = parse_err("stages:\n  a: {cmd: echo}\n\0  b: {cmd: echo}\n");
        assert!(e.contains("control character NUL"), "{e}");
        assert!(e.contains("p.yaml:3:1"), "{e}");
        let e = parse_err("a: x\u{1b}[0m\n");
        assert!(e.contains("U+001B") && e.contains("p.yaml:1:5"), "{e}");
        let e = parse_bytes(Path::new("p.yaml"), b"a: 1\nb: caf\xe9\n".to_vec())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not valid UTF-8 (byte 0xE9)") && e.contains("p.yaml:2:7"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_level() {
        let e = parse_err("stages:\n  a:\n    cmd: echo 1\n    cmd: echo 2\n");
        assert!(e.contains("duplicate key 'cmd' in `stages.a`"), "{e}");
        assert!(e.contains("p.yaml:4:5") && e.contains("line 3"), "{e}");
        let e = parse_err("vars: {x: 1, x: 2}\nstages: {}\n");
        assert!(
            e.contains("duplicate key 'x'") && e.contains("p.yaml:1:14"),
            "{e}"
        );
        let e = parse_err("stages: {}\nstages: {}\n");
        assert!(e.contains("duplicate key 'stages'"), "{e}");
        // The same key in different mappings is fine.
        parse_str(Path::new("p"), "a: {x: 1}\nb: {x: 1}\n".into()).unwrap();
    }

    #[test]
    fn a_second_document_is_refused() {
        let e = parse_err("stages: {a: {cmd: echo}}\n---\nstages: {b: {cmd: echo}}\n");
        assert!(
            e.contains("second YAML document") && e.contains("p.yaml:2:1"),
            "{e}"
        );
        // One document with explicit markers is fine.
        parse_str(Path::new("p"), "---\na: 1\n...\n".into()).unwrap();
    }

    #[test]
    fn an_alias_bomb_fails_fast() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
        }
        let t = std::time::Instant::now();
        let e = parse_err(&text);
        assert!(t.elapsed().as_secs() < 2, "{:?}", t.elapsed());
        assert!(e.contains("expand to more than 100000 nodes"), "{e}");
        // A few levels are an ordinary use of aliases.
        let small: String = text.lines().take(4).map(|l| format!("{l}\n")).collect();
        let root = parse_str(Path::new("p"), small).unwrap();
        assert_eq!(root.get("a3").unwrap().as_seq().unwrap().len(), 10);
    }
}
