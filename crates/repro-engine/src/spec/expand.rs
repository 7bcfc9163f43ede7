//! `foreach:` and `matrix:` expansion: one stage definition into its instances
//! (`name@item`), each with its own scope, bounded by `--max-stages`.

use serde_json::Value as Json;

use super::interp::Scope;
use super::yaml::{Mark, Node};
use super::*;

pub(crate) const DEFAULT_MAX_STAGES: usize = 100_000;

pub(super) fn max_stages(opts: &LoadOptions) -> Result<usize, SpecError> {
    if let Some(n) = opts.max_stages {
        return Ok(n);
    }
    match std::env::var("REPRO_MAX_STAGES") {
        Err(_) => Ok(DEFAULT_MAX_STAGES),
        Ok(v) => v.trim().parse().map_err(|_| {
            SpecError::plain(format!(
                "REPRO_MAX_STAGES must be a whole number of stages, not '{v}'"
            ))
        }),
    }
}

/// Bounds on what expanding stages may produce.
#[derive(Clone, Copy)]
pub(super) struct Limit {
    pub(super) max_stages: usize,
}

impl Limit {
    /// Refuse `n` more stages when `have` exist already (checked before building any).
    fn check(self, n: usize, have: usize, mark: &Mark, what: &str) -> Result<(), SpecError> {
        if have.saturating_add(n) <= self.max_stages {
            return Ok(());
        }
        let n = if n == usize::MAX {
            "more than 2^64".to_string()
        } else {
            n.to_string()
        };
        Err(SpecError::at(
            mark,
            format!(
                "{what} expands to {n} stages, over the limit of {} for the whole pipeline{}",
                self.max_stages,
                if have > 0 {
                    format!(" ({have} before this one)")
                } else {
                    String::new()
                }
            ),
        )
        .note("if so many are really meant, raise the limit with --max-stages N or REPRO_MAX_STAGES=N"))
    }
}

