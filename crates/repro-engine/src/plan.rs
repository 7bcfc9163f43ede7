//! The plan: one verdict per selected stage, made before anything runs, and the only place
//! that decides what "upstream will change" means.
//!
//! `repro run` (its up-front assessment), `repro run --dry-run` and `repro status` all call
//! [`plan`], so they cannot disagree about a stage. A verdict is a promise about what the run
//! will do with the stage: [`Verdict::Fresh`] is skipped, [`Verdict::Restorable`] is restored
//! from the run cache, [`Verdict::Stale`] is run (or restored, if the stages upstream of it
//! change its inputs to something already cached), and [`Verdict::Pending`] is decided when
//! the stages upstream of it have run: if they rewrite their outputs byte for byte, it stays
//! fresh. Each stage's own assessment is [`engine::assess`](crate::state::workspace::assess).

use anyhow::Result;

use crate::graph::Dag;
use crate::spec::Pipeline;
use crate::state::db::RunRecord;
use crate::state::fingerprint::Part;
use crate::state::lockfile::{LockEntry, LockFile};
use crate::state::workspace::{Assessment, Workspace, assess_all};

/// What a run will do with one stage, judged before anything runs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Verdict {
    /// Up to date, and nothing upstream of it will change: skipped.
    Fresh,
    /// Out of date for `reasons`, in a way no upstream stage can undo (never run, its command,
    /// parameters or outputs changed, an output missing or edited): it will run. `upstream`:
    /// stages before it that will change first (then its key, and whether the run cache can
    /// restore it instead, is known only after them).
    Stale {
        reasons: Vec<String>,
        upstream: Vec<String>,
    },
    /// Out of date, but the run cache holds outputs for its key, and nothing upstream will
    /// change: restored, not run.
    Restorable { reasons: Vec<String> },
    /// `upstream` stages run (or are restored) first and may change its deps; it is decided
    /// again when they are done. `reasons`: what is out of date now (possibly nothing, or only
    /// deps those stages write).
    Pending {
        reasons: Vec<String>,
        upstream: Vec<String>,
    },
}

impl Verdict {
    pub(crate) fn is_fresh(&self) -> bool {
        matches!(self, Verdict::Fresh)
    }

    /// Why the stage is not fresh now (empty for a fresh one and for a pending stage that is
    /// fresh by its own files).
    pub(crate) fn reasons(&self) -> &[String] {
        match self {
            Verdict::Fresh => &[],
            Verdict::Stale { reasons, .. }
            | Verdict::Restorable { reasons }
            | Verdict::Pending { reasons, .. } => reasons,
        }
    }

    /// The stages before this one that will change first.
    pub(crate) fn upstream(&self) -> &[String] {
        match self {
            Verdict::Stale { upstream, .. } | Verdict::Pending { upstream, .. } => upstream,
            Verdict::Fresh | Verdict::Restorable { .. } => &[],
        }
    }
}

/// One stage of the plan: its verdict and the assessment it rests on (valid for as long as
/// no stage upstream of it changes its outputs).
#[derive(Clone, Debug)]
pub(crate) struct Planned {
    pub verdict: Verdict,
    pub assessment: Assessment,
    /// For a [`Verdict::Restorable`] stage, the run-cache record it is restored from (the one
    /// look-up of its key: the run acts on it rather than asking again).
    pub cached: Option<RunRecord>,
}

/// The verdict on every stage in `selected` (which is in topological order and closed over
/// upstream, as `targets::select` returns it). A stage that cannot be assessed (e.g. a dep that
/// cannot be read) gets its error; the stages after it count it as changing.
pub(crate) fn plan(
    ws: &Workspace,
    p: &Pipeline,
    dag: &Dag,
    selected: &[usize],
    lock: &LockFile,
) -> Vec<(usize, Result<Planned>)> {
    // Stage index → whether it may change its outputs in this run (anything but fresh).
    let mut changing = vec![false; p.stages.len()];
    let mut out = Vec::with_capacity(selected.len());
    for (&i, a) in selected.iter().zip(assess_all(ws, p, selected, lock)) {
        let upstream: Vec<String> = dag
            .upstream(i)
            .into_iter()
            .filter(|&u| changing[u])
            .map(|u| p.stages[u].name.clone())
            .collect();
        let planned = a.and_then(|a| {
            let entry = lock.stages.get(&p.stages[i].name);
            let (verdict, cached) = verdict(ws, &a, entry, upstream)?;
            Ok(Planned {
                verdict,
                assessment: a,
                cached,
            })
        });
        changing[i] = !matches!(&planned, Ok(x) if x.verdict.is_fresh());
        out.push((i, planned));
    }
    out
}

/// The verdict, with the run-cache record of a restorable stage.
fn verdict(
    ws: &Workspace,
    a: &Assessment,
    entry: Option<&LockEntry>,
    upstream: Vec<String>,
) -> Result<(Verdict, Option<RunRecord>)> {
    let reasons = a.reasons.clone();
    Ok(if upstream.is_empty() {
        if a.fresh() {
            (Verdict::Fresh, None)
        } else if let Some(rec) = match ws.db_if_open() {
            Some(db) => db.get_run(&a.key)?,
            None => None,
        } {
            (Verdict::Restorable { reasons }, Some(rec))
        } else {
            (Verdict::Stale { reasons, upstream }, None)
        }
    } else if stale_whatever_upstream_does(a, entry) {
        (Verdict::Stale { reasons, upstream }, None)
    } else {
        (Verdict::Pending { reasons, upstream }, None)
    })
}

/// Whether the stage is out of date for a reason that rewriting its deps cannot undo: upstream
/// stages change deps, never a stage's command, parameters or outputs.
fn stale_whatever_upstream_does(a: &Assessment, entry: Option<&LockEntry>) -> bool {
    let Some(e) = entry else {
        return true; // never run
    };
    let outputs_differ = a.outs.iter().any(|(path, c)| {
        // As `assess` judges them: missing, modified or not recorded.
        match (c.hash(), e.out_hashes.get(path)) {
            (Some(now), Some(recorded)) => now != recorded,
            _ => true,
        }
    });
    // The assessment's typed reasons, not a second walk of the fingerprints; the outputs were
    // judged just above, and a key written by another encoding alone is not a change here.
    outputs_differ
        || (a.changes.iter()).any(|c| !matches!(c.part, Part::Dep | Part::Output | Part::Encoding))
}
