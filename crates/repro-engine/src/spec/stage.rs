//! One stage instance from its YAML body and scope: command or kind (resolved against the
//! registry), deps, outputs, params, metrics, checkpoint; paths normalised and checked.

use serde_json::Value as Json;

use super::interp::{self, Scope, interpolate_node};
use super::yaml::{Node, Value};
use super::*;

pub(super) fn build_stage(
    name: &str,
    key: &Node,
    body: &Node,
    scope: &Scope,
    (origins, kinds): (&Origins, &Registry),
) -> Result<Stage, Vec<SpecError>> {
    let mut errors = Vec::new();
    let cmd = match body.get("cmd") {
        // Values spliced into a command are quoted as shell words (see `shell`).
        Some(
            node @ Node {
                value: Value::Scalar { text, plain },
                ..
            },
        ) => match interp::interpolate_cmd(text, &node.mark, !plain, scope) {
            Ok(c) => Some((c, node.mark.clone())),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        _ => string_field(body, "cmd", scope, &mut errors),
    };
    let uses = string_field(body, "uses", scope, &mut errors);
    let checkpoint = string_field(body, "checkpoint", scope, &mut errors);
    let desc = string_field(body, "desc", scope, &mut errors).map(|(s, _)| s);
    let env = super::environ::parse(body, scope, cmd.is_some(), &mut errors);
    let retry = super::running::parse_retry(body, scope, &mut errors);
    let executor = super::running::parse_executor(body, scope, &mut errors);
    let verify_ignore = super::running::parse_verify(body, scope, &mut errors);

    // `cmd: …` is the built-in kind `cmd` with the command as its parameter; `uses:` names any
    // other registered kind, with the `with:` mapping as its parameters.
    let action = match (cmd, uses) {
        (Some(_), Some((_, m))) => {
            errors.push(SpecError::at(
                &m,
                "a stage has either `cmd:` or `uses:`, not both",
            ));
            None
        }
        (Some((c, m)), None) => {
            if let Some(w) = body.get("with") {
                errors.push(SpecError::at(
                    &w.mark,
                    "`with:` only applies to `uses:` stages",
                ));
            }
            let with = super::environ::cmd_params(c, &env);
            resolve_action(kinds, super::CMD_KIND, with, &m, &mut errors, |e| {
                SpecError::at(&m, format!("{e:#}"))
            })
        }
        (None, Some((kind, m))) if kind == super::CMD_KIND => {
            errors.push(SpecError::at(
                &m,
                "write a shell command as `cmd: …` (values spliced into it are quoted as shell words there)",
            ));
            None
        }
        (None, Some((kind, m))) => {
            let with = match body.get("with") {
                None => Json::Object(Default::default()),
                Some(w) => match interpolate_node(w, scope) {
                    Ok(v @ Json::Object(_)) => v,
                    Ok(_) => {
                        errors.push(SpecError::at(
                            &w.mark,
                            "`with:` must be a mapping of parameters",
                        ));
                        Json::Null
                    }
                    Err(e) => {
                        errors.push(e);
                        Json::Null
                    }
                },
            };
            resolve_action(kinds, &kind, with, &m, &mut errors, |e| {
                let msg = format!("invalid parameters for `{kind}`: {e:#}");
                let param = crate::kinds::ParamError::find(&e).map(|p| p.param.as_str());
                locate_param_error(body.get("with"), &m, msg, param, scope, origins)
            })
        }
        // A `cmd:` or `uses:` that is written but did not interpolate was reported already
        // (one error for an undefined `${var}`, not two).
        (None, None) if body.get("cmd").is_some() || body.get("uses").is_some() => None,
        (None, None) => {
            errors.push(SpecError::at(
                &key.mark,
                "stage has neither `cmd:` nor `uses:`",
            ));
            None
        }
    };

    let mut uncached = Vec::new();
    let deps = path_list(body, "deps", scope, true, &mut errors, &mut uncached);
    let mut outs = path_list(body, "outs", scope, false, &mut errors, &mut uncached);
    // A metrics file is an output: listing it under `outs:` as well is allowed, not needed.
    let metrics = path_list(body, "metrics", scope, false, &mut errors, &mut uncached);
    for m in &metrics {
        if !outs.iter().any(|o| o.path == m.path) {
            outs.push(m.clone());
        }
    }
    let plots = plot_list(body, scope, &mut errors);
    for p in &plots {
        if !outs.iter().any(|o| o.path == p.path) {
            outs.push(PathRef {
                path: p.path.clone(),
                mark: p.mark.clone(),
            });
        }
    }

    let mut params = BTreeMap::new();
    if let Some(p) = body.get("params") {
        match p.as_seq() {
            None => errors.push(SpecError::at(
                &p.mark,
                "`params:` must be a list of variable names",
            )),
            Some(items) => {
                for item in items {
                    let Some(k) = item.as_str() else {
                        errors.push(SpecError::at(
                            &item.mark,
                            "a param must be a variable name such as `train.lr`",
                        ));
                        continue;
                    };
                    match scope.lookup(k) {
                        Some(v) => {
                            params.insert(k.to_string(), v.clone());
                        }
                        None => errors.push(SpecError::at(
                            &item.mark,
                            format!("param `{k}` is not defined in vars"),
                        )),
                    }
                }
            }
        }
    }

    let resources = match body.get("resources") {
        None => Resources {
            cpus: 1,
            ..Default::default()
        },
        Some(r) => parse_resources(r, scope, &mut errors),
    };

    if let Some((cp, m)) = &checkpoint
        && let Err(msg) = normalise(cp, false)
    {
        errors.push(SpecError::at(m, format!("checkpoint: {msg}")));
    }

    match (action, errors.is_empty()) {
        (Some(action), true) => Ok(Stage {
            name: name.to_string(),
            action,
            deps,
            outs,
            params,
            resources,
            checkpoint_mark: checkpoint.as_ref().map(|(_, m)| m.clone()),
            checkpoint: checkpoint.map(|(c, _)| normalise(&c, false).unwrap_or(c)),
            with_marks: body
                .get("with")
                .and_then(Node::as_map)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.mark.clone())))
                        .collect()
                })
                .unwrap_or_default(),
            desc,
            metrics,
            plots,
            uncached,
            mark: key.mark.clone(),
            env,
            retry,
            executor,
            verify_ignore,
        }),
        _ => Err(errors),
    }
}

