//! Command-line conventions, through the real binary: -q, -v, --color, -n, status --check,
//! targets given as output paths, --downstream, shell completions, help on every option.

mod common;

use clap::CommandFactory;
use common::Ws;

/// Three stages in a line, and one beside them.
const CHAIN: &str = "stages:
  a:
    cmd: echo a-out; echo a-err >&2; echo a >> executions.log; echo 1 > a.txt
    outs: [a.txt]
  b:
    cmd: echo b >> executions.log; cat a.txt > out/b.txt
    deps: [a.txt]
    outs: [out/b.txt]
  c:
    cmd: echo c >> executions.log; cat out/b.txt > c.txt
    deps: [out/b.txt]
    outs: [c.txt]
  other:
    cmd: echo other >> executions.log; echo 2 > other.txt
    outs: [other.txt]
";

#[test]
fn every_option_and_argument_has_help() {
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            if a.get_help().is_none() && a.get_long_help().is_none() {
                missing.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none() {
                missing.push(format!("{path} {} (command)", sub.get_name()));
            }
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    walk(&repro::cli::Cli::command(), "repro", &mut missing);
    assert!(missing.is_empty(), "without help text: {missing:?}");
}

#[test]
fn status_check_fails_while_anything_is_stale() {
    let ws = Ws::new(CHAIN);
    let o = ws.output(&["status", "--check"]);
    assert_eq!(o.status.code(), Some(1), "{}", common::both(&o));
    ws.ok(&["run"]);
    ws.ok(&["status", "--check"]);
    // Quiet: the exit code alone.
    ws.write("a.txt", "edited\n");
    let o = ws.output(&["status", "--check", "-q"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty(), "{}", common::both(&o));
    // Only the selected stages count.
    ws.ok(&["status", "--check", "other"]);
}

#[test]
fn quiet_prints_only_failures_and_verbose_streams_stage_output() {
    let ws = Ws::new(CHAIN);
    let o = ws.output(&["run", "-q", "a"]);
    assert!(o.status.success());
    assert!(
        o.stdout.is_empty() && o.stderr.is_empty(),
        "{}",
        common::both(&o)
    );

    let out = ws.ok(&["run", "--force", "-v", "a"]);
    assert!(out.contains("a | a-out"), "{out}");
    assert!(out.contains("a | a-err"), "{out}");
    // The log is written either way.
    let log = ws.read("cache/logs/a.log");
    assert!(log.contains("a-out") && log.contains("a-err"), "{log}");

    let bad = Ws::new("stages:\n  boom:\n    cmd: echo nope; exit 3\n");
    let o = bad.output(&["run", "-q"]);
    assert_eq!(o.status.code(), Some(1));
    let text = common::both(&o);
    assert!(
        text.contains("FAILED boom") && text.contains("nope"),
        "{text}"
    );
    assert!(!text.contains("0 ran"), "{text}");
}

#[test]
fn dry_run_has_a_short_flag() {
    let ws = Ws::new(CHAIN);
    let out = ws.ok(&["run", "-n"]);
    assert!(out.contains("would run a"), "{out}");
    assert!(ws.executions().is_empty());
}

#[test]
fn targets_can_be_output_paths_and_downstream_adds_what_follows() {
    let ws = Ws::new(CHAIN);
    // The stage that produces out/b.txt, and what it needs.
    ws.ok(&["run", "out/b.txt"]);
    assert_eq!(ws.executions(), ["a", "b"]);
    ws.clear_executions();
    // A directory of outputs selects every stage that writes under it.
    ws.ok(&["run", "--force", "out"]);
    assert_eq!(ws.executions(), ["a", "b"]);
    ws.clear_executions();
    ws.ok(&["run", "--force", "--downstream", "b"]);
    assert_eq!(ws.executions(), ["a", "b", "c"]);
    assert_eq!(ws.status_names(&["--downstream", "a.txt"]), ["a", "b", "c"]);
    let err = ws.fail(&["run", "no/such/file.txt"]);
    assert!(err.contains("no stage produces"), "{err}");
}

#[test]
fn completions_for_three_shells() {
    let ws = Ws::new(CHAIN);
    for shell in ["bash", "zsh", "fish"] {
        let out = ws.ok(&["completions", shell]);
        assert!(
            out.contains("repro") && out.contains("downstream"),
            "{shell}: {out}"
        );
    }
    ws.fail(&["completions", "tcsh"]);
}

#[test]
fn color_is_on_only_when_asked_or_on_a_terminal() {
    let ws = Ws::new(CHAIN);
    let always = ws.ok(&["status", "--color", "always"]);
    assert!(always.contains("\x1b[33mstale"), "{always}");
    let never = ws.ok(&["status", "--color", "never"]);
    assert!(!never.contains('\x1b'), "{never}");
    // auto, piped: plain, and NO_COLOR is respected too.
    let auto = common::both(&ws.cmd(&["status"]).env("NO_COLOR", "1").output().unwrap());
    assert!(!auto.contains('\x1b'), "{auto}");
}

#[test]
fn a_printing_command_ends_quietly_when_its_reader_is_gone() {
    use std::os::unix::process::ExitStatusExt;
    let ws = Ws::new(CHAIN);
    ws.ok(&["run"]);
    for args in [&["status", "--all"][..], &["exp", "show"], &["dag"]] {
        // A pipe whose reading end is closed before repro writes: what `| head` leaves behind.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = ws
            .cmd(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "repro {args:?}: {err}");
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "repro {args:?}: {err}"
        );
    }
}
