//! A YAML tree that remembers where every node came from.
//!
//! serde deserialisation loses positions, but every error about a pipeline must name the file,
//! line and column and quote the line. So pipeline files are parsed with yaml-rust2's event
//! parser into [`Node`]s carrying a [`Mark`], and the spec code walks that tree itself.

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
pub enum Value {
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
pub struct Node {
    pub value: Value,
    pub mark: Mark,
}

impl Node {
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// Look up a key of a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// A short word for the node's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Scalar { .. } => "a scalar",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// Convert to JSON, typing plain scalars as YAML 1.2 core does (bool, int, float, null).
    pub fn to_json(&self) -> serde_json::Value {
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
pub fn scalar_to_json(text: &str) -> serde_json::Value {
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

/// Parse one YAML document from a file.
pub fn parse_file(path: &Path) -> Result<Node, SpecError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SpecError::plain(format!("cannot read {}: {e}", path.display())))?;
    parse_str(path, text)
}

/// Parse one YAML document held in memory (the path is used for messages).
pub fn parse_str(path: &Path, text: String) -> Result<Node, SpecError> {
    let source = Arc::new(Source {
        path: path.to_path_buf(),
        text,
    });
    let mut builder = Builder {
        source: source.clone(),
        stack: Vec::new(),
        root: None,
        anchors: Vec::new(),
    };
    let mut parser = Parser::new_from_str(&source.text);
    if let Err(e) = parser.load(&mut builder, false) {
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

/// An open collection: the node being filled and its anchor id (0 = none).
enum Frame {
    Seq(Node, usize),
    Map(Node, Option<Node>, usize),
}

struct Builder {
    source: Arc<Source>,
    stack: Vec<Frame>,
    root: Option<Node>,
    anchors: Vec<(usize, Node)>,
}

impl Builder {
    fn mark(&self, m: Marker) -> Mark {
        Mark {
            source: self.source.clone(),
            line: m.line(),
            col: m.col() + 1,
        }
    }

    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.push((anchor, node.clone()));
        }
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq(seq, _)) => {
                if let Value::Seq(items) = &mut seq.value {
                    items.push(node);
                }
            }
            Some(Frame::Map(map, pending, _)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => {
                    if let Value::Map(entries) = &mut map.value {
                        entries.push((key, node));
                    }
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, marker: Marker) {
        match ev {
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
                self.push_value(node, anchor);
            }
            Event::SequenceStart(anchor, _) => {
                let node = Node {
                    value: Value::Seq(Vec::new()),
                    mark: self.mark(marker),
                };
                self.stack.push(Frame::Seq(node, anchor));
            }
            Event::MappingStart(anchor, _) => {
                let node = Node {
                    value: Value::Map(Vec::new()),
                    mark: self.mark(marker),
                };
                self.stack.push(Frame::Map(node, None, anchor));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(frame) = self.stack.pop() {
                    let (node, anchor) = match frame {
                        Frame::Seq(n, a) | Frame::Map(n, _, a) => (n, a),
                    };
                    self.push_value(node, anchor);
                }
            }
            Event::Alias(id) => {
                let node = self
                    .anchors
                    .iter()
                    .rev()
                    .find(|(a, _)| *a == id)
                    .map(|(_, n)| n.clone())
                    .unwrap_or(Node {
                        value: Value::Null,
                        mark: self.mark(marker),
                    });
                self.push_value(node, 0);
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
}
