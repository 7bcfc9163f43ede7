//! `${name}` / `${a.b}` interpolation of variables into pipeline values.
//!
//! A string that is exactly one `${x}` takes x's value with its type (a number stays a number,
//! a list stays a list, so `matrix: {loss: ${losses}}` works); otherwise each `${x}` must be a
//! scalar and is spliced into the text. `$${` writes a literal `${`. Names are looked up first
//! in the stage's own scope (`item`, `key` of foreach/matrix), then in `vars`.
//!
//! In `cmd:` a spliced value is one literal shell word, quoted for where it stands
//! ([`super::shell`]); `${raw:x}` splices x's text as shell code. Elsewhere `raw:` changes
//! nothing (no other field is read by a shell).

use serde_json::Value as Json;

use super::error::{SpecError, suggest};
use super::shell::ShellLexer;
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
    splice(text, mark, quoted, scope, None).map(Json::String)
}

/// Interpolate a `cmd:`: every value becomes one literal shell word unless written `${raw:x}`.
pub fn interpolate_cmd(
    text: &str,
    mark: &Mark,
    quoted: bool,
    scope: &Scope,
) -> Result<String, SpecError> {
    splice(text, mark, quoted, scope, Some(&mut ShellLexer::default()))
}

/// Splice every `${…}` of `text`; with a lexer, values are quoted for the shell.
fn splice(
    text: &str,
    mark: &Mark,
    quoted: bool,
    scope: &Scope,
    mut shell: Option<&mut ShellLexer>,
) -> Result<String, SpecError> {
    let mut out = String::with_capacity(text.len());
    fn literal(out: &mut String, s: &str, shell: &mut Option<&mut ShellLexer>) {
        out.push_str(s);
        if let Some(lx) = shell {
            lx.feed(s);
        }
    }
    let mut rest = text;
    let mut offset = 0;
    while let Some(i) = rest.find("${") {
        if i > 0 && rest.as_bytes()[i - 1] == b'$' {
            literal(&mut out, &rest[..i - 1], &mut shell);
            literal(&mut out, "${", &mut shell);
            rest = &rest[i + 2..];
            offset += i + 2;
            continue;
        }
        literal(&mut out, &rest[..i], &mut shell);
        let Some(end) = rest[i..].find('}') else {
            return Err(err_at(
                mark,
                quoted,
                offset + i,
                "unterminated `${` (missing `}`)".into(),
            ));
        };
        let inner = rest[i + 2..i + end].trim();
        let (raw, name) = split_raw(inner);
        let value = resolve(inner, offset + i, mark, quoted, scope)?;
        let Some(s) = scalar_text(value) else {
            return Err(err_at(
                mark,
                quoted,
                offset + i,
                format!("`${{{name}}}` is a list or mapping and cannot be spliced into text"),
            ));
        };
        match shell.as_deref_mut() {
            Some(lx) if raw => {
                // The author asked for code: it changes the quoting state like typed text.
                out.push_str(&s);
                lx.feed(&s);
            }
            Some(lx) => {
                match lx.quote(&s) {
                    Ok(q) => out.push_str(&q),
                    Err(why) => {
                        return Err(err_at(mark, quoted, offset + i, why.to_string()).note(
                            format!("or write `${{raw:{name}}}` to splice the text as code"),
                        ));
                    }
                }
            }
            None => out.push_str(&s),
        }
        rest = &rest[i + end + 1..];
        offset += i + end + 1;
    }
    literal(&mut out, rest, &mut shell);
    Ok(out)
}

/// `raw:name` → (true, `name`); a plain name → (false, name).
fn split_raw(inner: &str) -> (bool, &str) {
    match inner.strip_prefix("raw:") {
        Some(name) => (true, name.trim()),
        None => (false, inner),
    }
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
    let name = split_raw(name).1;
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

    fn cmd(text: &str, vars: &Json) -> Result<String, SpecError> {
        let root = parse_str(Path::new("p.yaml"), format!("cmd: {text}\n")).unwrap();
        let node = root.get("cmd").unwrap();
        let quoted = !matches!(node.value, Value::Scalar { plain: true, .. });
        interpolate_cmd(node.as_str().unwrap(), &node.mark, quoted, &scope(vars))
    }

    #[test]
    fn cmd_values_are_single_words_and_plain_ones_stay_bare() {
        let vars = json!({"name": "x; touch pwned", "lr": 0.1, "q": "it's", "redir": "> f.txt"});
        assert_eq!(
            cmd(
                "run --lr ${lr} --loss ${item.loss} --g ${item.gamma}",
                &vars
            )
            .unwrap(),
            "run --lr 0.1 --loss bce-nu --g 8"
        );
        assert_eq!(cmd("echo ${name}", &vars).unwrap(), "echo 'x; touch pwned'");
        assert_eq!(
            cmd("echo \"[${name}]\"", &vars).unwrap(),
            "echo \"[x; touch pwned]\""
        );
        assert_eq!(cmd("echo '${q}'", &vars).unwrap(), r"echo 'it'\''s'");
        assert_eq!(cmd("echo ${q}", &vars).unwrap(), r"echo 'it'\''s'");
        // The raw form is the author's explicit request for code.
        assert_eq!(
            cmd("echo hi ${raw:redir}", &vars).unwrap(),
            "echo hi > f.txt"
        );
        assert_eq!(cmd("echo $${HOME}", &vars).unwrap(), "echo ${HOME}");
        let e = cmd("echo `echo ${name}`", &vars).unwrap_err().to_string();
        assert!(e.contains("backquotes") && e.contains("${raw:name}"), "{e}");
    }

    #[test]
    fn raw_outside_cmd_is_the_plain_value() {
        let vars = json!({"n": "a b", "l": [1]});
        let root = parse_str(Path::new("p"), "a: x/${raw:n}\nb: ${raw:l}\n".into()).unwrap();
        assert_eq!(
            interpolate_node(&root, &scope(&vars)).unwrap(),
            json!({"a": "x/a b", "b": [1]})
        );
        let root = parse_str(Path::new("p"), "a: ${raw:nn}\n".into()).unwrap();
        let e = interpolate_node(&root, &scope(&vars))
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `${n}`"), "{e}");
    }
}
