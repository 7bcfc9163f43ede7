//! `slurm:` in pipeline.yaml, checked where it is written: each bad entry is a spec error at
//! its file:line like any other, when the pipeline is read, instead of an error without a
//! place when the Slurm executor starts. A leaf under spec (the executor reads the checked
//! block, so the pipeline names nothing of the executor).

use serde_json::Value as Json;

use super::SpecError;
use super::yaml::{Node, Value};

/// The keys of `slurm:`.
pub(crate) const KNOWN: &str = "partition, account, qos, sbatch_args, poll_seconds, arrays";

/// One `slurm:` entry: `Err` says what its value must be (the rules the Slurm executor's
/// `SlurmOptions::from_settings` applies, so a block that passes here is one it accepts).
pub(crate) fn check_entry(key: &str, v: &Json) -> Result<(), String> {
    let text = |key: &str, v: &Json| match v {
        Json::String(s) if !s.trim().is_empty() => Ok(()),
        _ => Err(format!(
            "`slurm: {{{key}: …}}` must be a non-empty string, not {v}"
        )),
    };
    match key {
        "partition" | "account" | "qos" => text(key, v),
        "sbatch_args" => match v.as_array() {
            Some(items) => items.iter().try_for_each(|i| text("sbatch_args", i)),
            None => Err(format!(
                "`slurm: {{sbatch_args: …}}` must be a list of strings, not {v}"
            )),
        },
        "poll_seconds" => match v.as_f64() {
            Some(s) if (0.1..=3600.0).contains(&s) => Ok(()),
            _ => Err(format!(
                "`slurm: {{poll_seconds: …}}` must be a number from 0.1 to 3600, not {v}"
            )),
        },
        "arrays" => match v {
            Json::Bool(_) => Ok(()),
            _ => Err(format!(
                "`slurm: {{arrays: …}}` must be true or false, not {v}"
            )),
        },
        other => Err(format!(
            "unknown key `{other}` under `slurm:` (known: {KNOWN})"
        )),
    }
}

/// Check a `slurm:` block; an empty one (`slurm:` alone) is the defaults.
pub(super) fn check(n: &Node, errors: &mut Vec<SpecError>) {
    if matches!(n.value, Value::Null) {
        return;
    }
    let Some(entries) = n.as_map() else {
        errors.push(SpecError::at(
            &n.mark,
            format!(
                "`slurm:` must be a mapping ({KNOWN}), found {}",
                n.type_name()
            ),
        ));
        return;
    };
    for (k, v) in entries {
        let key = k.as_str().unwrap_or_default();
        if let Err(msg) = check_entry(key, &v.to_json()) {
            // An unknown key is its own fault; a bad value, its value's.
            let known = KNOWN.split(", ").any(|x| x == key);
            errors.push(SpecError::at(if known { &v.mark } else { &k.mark }, msg));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::{LoadOptions, load};

    fn load_err(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pipeline.yaml");
        std::fs::write(&f, text).unwrap();
        load(&f, &LoadOptions::default()).unwrap_err().to_string()
    }

    #[test]
    fn a_bad_slurm_entry_is_reported_at_its_line() {
        let stages = "stages:\n  a:\n    cmd: echo\n";
        let e = load_err(&format!("slurm:\n  partition: gpu\n  acount: ml\n{stages}"));
        assert!(
            e.contains("pipeline.yaml:3:") && e.contains("unknown key `acount`"),
            "{e}"
        );
        let e = load_err(&format!("slurm:\n  poll_seconds: 0\n{stages}"));
        assert!(
            e.contains("pipeline.yaml:2:") && e.contains("0.1 to 3600"),
            "{e}"
        );
        let e = load_err(&format!("slurm: [gpu]\n{stages}"));
        assert!(
            e.contains("pipeline.yaml:1:") && e.contains("must be a mapping"),
            "{e}"
        );
    }

    #[test]
    fn a_good_or_empty_slurm_block_loads() {
        for block in [
            "slurm:\n",
            "slurm: {partition: gpu, sbatch_args: [--x=1], arrays: false}\n",
        ] {
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("pipeline.yaml");
            std::fs::write(&f, format!("{block}stages:\n  a:\n    cmd: echo\n")).unwrap();
            load(&f, &LoadOptions::default()).unwrap();
        }
    }
}
