//! What Slurm says about jobs: one batched `squeue` query for the tracked jobs, `sacct` for
//! those that have left it, the parsers for both, and the translation of a final state
//! (`TIMEOUT`, `OUT_OF_MEMORY`, `PREEMPTED`, …) into the engine's [`Outcome`] in words a
//! user can act on. Elements of a job array are told apart by their task index: Slurm spells
//! them `1234_7`, and a still-pending block `1234_[8-19%4]`, which is expanded here.

use std::collections::HashSet;

use anyhow::{Result, bail};

use super::SlurmOptions;
use super::client::run_client;
use crate::executor::Outcome;

/// What Slurm says about one job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobStatus {
    /// The job id, or the array job id for an element of a job array.
    pub slurm_id: u64,
    /// The array task index (`SLURM_ARRAY_TASK_ID`) for an element of a job array.
    pub task: Option<u32>,
    /// Slurm's state name, e.g. `PENDING`, `RUNNING`, `COMPLETED`, `TIMEOUT`.
    pub state: String,
    /// Slurm's reason, e.g. `Resources`, `TimeLimit`, `NonZeroExitCode` (`None` → empty).
    pub reason: String,
    /// The nodes it ran on, as Slurm lists them.
    pub nodes: String,
    /// How its batch script ended, once it has (sacct only).
    pub exit: Option<ExitStatus>,
}

/// How a finished job's batch script ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// States in which a job has not ended yet.
pub(crate) fn is_active(state: &str) -> bool {
    matches!(
        state,
        "PENDING"
            | "CONFIGURING"
            | "RUNNING"
            | "COMPLETING"
            | "SUSPENDED"
            | "REQUEUED"
            | "REQUEUE_FED"
            | "REQUEUE_HOLD"
            | "RESIZING"
            | "SIGNALING"
            | "STAGE_OUT"
            | "STOPPED"
            | "RESV_DEL_HOLD"
    )
}

/// `None` while the job has not ended; else how it ended, in Slurm's words.
pub(crate) fn outcome_of(s: &JobStatus, time_min: Option<u64>) -> Option<Outcome> {
    if is_active(&s.state) {
        return None;
    }
    if s.state == "COMPLETED" && matches!(s.exit, Some(ExitStatus::Code(0)) | None) {
        return Some(Outcome::Succeeded);
    }
    let mut msg = format!("Slurm: {}", s.state);
    if !s.reason.is_empty() && s.reason != "None" {
        msg.push_str(&format!(" ({})", s.reason));
    }
    msg.push_str(&format!(", job {}", s.display_id()));
    match (s.state.as_str(), time_min) {
        ("TIMEOUT", Some(m)) => msg.push_str(&format!(
            "; it ran past its time limit of {m} min (raise `resources: {{time: …}}`)"
        )),
        ("OUT_OF_MEMORY", _) => {
            msg.push_str("; it ran out of memory (raise `resources: {mem: …}`)")
        }
        ("PREEMPTED" | "NODE_FAIL" | "BOOT_FAIL", _) => {
            msg.push_str("; it will rerun (and resume from its checkpoint) on the next `repro run`")
        }
        _ => match s.exit {
            Some(ExitStatus::Code(c)) if c != 0 => msg.push_str(&format!("; exit code {c}")),
            Some(ExitStatus::Signal(sig)) => msg.push_str(&format!("; killed by signal {sig}")),
            _ => {}
        },
    }
    Some(Outcome::Failed(msg))
}

pub(super) fn describe_active(s: &JobStatus) -> String {
    let mut m = format!("slurm job {} {}", s.display_id(), s.state.to_lowercase());
    if s.state == "PENDING" && !s.reason.is_empty() && s.reason != "None" {
        m.push_str(&format!(" ({})", s.reason));
    } else if !s.nodes.is_empty() && s.state == "RUNNING" {
        m.push_str(&format!(" on {}", s.nodes));
    }
    m
}

impl JobStatus {
    /// The id as Slurm prints it: `1234`, or `1234_7` for an array element.
    pub(crate) fn display_id(&self) -> String {
        job_display_id(self.slurm_id, self.task)
    }
}

pub(super) fn job_display_id(id: u64, task: Option<u32>) -> String {
    match task {
        Some(t) => format!("{id}_{t}"),
        None => id.to_string(),
    }
}

