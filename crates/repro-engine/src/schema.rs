//! The JSON Schema of `pipeline.yaml` (`repro schema`), for editors: with the YAML language
//! server (VS Code's YAML extension, Neovim, Helix…) a `# yaml-language-server: $schema=…`
//! line in the pipeline gives completion of keys, hover text and errors as you type.
//!
//! The schema is a help, not the judge: `spec` still checks everything (paths, variables,
//! the registry's parameters). So it is lenient where `${…}` may stand for a value (a number
//! may be written as a string), and strict on key names, where typos hide. A test keeps its
//! key lists equal to the ones `spec` accepts.

use serde_json::{Value as Json, json};

/// A value that may also be a `${…}` reference (written as a string).
fn or_var(schema: Json) -> Json {
    json!({"anyOf": [schema, {"type": "string", "pattern": "\\$\\{"}]})
}

/// One path or a list of them.
fn paths(desc: &str) -> Json {
    json!({
        "description": desc,
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "null"}]
    })
}

/// Vars: a mapping, a vars file, or a list of both.
fn vars() -> Json {
    json!({"anyOf": [
        {"type": "object"},
        {"type": "string"},
        {"type": "array", "items": {"anyOf": [{"type": "object"}, {"type": "string"}]}}
    ]})
}

fn stage() -> Json {
    let number = |d: &str| {
        let mut n = or_var(json!({"type": "integer", "minimum": 0}));
        n["description"] = json!(d);
        n
    };
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "cmd": {"type": "string", "description": "A shell command, run as `sh -c CMD` in the workspace."},
            "uses": {"type": "string", "description": "A built-in stage kind instead of `cmd` (its parameters under `with:`)."},
            "with": {"type": "object", "description": "The built-in kind's parameters (only with `uses:`)."},
            "deps": paths("Files or directories the stage reads; their content enters the stage key."),
            "outs": {
                "description": "Files or directories the stage writes; `{path: P, cache: false}` keeps one out of the cache.",
                "anyOf": [
                    {"type": "string"},
                    {"type": "null"},
                    {"type": "array", "items": {"anyOf": [
                        {"type": "string"},
                        {"type": "object", "additionalProperties": false, "required": ["path"],
                         "properties": {"path": {"type": "string"}, "cache": or_var(json!({"type": "boolean"}))}}
                    ]}}
                ]
            },
            "metrics": paths("Outputs holding metrics: .json, .yaml/.yml, .toml, .csv or .tsv (docs/pipeline.md#metrics-files)."),
            "plots": {
                "description": "Outputs to draw with `repro plots`: a series (.csv, .tsv, .json) or an image (.png, .jpg, .gif, .svg).",
                "anyOf": [
                    {"type": "string"},
                    {"type": "null"},
                    {"type": "array", "items": {"anyOf": [
                        {"type": "string"},
                        {"type": "object", "additionalProperties": false, "required": ["path"],
                         "properties": {
                            "path": {"type": "string"},
                            "x": {"type": "string", "description": "The x column (default: the row number)."},
                            "y": {"description": "The y column or columns (default: every numeric column but x).",
                                  "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                            "title": {"type": "string"}
                         }}
                    ]}}
                ]
            },
            "params": {"type": "array", "items": {"type": "string"}, "description": "Variable names (dotted) whose values enter the stage key."},
            "resources": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "cpus": number("CPU slots (default 1)."),
                    "gpu": number("GPUs."),
                    "gpus": number("GPUs (same as `gpu`)."),
                    "mem": {"type": ["integer", "string"], "description": "MiB, or 512M, 8G, 1T."},
                    "time": {"type": ["integer", "string"], "description": "Minutes, or M:SS, H:MM:SS."},
                    "partition": {"type": "string", "description": "Slurm partition."}
                }
            },
            "foreach": {"type": ["array", "object", "string"], "description": "One stage per item: `${item}` (and `${key}` for a mapping)."},
            "matrix": {"type": "object", "description": "One stage per combination of the axes: `${item.AXIS}`."},
            "checkpoint": {"type": "string", "description": "A directory that survives interruption ($REPRO_CHECKPOINT)."},
            "desc": {"type": "string"},
            "env": {
                "description": "Environment variables that enter the key: names, or `NAME: value`.",
                "anyOf": [
                    {"type": "object"},
                    {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "object"}]}}
                ]
            },
            "tools": {
                "type": "array",
                "description": "Tools whose identity enters the key: `file: PATH` or `cmd: COMMAND`.",
                "items": {"type": "object", "additionalProperties": false,
                          "properties": {"file": {"type": "string"}, "cmd": {"type": "string"}}}
            },
            "container": {"type": "string", "description": "Run the `cmd:` in this image (podman, apptainer or singularity)."},
            "retry": {
                "description": "Run a failed stage again: a count, or {count, backoff} (backoff: 10, 10s, 2m; default 1s). Not part of the key.",
                "anyOf": [
                    {"type": "integer", "minimum": 0},
                    {"type": "object", "additionalProperties": false,
                     "properties": {"count": {"type": "integer", "minimum": 0},
                                    "backoff": {"type": ["number", "string"]}}}
                ]
            },
            "executor": {"enum": ["local"], "description": "Run this stage on this machine when the pipeline runs on Slurm."},
            "verify": {
                "type": "object",
                "description": "What `repro verify` does not compare: {ignore: [FILE:FIELD, …]}, JSON fields that measure the run (wall times) rather than its result. Not part of the key.",
                "additionalProperties": false,
                "properties": {"ignore": {"type": "array", "items": {"type": "string"}}}
            }
        },
        "oneOf": [{"required": ["cmd"]}, {"required": ["uses"]}]
    })
}

