//! `repro status`: per stage, the verdict of [`plan`](crate::plan::plan) and exactly why —
//! the same verdict `repro run` acts on and `repro run --dry-run` prints. Never takes the
//! workspace lock: it reads the lock file and, when the state database is free, its stat cache.

use std::collections::HashMap;

use anyhow::Result;
use serde::Serialize;

use crate::plan::Verdict;
use crate::spec::LoadOptions;
use crate::state::fingerprint::{Change, How, Part};

/// A stage's state as `status` reports it (`state` in `--json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Up to date; the run skips it.
    Fresh,
    /// Out of date; the run runs it (or restores it, see `restorable`).
    Stale,
    /// Decided once the stages upstream of it have run.
    Pending,
}

impl State {
    fn word(self) -> &'static str {
        match self {
            State::Fresh => "fresh",
            State::Stale => "stale",
            State::Pending => "pending",
        }
    }
}

/// One stage as `repro status` reports it (a row, or an object of `--json`).
#[derive(Serialize)]
pub struct StageStatus {
    /// The stage.
    pub stage: String,
    /// Fresh, stale or pending.
    pub state: State,
    /// Why it is not fresh, in words.
    pub reasons: Vec<String>,
    /// The same reasons, typed (a stable machine field): which part changed and how, e.g.
    /// `{"part": "param", "how": "changed", "name": "lr", "old": "0.005", "new": "0.004"}`.
    pub changes: Vec<Change>,
    /// Whether the run cache can restore this stage without running it.
    pub restorable: bool,
}

/// `repro status`: every selected stage's state, without running anything.
pub fn status(
    file: &std::path::Path,
    opts: &LoadOptions,
    targets: &[String],
    downstream: bool,
) -> Result<Vec<StageStatus>> {
    let open = crate::session::Open {
        file,
        load: opts,
        targets,
        downstream,
        access: crate::session::Access::READ,
        up_to_date: if targets.is_empty() {
            crate::session::UpToDate::Check { context: None }
        } else {
            crate::session::UpToDate::Ignore
        },
        interrupts: false,
    };
    let s = match crate::session::Session::open(&open, &mut crate::progress::Phases::start())? {
        crate::session::Opened::UpToDate(stages) => {
            return Ok(stages
                .into_iter()
                .map(|stage| StageStatus {
                    stage,
                    state: State::Fresh,
                    reasons: Vec::new(),
                    changes: Vec::new(),
                    restorable: false,
                })
                .collect());
        }
        crate::session::Opened::Ready(s) => *s,
    };
    let (p, ws) = (&s.p, &s.ws);
    let mut out = Vec::new();
    let mut states: HashMap<&str, State> = HashMap::new();
    for (i, planned) in crate::plan::plan(ws, p, &s.dag, &s.selected, &s.lock) {
        let name = p.stages[i].name.as_str();
        let mut changes = Vec::new();
        let v = match planned {
            Ok(planned) => {
                changes = planned.assessment.changes;
                planned.verdict
            }
            // A path this stage alone cannot hash (a FIFO at its output, an unreadable dep):
            // the stage is stale, for that reason; the others are reported as usual (`run`
            // fails this stage alone too).
            Err(e) => Verdict::Stale {
                reasons: vec![format!("{e:#}")],
                upstream: Vec::new(),
            },
        };
        let state = match v {
            Verdict::Fresh => State::Fresh,
            Verdict::Stale { .. } | Verdict::Restorable { .. } => State::Stale,
            Verdict::Pending { .. } => State::Pending,
        };
        let mut reasons = v.reasons().to_vec();
        if let Verdict::Stale { reasons, .. } = &v
            && changes.is_empty()
        {
            // A stage that could not be assessed: its error, in words only.
            changes.extend(reasons.iter().map(|r| Change::new(Part::Error, r.clone())));
        }
        for u in v.upstream() {
            let (how, text) = match states.get(u.as_str()) {
                Some(State::Pending) => (How::MayRun, format!("upstream stage '{u}' may run")),
                _ => (How::Stale, format!("upstream stage '{u}' is stale")),
            };
            let mut c = Change::new(Part::Upstream, text.clone());
            (c.how, c.name) = (Some(how), Some(u.clone()));
            changes.push(c);
            reasons.push(text);
        }
        states.insert(name, state);
        out.push(StageStatus {
            stage: name.to_string(),
            state,
            reasons,
            changes,
            restorable: matches!(v, Verdict::Restorable { .. }),
        });
    }
    // Only persist stat entries if we hold the database; a cache, so a full disk or a
    // read-only file system only costs the next command some hashing.
    if let Err(e) = ws.save_stat() {
        eprintln!("warning: {e:#}");
    }
    Ok(out)
}

/// Human-readable rendering, written in one go (a line per stage: at 10,000 stages, one write
/// per line would cost more than deciding the verdicts from the up-to-date record). Fresh
/// stages are only counted unless `all` (`--all`): what needs work is what a user looks for,
/// and a large pipeline's fresh stages would bury it.
pub fn print(statuses: &[StageStatus], all: bool) {
    use crate::ui::{Paint, paint};
    use std::fmt::Write as _;
    if crate::ui::quiet() {
        return;
    }
    let count = |s: State| statuses.iter().filter(|x| x.state == s).count();
    let mut text = String::with_capacity(statuses.len() * 32);
    for s in statuses.iter().filter(|s| all || s.state != State::Fresh) {
        let note = if s.restorable {
            "  (restorable from cache)"
        } else if s.state == State::Pending {
            "  (decided after the stages upstream of it run)"
        } else {
            ""
        };
        let colour = match s.state {
            State::Fresh => Paint::Green,
            _ => Paint::Yellow,
        };
        let _ = writeln!(
            text,
            "  {}  {}{note}",
            paint(s.state.word(), colour),
            s.stage
        );
        for r in &s.reasons {
            let _ = writeln!(text, "           - {r}");
        }
    }
    let pending = count(State::Pending);
    let fresh = count(State::Fresh);
    if !all && fresh > 0 {
        let _ = writeln!(
            text,
            "  {fresh} fresh stage(s) not shown (--all shows them)"
        );
    }
    let _ = writeln!(
        text,
        "{} stages: {} fresh, {} stale{}",
        statuses.len(),
        count(State::Fresh),
        count(State::Stale),
        if pending > 0 {
            format!(", {pending} pending")
        } else {
            String::new()
        }
    );
    print!("{text}");
}