/// Ids joined for `--jobs=`/`scancel`, each once (elements of one array share theirs, and an
/// array job id stands for all of its elements).
pub(super) fn join_ids(ids: &[u64]) -> String {
    let mut seen = HashSet::new();
    ids.iter()
        .filter(|i| seen.insert(**i))
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Parse a job id as `squeue`'s `JobArrayID` and `sacct`'s `JobID` print it: `1234` (a job),
/// `1234_7` (an array element), `1234_[8-19%4]` or `1234_[1,3-5]` (pending elements, not yet
/// split off); `None` for job steps (`1234.batch`, `1234_7.0`) and anything else.
pub(crate) fn parse_job_id(text: &str) -> Option<Vec<(u64, Option<u32>)>> {
    let text = text.trim();
    let Some((id, tasks)) = text.split_once('_') else {
        return Some(vec![(text.parse().ok()?, None)]);
    };
    let id: u64 = id.parse().ok()?;
    if let Ok(t) = tasks.parse::<u32>() {
        return Some(vec![(id, Some(t))]);
    }
    let inner = tasks.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner.split('%').next()?; // `%4`: the concurrency cap
    let mut out = Vec::new();
    for part in inner.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let a = part.parse::<u32>().ok()?;
                (a, a)
            }
        };
        // Ranges come from arrays repro submitted; a huge one is not ours.
        if b < a || b - a > 1_000_000 {
            return None;
        }
        out.extend((a..=b).map(|t| (id, Some(t))));
    }
    Some(out)
}

/// One `squeue` call for many jobs, finished ones included (they stay for `MinJobAge`).
pub(super) fn squeue(opts: &SlurmOptions, ids: &[u64]) -> Result<Vec<JobStatus>> {
    let args = [
        "--noheader".to_string(),
        "--states=all".to_string(),
        format!("--jobs={}", join_ids(ids)),
        "--Format=JobArrayID:|,State:|,Reason:|,exit_code:|,NodeList:|".to_string(),
    ];
    let out = run_client(opts, "squeue", &args)?;
    if !out.ok {
        // squeue fails outright when *none* of the ids is known any more.
        if out.stderr.contains("Invalid job id") {
            return Ok(Vec::new());
        }
        bail!("squeue failed: {}", out.summary());
    }
    Ok(parse_squeue(&out.stdout))
}

/// Parse `squeue --Format=JobArrayID:|,State:|,Reason:|,exit_code:|,NodeList:|` output; a
/// line for a block of pending array elements gives one status per element.
pub(crate) fn parse_squeue(text: &str) -> Vec<JobStatus> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split('|').map(str::trim).collect();
            if f.len() < 4 {
                return None;
            }
            let ids = parse_job_id(f[0])?;
            // exit_code is the raw wait status of the batch script.
            let exit = f[3].parse::<i32>().ok().map(|w| {
                if w & 0x7f != 0 {
                    ExitStatus::Signal(w & 0x7f)
                } else {
                    ExitStatus::Code(w >> 8)
                }
            });
            Some(ids.into_iter().map(move |(slurm_id, task)| JobStatus {
                slurm_id,
                task,
                state: f[1].to_string(),
                reason: f[2].to_string(),
                nodes: f.get(4).map(|s| s.to_string()).unwrap_or_default(),
                exit,
            }))
        })
        .flatten()
        .collect()
}

/// Final states from the accounting records (slurmdbd), or from the job completion log
/// (`sacct -c`, clusters without slurmdbd). Empty when neither knows the jobs. `poll` uses it
/// for jobs that have left `squeue`.
pub fn sacct(opts: &SlurmOptions, ids: &[u64]) -> Vec<JobStatus> {
    let list = join_ids(ids);
    let attempts: [&[&str]; 2] = [
        &[
            "--noheader",
            "--parsable2",
            "--allocations",
            // JobID (not JobIDRaw): array elements as `1234_7`.
            "--format=JobID,State,ExitCode,Reason",
        ],
        &[
            "--completion",
            "--noheader",
            "--parsable2",
            "--format=JobID,State,ExitCode",
        ],
    ];
    for base in attempts {
        let mut args: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        args.push(format!("--jobs={list}"));
        if let Ok(out) = run_client(opts, "sacct", &args)
            && out.ok
        {
            let found = parse_sacct(&out.stdout);
            if !found.is_empty() {
                return found;
            }
        }
    }
    Vec::new()
}