/// The schema, as a JSON value.
pub fn pipeline_schema() -> Json {
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": "repro-pipeline",
        "title": "repro pipeline.yaml",
        "description": "A repro pipeline (docs/pipeline.md).",
        "type": "object",
        "required": ["stages"],
        "additionalProperties": false,
        "properties": {
            "stages": {
                "type": "object",
                "description": "The stages, by name.",
                "propertyNames": {"pattern": "^[A-Za-z0-9_.-]+$"},
                "additionalProperties": {"$ref": "#/definitions/stage"}
            },
            "vars": {"description": "Variables for `${…}` and `params:`.", "allOf": [vars()]},
            "profiles": {
                "type": "object",
                "description": "Named sets of vars merged over `vars:` (`--profile NAME`).",
                "additionalProperties": vars()
            },
            "profile": {"type": "string", "description": "The profile used when `--profile` is not given."},
            "executor": {"enum": ["local", "slurm"], "description": "Where stages run (default local)."},
            "slurm": {
                "type": "object",
                "description": "Defaults for the Slurm executor (docs/slurm.md).",
                "additionalProperties": false,
                "properties": {
                    "partition": {"type": "string"},
                    "account": {"type": "string"},
                    "qos": {"type": "string"},
                    "sbatch_args": {"type": "array", "items": {"type": "string"}},
                    "poll_seconds": {"type": "number", "minimum": 0.1, "maximum": 3600},
                    "arrays": {"type": "boolean"}
                }
            },
            "remote": {"type": "string", "description": "The remote cache: s3://bucket/prefix, https://… (WebDAV) or a shared directory (docs/remote.md)."},
            "cache": {
                "type": "object",
                "description": "How outputs are placed from the cache, and where the cache lives.",
                "additionalProperties": false,
                "properties": {
                    "link": {"anyOf": [
                        {"enum": crate::cache::links::LinkMode::NAMES},
                        {"type": "array", "items": {"enum": crate::cache::links::LinkMode::NAMES}}
                    ]},
                    "dir": {"type": "string"}
                }
            }
        },
        "definitions": {"stage": stage()}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: &Json) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    /// A key `spec` accepts and the schema lacks would be flagged in editors; one the schema
    /// has and `spec` refuses would be offered. Both lists must match.
    #[test]
    fn schema_keys_are_the_keys_spec_accepts() {
        let s = pipeline_schema();
        let sorted = |k: &[&str]| {
            let mut v: Vec<String> = k.iter().map(|s| s.to_string()).collect();
            v.sort();
            v
        };
        assert_eq!(keys(&s["properties"]), sorted(crate::spec::TOP_KEYS));
        assert_eq!(
            keys(&s["definitions"]["stage"]["properties"]),
            sorted(crate::spec::STAGE_KEYS)
        );
        assert_eq!(
            keys(&s["definitions"]["stage"]["properties"]["resources"]["properties"]),
            sorted(crate::spec::RESOURCE_KEYS)
        );
    }
}