/// The stage's action once the registry has checked `with` for `kind` (named at `mark`); a
/// parameter error is placed by `locate`. Parameters that are not a mapping were reported.
fn resolve_action(
    kinds: &Registry,
    kind: &str,
    with: Json,
    mark: &Mark,
    errors: &mut Vec<SpecError>,
    locate: impl FnOnce(anyhow::Error) -> SpecError,
) -> Option<Action> {
    if let Err(e) = kinds.check_known(kind) {
        errors.push(SpecError::at(mark, e.to_string()));
        return None;
    }
    if with.is_null() {
        return None;
    }
    match kinds.resolve(kind, &with) {
        Ok(resolved) => Some(Action {
            kind: kind.to_string(),
            with,
            resolved,
        }),
        Err(e) => {
            errors.push(locate(e));
            None
        }
    }
}

/// `plots:` entries: a path, or `{path, x, y, title}` (checked by `super::plot_decl::PlotDecl`).
fn plot_list(
    body: &Node,
    scope: &Scope,
    errors: &mut Vec<SpecError>,
) -> Vec<super::plot_decl::PlotDecl> {
    let Some(node) = body.get("plots") else {
        return Vec::new();
    };
    let items: Vec<&Node> = match &node.value {
        Value::Seq(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        _ => vec![node],
    };
    let mut out = Vec::new();
    for item in items {
        let v = match interpolate_node(item, scope) {
            Ok(v) => v,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let decl = super::plot_decl::PlotDecl::from_json(&v, &item.mark).and_then(|mut d| {
            d.path = normalise(&d.path, false)?;
            Ok(d)
        });
        match decl {
            Ok(d) => out.push(d),
            Err(msg) => errors.push(SpecError::at(&item.mark, format!("plots: {msg}"))),
        }
    }
    out
}

/// A field that must interpolate to one scalar, as text with where it was written.
fn string_field(
    body: &Node,
    field: &str,
    scope: &Scope,
    errors: &mut Vec<SpecError>,
) -> Option<(String, Mark)> {
    let node = body.get(field)?;
    match interpolate_node(node, scope) {
        Ok(Json::String(s)) => Some((s, node.mark.clone())),
        Ok(other) => match interp::scalar_text(&other) {
            Some(s) => Some((s, node.mark.clone())),
            None => {
                errors.push(SpecError::at(
                    &node.mark,
                    format!("`{field}:` must be a string"),
                ));
                None
            }
        },
        Err(e) => {
            errors.push(e);
            None
        }
    }
}

fn path_list(
    body: &Node,
    field: &str,
    scope: &Scope,
    allow_absolute: bool,
    errors: &mut Vec<SpecError>,
    uncached: &mut Vec<String>,
) -> Vec<PathRef> {
    let Some(node) = body.get(field) else {
        return Vec::new();
    };
    let items: Vec<&Node> = match &node.value {
        Value::Seq(items) => items.iter().collect(),
        Value::Scalar { .. } => vec![node],
        Value::Null => Vec::new(),
        Value::Map(_) => {
            errors.push(SpecError::at(
                &node.mark,
                format!("`{field}:` must be a list of paths"),
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for item in items {
        // An output with options: `{path: P, cache: false}` (see `cache::links`).
        let (item, keep) = match out_options(item, field, scope, errors) {
            Some(x) => x,
            None => continue,
        };
        let values = match interpolate_node(item, scope) {
            Ok(Json::Array(a)) => a,
            // A dep that is a variable set to null is no dep (an optional input, such as
            // `init_from` weights that only some profiles have).
            Ok(Json::Null) if field == "deps" => continue,
            Ok(v) => vec![v],
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        for v in values {
            let Some(text) = interp::scalar_text(&v) else {
                errors.push(SpecError::at(
                    &item.mark,
                    format!("`{field}:` entries must be paths"),
                ));
                continue;
            };
            match normalise(&text, allow_absolute) {
                Ok(path) => {
                    if !keep {
                        uncached.push(path.clone());
                    }
                    out.push(PathRef {
                        path,
                        mark: item.mark.clone(),
                    })
                }
                Err(msg) => errors.push(SpecError::at(&item.mark, format!("{field}: {msg}"))),
            }
        }
    }
    out
}

/// An `outs:` entry written as a mapping, `{path: P, cache: false}`: its path node and
/// whether it is kept in the cache. Any other entry is itself, kept. `None`: an error was
/// reported.
fn out_options<'a>(
    item: &'a Node,
    field: &str,
    scope: &Scope,
    errors: &mut Vec<SpecError>,
) -> Option<(&'a Node, bool)> {
    let Some(entries) = item.as_map() else {
        return Some((item, true));
    };
    if field != "outs" {
        errors.push(SpecError::at(
            &item.mark,
            format!("`{field}:` entries must be paths"),
        ));
        return None;
    }
    let mut keep = true;
    for (k, v) in entries {
        match k.as_str() {
            Some("path") => {}
            Some("cache") => match interpolate_node(v, scope) {
                Ok(Json::Bool(b)) => keep = b,
                Ok(_) => {
                    errors.push(SpecError::at(&v.mark, "`cache:` must be true or false"));
                    return None;
                }
                Err(e) => {
                    errors.push(e);
                    return None;
                }
            },
            _ => {
                errors.push(SpecError::at(
                    &k.mark,
                    "an output's options are `path:` and `cache:`",
                ));
                return None;
            }
        }
    }
    match item.get("path") {
        Some(p) => Some((p, keep)),
        None => {
            errors.push(SpecError::at(&item.mark, "an output mapping needs `path:`"));
            None
        }
    }
}

/// Normalise a workspace path: no `.`, no trailing `/`, no escaping `..`.
pub fn normalise(p: &str, allow_absolute: bool) -> Result<String, String> {
    let path = Path::new(p);
    if path.is_absolute() {
        return if allow_absolute {
            Ok(p.trim_end_matches('/').to_string())
        } else {
            Err(format!(
                "'{p}' is absolute; outputs must be inside the workspace"
            ))
        };
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(format!("'{p}' points outside the workspace"));
                }
            }
            Component::Normal(s) => {
                parts.push(s.to_str().ok_or_else(|| format!("'{p}' is not UTF-8"))?)
            }
            _ => return Err(format!("'{p}' is not a plain relative path")),
        }
    }
    if parts.is_empty() {
        return Err(format!("'{p}' names the workspace itself"));
    }
    Ok(parts.join("/"))
}