/// Parse `sacct --parsable2` lines `id|STATE[ by uid]|exit:signal[|reason]`.
pub(crate) fn parse_sacct(text: &str) -> Vec<JobStatus> {
    let mut seen = HashSet::new();
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split('|').collect();
            if f.len() < 3 {
                return None;
            }
            // Skips steps like `12.batch`; a pending block is not a final state.
            let ids = parse_job_id(f[0])?;
            let [(slurm_id, task)] = ids[..] else {
                return None;
            };
            let state = f[1].split_whitespace().next()?.to_string();
            let exit = f[2].split_once(':').and_then(|(c, s)| {
                let (c, s) = (c.parse::<i32>().ok()?, s.parse::<i32>().ok()?);
                Some(if s != 0 {
                    ExitStatus::Signal(s)
                } else {
                    ExitStatus::Code(c)
                })
            });
            let reason = f.get(3).map(|r| r.trim().to_string()).unwrap_or_default();
            seen.insert((slurm_id, task)).then_some(JobStatus {
                slurm_id,
                task,
                state,
                reason,
                nodes: String::new(),
                exit,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines_parse_with_wait_status() {
        let text = "1|COMPLETED|None|0|node1|\n5|FAILED|NonZeroExitCode|768|node1|\n\
                    6|CANCELLED|None|15|node1|\n9|PENDING|Resources|0||\n";
        let s = parse_squeue(text);
        assert_eq!(s.len(), 4);
        assert_eq!(s[1].exit, Some(ExitStatus::Code(3)));
        assert_eq!(s[2].exit, Some(ExitStatus::Signal(15)));
        assert_eq!(outcome_of(&s[0], None), Some(Outcome::Succeeded));
        let Some(Outcome::Failed(m)) = outcome_of(&s[1], None) else {
            panic!()
        };
        assert!(
            m.contains("FAILED (NonZeroExitCode)") && m.contains("exit code 3"),
            "{m}"
        );
        assert_eq!(outcome_of(&s[3], None), None);
        assert_eq!(describe_active(&s[3]), "slurm job 9 pending (Resources)");
    }

    #[test]
    fn timeouts_and_preemption_carry_slurms_reason() {
        let t = JobStatus {
            slurm_id: 12,
            task: None,
            state: "TIMEOUT".into(),
            reason: "TimeLimit".into(),
            nodes: "node1".into(),
            exit: Some(ExitStatus::Code(0)),
        };
        let Some(Outcome::Failed(m)) = outcome_of(&t, Some(1)) else {
            panic!()
        };
        assert!(m.starts_with("Slurm: TIMEOUT (TimeLimit), job 12"), "{m}");
        assert!(m.contains("time limit of 1 min"), "{m}");
        let p = JobStatus {
            state: "PREEMPTED".into(),
            reason: "None".into(),
            ..t
        };
        let Some(Outcome::Failed(m)) = outcome_of(&p, None) else {
            panic!()
        };
        assert!(
            m.contains("PREEMPTED") && m.contains("next `repro run`"),
            "{m}"
        );
    }

    #[test]
    fn array_elements_are_told_apart_and_pending_blocks_expanded() {
        assert_eq!(parse_job_id("77"), Some(vec![(77, None)]));
        assert_eq!(parse_job_id("77_3"), Some(vec![(77, Some(3))]));
        assert_eq!(
            parse_job_id("77_[2-4%2]"),
            Some(vec![(77, Some(2)), (77, Some(3)), (77, Some(4))])
        );
        assert_eq!(
            parse_job_id("77_[1,5-6]"),
            Some(vec![(77, Some(1)), (77, Some(5)), (77, Some(6))])
        );
        for bad in ["77.batch", "77_3.0", "x", "77_[4-2]", "77_[", ""] {
            assert_eq!(parse_job_id(bad), None, "{bad}");
        }
        let text = "142_[2-3%2]|PENDING|JobArrayTaskLimit|0||\n142_1|RUNNING|None|0|node1|\n\
                    142_0|FAILED|NonZeroExitCode|768|node1|\n150|RUNNING|None|0|node1|\n";
        let s = parse_squeue(text);
        let ids: Vec<String> = s.iter().map(JobStatus::display_id).collect();
        assert_eq!(ids, ["142_2", "142_3", "142_1", "142_0", "150"]);
        let Some(Outcome::Failed(m)) = outcome_of(&s[3], None) else {
            panic!()
        };
        assert!(m.contains("job 142_0") && m.contains("exit code 3"), "{m}");
        assert_eq!(
            describe_active(&s[0]),
            "slurm job 142_2 pending (JobArrayTaskLimit)"
        );
        let s = parse_sacct("142_0|FAILED|3:0|\n142_0.batch|FAILED|3:0|\n142_1|COMPLETED|0:0|\n");
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].slurm_id, s[0].task), (142, Some(0)));
        assert_eq!(join_ids(&[142, 142, 150, 142]), "142,150");
    }

    #[test]
    fn sacct_lines_parse_and_skip_steps() {
        let text = "5|FAILED|3:0|\n5.batch|FAILED|3:0|\n8|CANCELLED by 0|0:15|None\n";
        let s = parse_sacct(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].exit, Some(ExitStatus::Code(3)));
        assert_eq!(s[1].state, "CANCELLED");
        assert_eq!(s[1].exit, Some(ExitStatus::Signal(15)));
    }
}
