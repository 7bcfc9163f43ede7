//! `${name}` / `${a.b}` interpolation of variables into pipeline values.
//!
//! A string that is exactly one `${x}` takes x's value with its type (a number stays a number,
//! a list stays a list, so `matrix: {loss: ${losses}}` works); otherwise each `${x}` must be a
//! scalar and is spliced into the text. `$${` writes a literal `${`. Names are looked up first
//! in the stage's own scope (`item`, `key` of foreach/matrix), then in `vars`.
//!
//! A name may be built from references (`${per_dataset.${item.dataset}.lr}`), and `a ?? b`
//! takes the first alternative that is defined (a variable set to null is defined), so that a
//! profile can set a value for some items and fall back to a common one for the rest.
//!
//! In `cmd:` a spliced value is one literal shell word, quoted for where it stands
//! ([`super::shell`]); `${raw:x}` splices x's text as shell code. Elsewhere `raw:` changes
//! nothing (no other field is read by a shell).

use serde_json::Value as Json;

use super::error::{SpecError, suggest};
use super::shell::ShellLexer;
use super::yaml::{Mark, Node, Value};

/// Variables visible while interpolating one stage.
pub(crate) struct Scope<'a> {
    pub vars: &'a Json,
    /// `item` / `key` bindings of an expanded stage.
    pub locals: Vec<(&'static str, Json)>,
}

