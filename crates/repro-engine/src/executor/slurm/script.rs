//! The batch script and `sbatch` options for one job: pure text, so every rule (resources
//! to options, `%` in log paths, quoting for `/bin/sh`, which environment is exported and
//! which is left to Slurm) is tested without a cluster.

use std::path::Path;

use anyhow::{Result, bail};

use super::SlurmOptions;
use crate::executor::Job;

/// `sbatch` options for a job (everything but the script path); `log` is the file Slurm
/// writes the job's stdout and stderr to.
pub(crate) fn sbatch_args(job: &Job, log: &Path, opts: &SlurmOptions) -> Vec<String> {
    let r = &job.resources;
    let mut a = vec![
        "--parsable".to_string(),
        format!("--job-name=repro:{}", job.stage),
        format!("--chdir={}", job.cwd.display()),
        "--nodes=1".to_string(),
        "--ntasks=1".to_string(),
        format!("--cpus-per-task={}", r.cpus.max(1)),
        // A preempted or failed job is reported and rerun by the next `repro run` (resuming
        // from its checkpoint directory), not silently requeued behind the engine's back.
        "--no-requeue".to_string(),
        "--open-mode=truncate".to_string(),
    ];
    // `%` in --output is a Slurm pattern; such logs are redirected by the script instead.
    let log_text = log.display().to_string();
    if log_text.contains('%') {
        a.push("--output=/dev/null".to_string());
    } else {
        a.push(format!("--output={log_text}"));
    }
    if r.gpus > 0 {
        a.push(format!("--gres=gpu:{}", r.gpus));
    }
    if let Some(mb) = r.mem_mb {
        a.push(format!("--mem={mb}M"));
    }
    if let Some(min) = r.time_min {
        a.push(format!("--time={}", min.max(1)));
    }
    if let Some(p) = r.partition.as_ref().or(opts.default_partition.as_ref()) {
        a.push(format!("--partition={p}"));
    }
    a.extend(opts.extra_args.iter().cloned());
    a
}

/// The batch script: exports the job's environment and `exec`s its argv, all quoted for sh;
/// `log` as for [`sbatch_args`].
pub(crate) fn batch_script(job: &Job, log: &Path, sbatch_args: &[String]) -> Result<String> {
    if job.argv.is_empty() {
        bail!("stage '{}': nothing to run (empty command)", job.stage);
    }
    let mut s = String::new();
    s.push_str("#!/bin/sh\n");
    s.push_str(&format!(
        "# repro: Slurm batch job for stage {} (safe to delete once it has ended).\n",
        sh_quote(&job.stage)
    ));
    s.push_str("# Submitted as: sbatch");
    for a in sbatch_args {
        s.push(' ');
        s.push_str(&sh_quote(a));
    }
    s.push_str(" <this script>\n");
    let log_text = log.display().to_string();
    if log_text.contains('%') {
        s.push_str(&format!("exec >{} 2>&1\n", sh_quote(&log_text)));
    }
    if job.resources.gpus == 0 {
        // Devices named on the submitting machine mean nothing here; Slurm sets this variable
        // itself for jobs that asked for GPUs.
        s.push_str("unset CUDA_VISIBLE_DEVICES\n");
    }
    for (k, v) in &job.env {
        if k == "CUDA_VISIBLE_DEVICES" {
            continue; // Slurm's gres allocation decides.
        }
        if k.is_empty()
            || k.starts_with(|c: char| c.is_ascii_digit())
            || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            bail!(
                "stage '{}': environment variable name {k:?} is not valid in a shell",
                job.stage
            );
        }
        s.push_str(&format!("export {k}={}\n", sh_quote(v)));
    }
    s.push_str("exec");
    for a in &job.argv {
        s.push(' ');
        s.push_str(&sh_quote(a));
    }
    s.push('\n');
    Ok(s)
}

/// The batch script of a job array: element `i` (`$SLURM_ARRAY_TASK_ID`) runs `scripts[i]`,
/// one stage's own batch script (see [`batch_script`]).
pub(crate) fn array_script(base: &str, scripts: &[&Path], sbatch_args: &[String]) -> String {
    let mut s = String::new();
    s.push_str("#!/bin/sh\n");
    s.push_str(&format!(
        "# repro: Slurm job array for {} stages of {} (safe to delete once it has ended).\n",
        scripts.len(),
        sh_quote(base)
    ));
    s.push_str("# Submitted as: sbatch");
    for a in sbatch_args {
        s.push(' ');
        s.push_str(&sh_quote(a));
    }
    s.push_str(" <this script>\n");
    s.push_str("case \"$SLURM_ARRAY_TASK_ID\" in\n");
    for (i, script) in scripts.iter().enumerate() {
        s.push_str(&format!(
            "  {i}) exec /bin/sh {} ;;\n",
            sh_quote(&script.display().to_string())
        ));
    }
    s.push_str(
        "  *) echo \"repro: no stage for array task $SLURM_ARRAY_TASK_ID\" >&2; exit 2 ;;\nesac\n",
    );
    s
}

