//! `${name}` / `${a.b}` interpolation of variables into pipeline values.
//!
//! A string that is exactly one `${x}` takes x's value with its type (a number stays a number,
//! a list stays a list, so `matrix: {loss: ${losses}}` works); otherwise each `${x}` must be a
//! scalar and is spliced into the text. `$${` writes a literal `${`. Names are looked up first
//! in the stage's own scope (`item`, `key` of foreach/matrix), then in `vars`.

use serde_json::Value as Json;

use super::error::{SpecError, suggest};
use super::yaml::{Mark, Node, Value};

/// Variables visible while interpolating one stage.
pub struct Scope<'a> {
    pub vars: &'a Json,
    /// `item` / `key` bindings of an expanded stage.
    pub locals: Vec<(&'static str, Json)>,
}

impl Scope<'_> {
    /// Resolve a dotted name (`a.b.0.c`).
    pub fn lookup(&self, name: &str) -> Option<&Json> {
        let mut parts = name.split('.');
        let first = parts.next()?;
        let mut cur = match self.locals.iter().find(|(k, _)| *k == first) {
            Some((_, v)) => v,
            None => self.vars.get(first)?,
        };
        for p in parts {
            cur = match cur {
                Json::Object(m) => m.get(p)?,
                Json::Array(a) => a.get(p.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    fn known_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.locals.iter().map(|(k, _)| k.to_string()).collect();
        if let Json::Object(m) = self.vars {
            names.extend(m.keys().cloned());
        }
        names
    }
}

/// Render a JSON scalar as text for splicing into a string.
pub fn scalar_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Interpolate one string found at `mark`.
pub fn interpolate(
    text: &str,
    mark: &Mark,
    quoted: bool,
    scope: &Scope,
) -> Result<Json, SpecError> {
    let trimmed = text.trim();
    if let Some(name) = whole_reference(trimmed) {
        return resolve(name, text.find("${").unwrap_or(0), mark, quoted, scope).cloned();
    }
    if !text.contains("${") {
        return Ok(Json::String(text.to_string()));
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut offset = 0;
    while let Some(i) = rest.find("${") {
        if i > 0 && rest.as_bytes()[i - 1] == b'$' {
            out.push_str(&rest[..i - 1]);
            out.push_str("${");
            rest = &rest[i + 2..];
            offset += i + 2;
            continue;
        }
        out.push_str(&rest[..i]);
        let Some(end) = rest[i..].find('}') else {
            return Err(err_at(
                mark,
                quoted,
                offset + i,
                "unterminated `${` (missing `}`)".into(),
            ));
        };
        let name = rest[i + 2..i + end].trim();
        let value = resolve(name, offset + i, mark, quoted, scope)?;
        let Some(s) = scalar_text(value) else {
            return Err(err_at(
                mark,
                quoted,
                offset + i,
                format!("`${{{name}}}` is a list or mapping and cannot be spliced into text"),
            ));
        };
        out.push_str(&s);
        rest = &rest[i + end + 1..];
        offset += i + end + 1;
    }
    out.push_str(rest);
    Ok(Json::String(out))
}

/// `${name}` exactly (and nothing else) → `name`.
fn whole_reference(s: &str) -> Option<&str> {
    let inner = s.strip_prefix("${")?.strip_suffix('}')?;
    (!inner.contains('}') && !inner.contains("${")).then(|| inner.trim())
}

fn resolve<'s>(
    name: &str,
    at: usize,
    mark: &Mark,
    quoted: bool,
    scope: &'s Scope,
) -> Result<&'s Json, SpecError> {
    scope.lookup(name).ok_or_else(|| {
        let known = scope.known_names();
        let refs: Vec<&str> = known.iter().map(String::as_str).collect();
        let head = name.split('.').next().unwrap_or(name);
        let mut e = err_at(
            mark,
            quoted,
            at,
            format!("undefined variable `${{{name}}}`"),
        );
        if scope.lookup(head).is_some() && head != name {
            e = e.note(format!(
                "`{head}` is defined but has no `{}`",
                &name[head.len() + 1..]
            ));
        } else if let Some(s) = suggest(head, &refs) {
            e = e.note(format!("did you mean `${{{s}}}`?"));
        }
        e
    })
}

fn err_at(mark: &Mark, quoted: bool, offset: usize, msg: String) -> SpecError {
    let mut m = mark.clone();
    m.col += offset + usize::from(quoted);
    SpecError::at(&m, msg)
}

/// Interpolate every string inside a node, producing JSON (plain scalars typed as YAML does).
pub fn interpolate_node(node: &Node, scope: &Scope) -> Result<Json, SpecError> {
    match &node.value {
        Value::Scalar { text, plain } if text.contains("${") => {
            let v = interpolate(text, &node.mark, !plain, scope)?;
            // A spliced plain scalar is re-typed (`lr: ${base}e-3` is a number).
            Ok(match (&v, plain) {
                (Json::String(s), true) if whole_reference(text.trim()).is_none() => {
                    super::yaml::scalar_to_json(s)
                }
                _ => v,
            })
        }
        Value::Seq(items) => items.iter().map(|n| interpolate_node(n, scope)).collect(),
        Value::Map(entries) => {
            let mut m = serde_json::Map::new();
            for (k, v) in entries {
                m.insert(
                    k.as_str().unwrap_or_default().to_string(),
                    interpolate_node(v, scope)?,
                );
            }
            Ok(Json::Object(m))
        }
        _ => Ok(node.to_json()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::yaml::parse_str;
    use serde_json::json;
    use std::path::Path;

    fn scope(vars: &Json) -> Scope<'_> {
        Scope {
            vars,
            locals: vec![("item", json!({"loss": "bce-nu", "gamma": 8}))],
        }
    }

    #[test]
    fn whole_reference_keeps_type() {
        let vars = json!({"losses": ["a", "b"], "train": {"lr": 0.1}});
        let root = parse_str(
            Path::new("p"),
            "a: ${losses}\nb: ${train.lr}\nc: x-${item.loss}-${item.gamma}\n".into(),
        )
        .unwrap();
        let v = interpolate_node(&root, &scope(&vars)).unwrap();
        assert_eq!(v, json!({"a": ["a", "b"], "b": 0.1, "c": "x-bce-nu-8"}));
    }

    #[test]
    fn escaped_dollar_is_literal() {
        let vars = json!({});
        let root = parse_str(Path::new("p"), "a: echo $${HOME}\n".into()).unwrap();
        assert_eq!(
            interpolate_node(&root, &scope(&vars)).unwrap(),
            json!({"a": "echo ${HOME}"})
        );
    }

    #[test]
    fn undefined_variable_names_position_and_suggests() {
        let vars = json!({"gamma": 96});
        let root = parse_str(Path::new("p.yaml"), "cmd: run --g ${gama}\n".into()).unwrap();
        let e = interpolate_node(&root, &scope(&vars)).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("undefined variable `${gama}`"), "{text}");
        assert!(text.contains("p.yaml:1:14"), "{text}");
        assert!(text.contains("did you mean `${gamma}`"), "{text}");
    }

    #[test]
    fn splicing_a_list_is_an_error() {
        let vars = json!({"l": [1, 2]});
        let root = parse_str(Path::new("p"), "a: x ${l}\n".into()).unwrap();
        assert!(
            interpolate_node(&root, &scope(&vars))
                .unwrap_err()
                .to_string()
                .contains("cannot be spliced")
        );
    }
}