/// Expand one stage definition (its foreach/matrix items) into concrete stages; `expanded`
/// counts the stages of the whole pipeline. False when that went over the limit.
pub(super) fn expand_stage(
    name: &str,
    key: &Node,
    body: &Node,
    (vars, origins, kinds): (&Json, &Origins, &Registry),
    (limit, expanded): (Limit, &mut usize),
    out: &mut Vec<Stage>,
    errors: &mut Vec<SpecError>,
) -> bool {
    let Some(entries) = body.as_map() else {
        errors.push(
            SpecError::at(
                &body.mark,
                format!("stage must be a mapping, found {}", body.type_name()),
            )
            .in_stage(name),
        );
        return true;
    };
    for (k, _) in entries {
        let kk = k.as_str().unwrap_or_default();
        if !STAGE_KEYS.contains(&kk) {
            errors.push(unknown_key(k, kk, STAGE_KEYS, "stage key").in_stage(name));
        }
    }
    let base = Scope {
        vars,
        locals: Vec::new(),
    };
    // Limit errors point at the `foreach:` / `matrix:` key (a block mapping's own mark is odd).
    let key_mark = |field: &str| -> Mark {
        entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(field))
            .map_or(&key.mark, |(k, _)| &k.mark)
            .clone()
    };
    let instances: Vec<(String, Vec<(&'static str, Json)>)> =
        match (body.get("foreach"), body.get("matrix")) {
            (Some(f), Some(_)) => {
                errors.push(
                    SpecError::at(
                        &f.mark,
                        "a stage has either `foreach:` or `matrix:`, not both",
                    )
                    .in_stage(name),
                );
                return true;
            }
            (Some(f), None) => match interpolate_node(f, &base) {
                Err(e) => {
                    errors.push(e.in_stage(name));
                    return true;
                }
                Ok(Json::Array(items)) => {
                    if let Err(e) =
                        limit.check(items.len(), *expanded, &key_mark("foreach"), "`foreach:`")
                    {
                        errors.push(e.in_stage(name));
                        return false;
                    }
                    items
                        .into_iter()
                        .map(|item| {
                            (
                                format!("{name}@{}", item_label(&item)),
                                vec![("item", item)],
                            )
                        })
                        .collect()
                }
                Ok(Json::Object(map)) => {
                    if let Err(e) =
                        limit.check(map.len(), *expanded, &key_mark("foreach"), "`foreach:`")
                    {
                        errors.push(e.in_stage(name));
                        return false;
                    }
                    map.into_iter()
                        .map(|(k, v)| {
                            (
                                format!("{name}@{k}"),
                                vec![("key", Json::String(k)), ("item", v)],
                            )
                        })
                        .collect()
                }
                Ok(_) => {
                    errors.push(
                        SpecError::at(&f.mark, "`foreach:` must be a list or a mapping")
                            .in_stage(name),
                    );
                    return true;
                }
            },
            (None, Some(m)) => match interpolate_node(m, &base) {
                Err(e) => {
                    errors.push(e.in_stage(name));
                    return true;
                }
                Ok(Json::Object(axes)) => {
                    // Axes in the order written (the JSON map may be sorted).
                    let order: Vec<String> = match m.as_map() {
                        Some(entries) => entries
                            .iter()
                            .filter_map(|(k, _)| k.as_str().map(String::from))
                            .collect(),
                        None => axes.keys().cloned().collect(),
                    };
                    let mut total: usize = 1;
                    for axis in &order {
                        let Json::Array(values) = &axes[axis] else {
                            errors.push(
                                SpecError::at(
                                    &m.mark,
                                    format!("matrix axis '{axis}' must be a list"),
                                )
                                .in_stage(name),
                            );
                            return true;
                        };
                        total = total.saturating_mul(values.len());
                    }
                    // Counted before building: 8 axes of 10 values must not allocate 10^8.
                    if let Err(e) = limit.check(total, *expanded, &key_mark("matrix"), "`matrix:`")
                    {
                        errors.push(e.in_stage(name));
                        return false;
                    }
                    let mut combos: Vec<serde_json::Map<String, Json>> = vec![Default::default()];
                    for axis in &order {
                        let Json::Array(values) = &axes[axis] else {
                            continue;
                        };
                        combos = combos
                            .into_iter()
                            .flat_map(|c| {
                                values.iter().map(move |v| {
                                    let mut c = c.clone();
                                    c.insert(axis.clone(), v.clone());
                                    c
                                })
                            })
                            .collect();
                    }
                    combos
                        .into_iter()
                        .map(|c| {
                            let label: Vec<String> =
                                order.iter().map(|a| item_label(&c[a])).collect();
                            (
                                format!("{name}@{}", label.join(",")),
                                vec![("item", Json::Object(c))],
                            )
                        })
                        .collect()
                }
                Ok(_) => {
                    errors.push(
                        SpecError::at(&m.mark, "`matrix:` must be a mapping of axis → list")
                            .in_stage(name),
                    );
                    return true;
                }
            },
            (None, None) => {
                if let Err(e) = limit.check(1, *expanded, &key.mark, "this stage") {
                    errors.push(e.in_stage(name));
                    return false;
                }
                vec![(name.to_string(), Vec::new())]
            }
        };
    *expanded += instances.len();
    for (full, locals) in instances {
        let scope = Scope { vars, locals };
        match build_stage(&full, key, body, &scope, (origins, kinds)) {
            Ok(s) => out.push(s),
            Err(mut es) => {
                for e in es.drain(..) {
                    errors.push(e.in_stage(&full));
                }
            }
        }
    }
    true
}

/// How an item names its expanded stage: scalars as themselves, mappings by their values.
fn item_label(item: &Json) -> String {
    match item {
        Json::Object(m) => m.values().map(item_label).collect::<Vec<_>>().join(","),
        Json::Array(a) => a.iter().map(item_label).collect::<Vec<_>>().join(","),
        other => interp::scalar_text(other).unwrap_or_else(|| "null".into()),
    }
}