/// Quote a word for a POSIX shell: bare when it is plainly safe, else single-quoted.
pub(crate) fn sh_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::Resources;
    use std::path::PathBuf;
    use std::process::Command;

    fn job() -> Job {
        Job {
            id: 7,
            stage: "train@bce nu".to_string(),
            argv: vec![
                "/opt/repro".into(),
                "internal".into(),
                "it's \"quoted\" $HOME".into(),
            ],
            env: vec![
                ("REPRO_X".into(), "a b".into()),
                ("CUDA_VISIBLE_DEVICES".into(), "3".into()),
            ],
            cwd: PathBuf::from("/ws"),
            log: PathBuf::from("/ws/logs/train.log"),
            resources: Resources {
                cpus: 4,
                gpus: 2,
                mem_mb: Some(2048),
                time_min: Some(90),
                time_s: Some(5400),
                partition: Some("gpu".into()),
            },
            gpus: vec![],
            usage: None,
        }
    }

    #[test]
    fn resources_become_sbatch_options() {
        let j = job();
        let opts = SlurmOptions {
            default_partition: Some("cpu".into()),
            extra_args: vec!["--account=ml".into()],
            ..Default::default()
        };
        let a = sbatch_args(&j, &j.log, &opts);
        for want in [
            "--job-name=repro:train@bce nu",
            "--chdir=/ws",
            "--cpus-per-task=4",
            "--gres=gpu:2",
            "--mem=2048M",
            "--time=90",
            "--partition=gpu",
            "--output=/ws/logs/train.log",
            "--no-requeue",
            "--account=ml",
        ] {
            assert!(a.iter().any(|x| x == want), "missing {want} in {a:?}");
        }
        // Without a stage partition, the default applies; without GPUs, no gres.
        let mut cpu = job();
        cpu.resources = Resources {
            cpus: 0,
            ..Default::default()
        };
        let a = sbatch_args(&cpu, &cpu.log, &opts);
        assert!(a.contains(&"--partition=cpu".to_string()));
        assert!(a.contains(&"--cpus-per-task=1".to_string()));
        assert!(
            !a.iter()
                .any(|x| x.starts_with("--gres") || x.starts_with("--mem"))
        );
    }

    #[test]
    fn script_execs_argv_verbatim_through_sh() {
        let j = job();
        let text = batch_script(&j, &j.log, &[]).unwrap();
        assert!(
            !text.contains("CUDA_VISIBLE_DEVICES=3"),
            "Slurm assigns GPUs:\n{text}"
        );
        let exec_line = text.lines().find(|l| l.starts_with("exec ")).unwrap();
        // Let a real shell split the line back into words.
        let printed = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "printf '%s\\n' {}",
                exec_line.trim_start_matches("exec ")
            ))
            .output()
            .unwrap();
        let words: Vec<String> = String::from_utf8(printed.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(words, j.argv);
        assert!(text.contains("export REPRO_X='a b'\n"));
    }

    #[test]
    fn bad_env_names_and_empty_commands_are_refused() {
        let mut j = job();
        j.env = vec![("A-B".into(), "x".into())];
        let e = batch_script(&j, &j.log, &[]).unwrap_err().to_string();
        assert!(e.contains("A-B") && e.contains("train@bce nu"), "{e}");
        j.env.clear();
        j.argv.clear();
        assert!(batch_script(&j, &j.log, &[]).is_err());
    }

    #[test]
    fn percent_in_log_path_is_redirected_by_the_script() {
        let mut j = job();
        j.log = PathBuf::from("/ws/logs/100%.log");
        let a = sbatch_args(&j, &j.log, &SlurmOptions::default());
        assert!(a.contains(&"--output=/dev/null".to_string()));
        let text = batch_script(&j, &j.log, &a).unwrap();
        assert!(text.contains("exec >/ws/logs/100%.log 2>&1\n"), "{text}");
    }

    #[test]
    fn the_engine_environment_reaches_the_job_but_not_its_gpu_choice() {
        let mut j = job();
        j.env.push(("REPRO_KEY".into(), "0123abcd".into()));
        j.env.push(("REPRO_STAGE".into(), j.stage.clone()));
        let text = batch_script(&j, &j.log, &[]).unwrap();
        assert!(text.contains("export REPRO_KEY=0123abcd\n"), "{text}");
        assert!(
            text.contains("export REPRO_STAGE='train@bce nu'\n"),
            "{text}"
        );
        assert!(!text.contains("CUDA_VISIBLE_DEVICES=3"), "{text}");
    }

    #[test]
    fn an_array_element_runs_the_script_of_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut scripts = Vec::new();
        for i in 0..3 {
            let p = dir.path().join(format!("it's {i}.sh"));
            std::fs::write(&p, format!("echo stage {i}\n")).unwrap();
            scripts.push(p);
        }
        let refs: Vec<&Path> = scripts.iter().map(PathBuf::as_path).collect();
        let text = array_script("s", &refs, &["--array=0-2%2".into()]);
        assert!(text.contains("--array=0-2%2"), "{text}");
        let run = |task: &str| {
            Command::new("sh")
                .arg("-c")
                .arg(&text)
                .env("SLURM_ARRAY_TASK_ID", task)
                .output()
                .unwrap()
        };
        for i in 0..3 {
            let o = run(&i.to_string());
            assert_eq!(String::from_utf8_lossy(&o.stdout), format!("stage {i}\n"));
        }
        let o = run("7");
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains("no stage for array task 7"));
    }

    #[test]
    fn quoting_is_minimal_and_safe() {
        assert_eq!(sh_quote("abc/d.e"), "abc/d.e");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
        assert_eq!(sh_quote("$x"), "'$x'");
    }
}
