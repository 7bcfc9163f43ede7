//! `repro status`: per stage, fresh or stale and exactly why — computed by `engine::assess`,
//! the same code `repro run` uses to decide. Never takes the workspace lock: it reads the
//! lock file and, when the state database is free, its stat cache.

use std::collections::BTreeSet;

use anyhow::Result;
use serde::Serialize;

use crate::spec::LoadOptions;

#[derive(Serialize)]
pub struct StageStatus {
    pub stage: String,
    pub state: &'static str,
    pub reasons: Vec<String>,
    /// Whether the run cache can restore this stage without running it.
    pub restorable: bool,
}

pub fn status(
    file: &std::path::Path,
    opts: &LoadOptions,
    targets: &[String],
    downstream: bool,
) -> Result<Vec<StageStatus>> {
    let state = crate::run::load_state_in_background(file, None);
    let (p, mut dag) = crate::run::load(file, opts)?;
    let selected = crate::targets::select(&p, &dag, targets, downstream)?;
    let (_, mut ws, lock) = state.join()?;
    ws.source_stats = std::mem::take(&mut dag.source_stats);
    let mut stale: BTreeSet<usize> = BTreeSet::new();
    let mut out = Vec::new();
    let assessed = crate::engine::assess_all(&ws, &p, &selected, &lock);
    for (&i, a) in selected.iter().zip(assessed) {
        let s = &p.stages[i];
        let a = a?;
        let mut reasons = a.reasons.clone();
        for u in dag.upstream(i) {
            if stale.contains(&u) {
                reasons.push(format!("upstream stage '{}' is stale", p.stages[u].name));
            }
        }
        let restorable = !a.fresh() && ws.in_run_cache(&a.key)?;
        if !reasons.is_empty() {
            stale.insert(i);
        }
        out.push(StageStatus {
            stage: s.name.clone(),
            state: if reasons.is_empty() { "fresh" } else { "stale" },
            reasons,
            restorable,
        });
    }
    // Only persist stat entries if we hold the database; a cache, so a full disk or a
    // read-only file system only costs the next command some hashing.
    if let Err(e) = ws.save_stat() {
        eprintln!("warning: {e:#}");
    }
    Ok(out)
}

/// Human-readable rendering.
pub fn print(statuses: &[StageStatus]) {
    use crate::ui::{Paint, paint};
    if crate::ui::quiet() {
        return;
    }
    let stale = statuses.iter().filter(|s| s.state == "stale").count();
    for s in statuses {
        if s.state == "fresh" {
            println!("  {}  {}", paint("fresh", Paint::Green), s.stage);
        } else {
            println!(
                "  {}  {}{}",
                paint("stale", Paint::Yellow),
                s.stage,
                if s.restorable {
                    "  (restorable from cache)"
                } else {
                    ""
                }
            );
            for r in &s.reasons {
                println!("           - {r}");
            }
        }
    }
    println!(
        "{} stages: {} fresh, {stale} stale",
        statuses.len(),
        statuses.len() - stale
    );
}