impl Scope<'_> {
    /// Resolve a dotted name (`a.b.0.c`).
    pub(crate) fn lookup(&self, name: &str) -> Option<&Json> {
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
pub(crate) fn scalar_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Interpolate one string found at `mark`.
pub(crate) fn interpolate(
    text: &str,
    mark: &Mark,
    quoted: bool,
    scope: &Scope,
) -> Result<Json, SpecError> {
    interpolate_traced(text, mark, quoted, scope, &mut Vec::new())
}

/// As [`interpolate`], also listing the variables whose values were used (after nested names
/// and `??` fallbacks are resolved), so an error about a value can point at its definition.
pub(crate) fn interpolate_traced(
    text: &str,
    mark: &Mark,
    quoted: bool,
    scope: &Scope,
    used: &mut Vec<String>,
) -> Result<Json, SpecError> {
    let trimmed = text.trim();
    if let Some(body) = whole_reference(trimmed) {
        let at = text.find("${").unwrap_or(0);
        let (_, expr) = split_raw(body);
        return resolve_expr(
            expr,
            at + 2 + (body.len() - expr.len()),
            mark,
            quoted,
            scope,
            used,
        )
        .cloned();
    }
    if !text.contains("${") {
        return Ok(Json::String(text.to_string()));
    }
    splice(text, mark, quoted, scope, None, used).map(Json::String)
}

/// Interpolate a `cmd:`: every value becomes one literal shell word unless written `${raw:x}`.
pub(crate) fn interpolate_cmd(
    text: &str,
    mark: &Mark,
    quoted: bool,
    scope: &Scope,
) -> Result<String, SpecError> {
    splice(
        text,
        mark,
        quoted,
        scope,
        Some(&mut ShellLexer::default()),
        &mut Vec::new(),
    )
}

/// Splice every `${…}` of `text`; with a lexer, values are quoted for the shell.
fn splice(
    text: &str,
    mark: &Mark,
    quoted: bool,
    scope: &Scope,
    mut shell: Option<&mut ShellLexer>,
    used: &mut Vec<String>,
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
        let Some(end) = closing_brace(&rest[i..]) else {
            return Err(err_at(
                mark,
                quoted,
                offset + i,
                "unterminated `${` (missing `}`)".into(),
            ));
        };
        let body = &rest[i + 2..i + end];
        let (raw, expr) = split_raw(body);
        let expr_at = offset + i + 2 + (body.len() - expr.len());
        let value = resolve_expr(expr, expr_at, mark, quoted, scope, used)?;
        let name = expr.trim();
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

/// `raw:expr` → (true, `expr`); anything else → (false, itself). Leading blanks are skipped
/// so that `${ raw:x }` is raw too.
fn split_raw(body: &str) -> (bool, &str) {
    let t = body.trim_start();
    match t.strip_prefix("raw:") {
        Some(expr) => (true, expr),
        None => (false, body),
    }
}

/// Index of the `}` that closes the `${` at the start of `s` (nested `${…}` counted).
fn closing_brace(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && b.get(i + 1) == Some(&b'{') {
            depth += 1;
            i += 2;
            continue;
        }
        if b[i] == b'}' {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
        i += 1;
    }
    None
}

/// `${…}` exactly (and nothing else) → its body.
fn whole_reference(s: &str) -> Option<&str> {
    if !s.starts_with("${") {
        return None;
    }
    (closing_brace(s)? == s.len() - 1).then(|| &s[2..s.len() - 1])
}

/// Split a reference body at its top-level `??` (outside nested `${…}`), with each part's
/// offset in the body.
fn alternatives(body: &str) -> Vec<(usize, &str)> {
    let b = body.as_bytes();
    let (mut depth, mut start, mut i) = (0usize, 0usize, 0usize);
    let mut parts = Vec::new();
    while i < b.len() {
        match b[i] {
            b'$' if b.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 2;
                continue;
            }
            b'}' => depth = depth.saturating_sub(1),
            b'?' if depth == 0 && b.get(i + 1) == Some(&b'?') => {
                parts.push((start, &body[start..i]));
                start = i + 2;
                i += 2;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push((start, &body[start..]));
    parts
}

/// Resolve the body of one `${…}`: `name`, a name built from nested references
/// (`per_dataset.${item.dataset}.lr`), or alternatives `a ?? b ?? c` of which the first that is
/// defined is taken (a variable set to null is defined).
fn resolve_expr<'s>(
    body: &str,
    at: usize,
    mark: &Mark,
    quoted: bool,
    scope: &'s Scope,
    used: &mut Vec<String>,
) -> Result<&'s Json, SpecError> {
    let alts = alternatives(body);
    let mut first_name = None;
    for (k, (off, alt)) in alts.iter().enumerate() {
        let name = if alt.contains("${") {
            match interpolate_traced(alt, mark, quoted, scope, used)? {
                Json::String(s) => s.trim().to_string(),
                other => scalar_text(&other).unwrap_or_default(),
            }
        } else {
            alt.trim().to_string()
        };
        if let Some(v) = scope.lookup(&name) {
            used.push(name);
            return Ok(v);
        }
        if k == 0 {
            first_name = Some((name, at + off));
        }
    }
    let (name, pos) = first_name.unwrap_or_default();
    Err(undefined(
        &name,
        pos.saturating_sub(2),
        mark,
        quoted,
        scope,
        alts.len() > 1,
    ))
}

fn undefined(
    name: &str,
    at: usize,
    mark: &Mark,
    quoted: bool,
    scope: &Scope,
    with_fallbacks: bool,
) -> SpecError {
    let known = scope.known_names();
    let refs: Vec<&str> = known.iter().map(String::as_str).collect();
    let head = name.split('.').next().unwrap_or(name);
    let mut e = err_at(
        mark,
        quoted,
        at,
        format!("undefined variable `${{{name}}}`"),
    );
    if with_fallbacks {
        e = e.note("none of the `??` alternatives is defined");
    }
    if scope.lookup(head).is_some() && head != name {
        e = e.note(format!(
            "`{head}` is defined but has no `{}`",
            &name[head.len() + 1..]
        ));
    } else if let Some(s) = suggest(head, &refs) {
        e = e.note(format!("did you mean `${{{s}}}`?"));
    }
    e
}

fn err_at(mark: &Mark, quoted: bool, offset: usize, msg: String) -> SpecError {
    let mut m = mark.clone();
    m.col += offset + usize::from(quoted);
    SpecError::at(&m, msg)
}

/// Interpolate every string inside a node, producing JSON (plain scalars typed as YAML does).
pub(crate) fn interpolate_node(node: &Node, scope: &Scope) -> Result<Json, SpecError> {
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

/// The variables a node's strings take their values from (see [`interpolate_traced`]);
/// references that do not resolve are left out.
pub(crate) fn used_variables(node: &Node, scope: &Scope) -> Vec<String> {
    let mut used = Vec::new();
    let mut walk = vec![node];
    while let Some(n) = walk.pop() {
        match &n.value {
            Value::Scalar { text, plain } if text.contains("${") => {
                let _ = interpolate_traced(text, &n.mark, !plain, scope, &mut used);
            }
            Value::Seq(items) => walk.extend(items.iter().rev()),
            Value::Map(entries) => walk.extend(entries.iter().rev().map(|(_, v)| v)),
            _ => {}
        }
    }
    used
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
    #[test]
    fn nested_names_and_fallbacks() {
        let vars = json!({
            "per": {"imagenet": {"lr": 0.0001}},
            "lr": 0.001,
            "ds": "imagenet",
            "none": null
        });
        let root = parse_str(
            Path::new("p"),
            "a: ${per.${ds}.lr ?? lr}\nb: ${per.cub.lr ?? lr}\nc: x${per.${ds}.lr}y\nd: ${missing ?? none}\n".into(),
        )
        .unwrap();
        let v = interpolate_node(&root, &scope(&vars)).unwrap();
        assert_eq!(
            v,
            json!({"a": 0.0001, "b": 0.001, "c": "x0.0001y", "d": null})
        );
        let bad = parse_str(Path::new("p"), "a: ${per.cub.lr ?? nope}\n".into()).unwrap();
        let e = interpolate_node(&bad, &scope(&vars))
            .unwrap_err()
            .to_string();
        assert!(e.contains("undefined variable `${per.cub.lr}`"), "{e}");
        assert!(e.contains("none of the `??` alternatives"), "{e}");
        let used = used_variables(&root, &scope(&vars));
        assert_eq!(
            used,
            [
                "ds",
                "per.imagenet.lr",
                "lr",
                "ds",
                "per.imagenet.lr",
                "none"
            ]
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
