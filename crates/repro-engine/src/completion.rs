//! Shell completion of the pipeline's own names: stage names (full and base, `train` and
//! `train@0.1`) for the commands that take stage targets, and profile names after
//! `--profile`. clap's generated script knows only the command line's fixed words, so each
//! shell's script gets a small addition that asks `repro internal complete stages|profiles`
//! (which reads the pipeline in the current directory, or the one `-f` names) and adds its
//! answer to clap's.

use std::path::Path;

use serde_json::Value as Json;

/// The commands whose positional arguments are stage targets (with `exp` and `plots`, their
/// `show`).
pub(crate) const STAGE_COMMANDS: &[&str] = &["run", "submit", "status", "dag", "exp", "plots"];

/// Options that take a value: after them, the value is completed by clap, not as a stage.
const VALUE_OPTIONS: &str = "-f|--file|--set|--max-stages|-j|--jobs|--executor|--resources|-o|--out|--name|-t|--target|--sort|--metrics|--color|--remote";

/// Stage names of a loaded pipeline: each full name and each base name of an expansion,
/// sorted, once each.
pub fn stage_names(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = std::collections::BTreeSet::new();
    for n in names {
        if let Some((base, _)) = n.split_once('@') {
            out.insert(base.to_string());
        }
        out.insert(n);
    }
    out.into_iter().collect()
}

/// The names under a top-level key of a pipeline file (`stages` or `profiles`), read as plain
/// YAML: what completion offers when the pipeline does not load (it is being edited).
pub fn top_level_names(file: &Path, key: &str) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    let Ok(doc) = serde_yaml_ng::from_str::<Json>(&text) else {
        return Vec::new();
    };
    doc.get(key)
        .and_then(Json::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// What to append to clap's script for `shell` (`bash`, `zsh`, `fish`; others get nothing).
pub fn addition(shell: &str) -> String {
    let stage_cmds = STAGE_COMMANDS.join("|");
    match shell {
        "bash" => format!(
            r#"
# Stage and profile names of the pipeline here (or the one -f names), added to clap's words.
_repro_names() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local file=pipeline.yaml i what=
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in -f|--file) file="${{COMP_WORDS[i+1]}}" ;; esac
    done
    if [[ "$prev" == --profile ]]; then
        what=profiles
    elif [[ "$cur" != -* ]]; then
        case "$prev" in {VALUE_OPTIONS}) ;; *)
            case "${{COMP_WORDS[1]}}" in
                {stage_cmds}) what=stages ;;
            esac
            case "${{COMP_WORDS[1]}}" in exp|plots)
                [[ "${{COMP_WORDS[2]}}" == show && $COMP_CWORD -gt 2 ]] || what= ;;
            esac ;;
        esac
    fi
    [[ "$what" == profiles ]] && COMPREPLY=() || _repro "$@"
    if [[ -n "$what" ]]; then
        local names
        names="$(repro internal complete "$what" -f "$file" 2>/dev/null)"
        COMPREPLY+=($(compgen -W "$names" -- "$cur"))
    fi
}}
complete -F _repro_names -o nosort -o bashdefault -o default repro
"#
        ),
        "zsh" => format!(
            r#"
# Stage and profile names of the pipeline here (source this script: `source <(repro
# completions zsh)`).
_repro_names() {{
    local -a names
    if [[ ${{words[CURRENT-1]}} == --profile ]]; then
        names=(${{(f)"$(repro internal complete profiles 2>/dev/null)"}})
        compadd -a names
        return
    fi
    if [[ ${{words[2]}} == ({stage_cmds}) && ${{words[CURRENT]}} != -* ]]; then
        names=(${{(f)"$(repro internal complete stages 2>/dev/null)"}})
        compadd -a names
    fi
    _repro "$@"
}}
compdef _repro_names repro
"#
        ),
        "fish" => {
            let cmds = STAGE_COMMANDS.join(" ");
            format!(
                r#"
# Stage and profile names of the pipeline here.
complete -c repro -n '__fish_seen_subcommand_from {cmds}' -a '(repro internal complete stages 2>/dev/null)'
complete -c repro -l profile -x -a '(repro internal complete profiles 2>/dev/null)'
"#
            )
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_have_bases_once() {
        let n = stage_names(["train@1".into(), "train@2".into(), "prepare".into()]);
        assert_eq!(n, ["prepare", "train", "train@1", "train@2"]);
    }

    #[test]
    fn names_from_a_pipeline_that_does_not_load() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("pipeline.yaml");
        std::fs::write(
            &f,
            "stages:\n  a: {cmd: x}\n  b: {}\nprofiles:\n  quick: {}\n",
        )
        .unwrap();
        assert_eq!(top_level_names(&f, "stages"), ["a", "b"]);
        assert_eq!(top_level_names(&f, "profiles"), ["quick"]);
        assert!(top_level_names(&d.path().join("none.yaml"), "stages").is_empty());
    }

    #[test]
    fn each_shell_calls_back_for_names() {
        for sh in ["bash", "zsh", "fish"] {
            let a = addition(sh);
            assert!(a.contains("repro internal complete"), "{sh}");
            assert!(a.contains("profile"), "{sh}");
            assert!(a.contains("stages"), "{sh}");
        }
        assert!(addition("elvish").is_empty());
    }
}
