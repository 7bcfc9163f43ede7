//! The built-in `evaluate` stage kind: a logits file in, metrics.json out.
//!
//! ```yaml
//! evaluate:
//!   uses: evaluate
//!   with:
//!     logits: runs/bce-nu/logits.safetensors   # required
//!     out: runs/bce-nu/metrics.json            # default: metrics.json next to `logits`
//!     bins: 100                                # histogram bins (default 100)
//!     meta: {dataset: cifar100, loss: bce-nu}  # copied verbatim to `run` in metrics.json
//! ```
//!
//! The output is written to a temporary file in the same directory and renamed into place,
//! so an interrupted stage never leaves a complete-looking partial metrics.json.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::metrics;
use repro_engine::kinds::{Kind, Run, StageContext, ensure_param, progress};
use repro_engine::write_atomic;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Params {
    logits: PathBuf,
    #[serde(default)]
    out: Option<PathBuf>,
    #[serde(default)]
    meta: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    bins: Option<usize>,
    /// Open-set study: the metrics of test images of classes the model never saw; adds
    /// `openset` (rejection at t*, at the learned bias and at the matched point where 95 % of
    /// the known images are accepted; AUROC) to metrics.json.
    #[serde(default)]
    unknown_logits: Option<PathBuf>,
}

impl Params {
    fn out(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| match self.logits.parent() {
                Some(dir) => dir.join("metrics.json"),
                None => PathBuf::from("metrics.json"),
            })
    }
}

pub struct Evaluate;

impl Kind for Evaluate {
    type Params = Params;

    fn name(&self) -> &'static str {
        "evaluate"
    }

    fn version(&self) -> u32 {
        // 2: the exp kernel changed, so SoftMax thresholds differ in their last bits.
        // 3: open set adds the matched operating point (`known95`).
        3
    }

    fn written_paths(&self, p: &Params) -> Vec<(&'static str, PathBuf)> {
        // Without `out`, the file goes next to `logits`.
        vec![(if p.out.is_some() { "out" } else { "logits" }, p.out())]
    }

    fn check(&self, p: &Params) -> Result<()> {
        ensure_param!(
            p.bins != Some(0),
            "bins",
            "evaluate: `bins` must be at least 1"
        );
        ensure_param!(
            !p.logits.as_os_str().is_empty(),
            "logits",
            "evaluate: `logits` must name the safetensors file to evaluate"
        );
        Ok(())
    }

    fn metrics(&self, p: &Params) -> Vec<String> {
        p.out()
            .to_str()
            .and_then(|o| repro_engine::normalise_path(o, false).ok())
            .into_iter()
            .collect()
    }
}

impl Run for Evaluate {
    fn run(&self, p: Params, ctx: &StageContext) -> Result<()> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(ctx.threads.max(1))
            .build()
            .context("evaluate: cannot start worker threads")?;
        let logits = ctx.path(&p.logits);
        progress::report(&format!("reading {}", p.logits.display()), Some(0.0));
        let file = metrics::LogitsFile::open(&logits)?;
        let input = file.read()?;
        progress::report(
            &format!("evaluating {} x {}", input.logits.rows, input.logits.cols),
            Some(0.2),
        );
        let ev = pool
            .install(|| metrics::evaluate_full(&input, p.bins.unwrap_or(metrics::DEFAULT_BINS)));
        let run = serde_json::Value::Object(p.meta.clone().unwrap_or_default());
        let mut json = metrics::output::to_json(&ev, &input, &run);
        if let Some(u) = &p.unknown_logits {
            let file = metrics::LogitsFile::open(&ctx.path(u))?;
            let unknown = file.read_logits()?;
            anyhow::ensure!(
                unknown.cols == input.logits.cols,
                "evaluate: {} has {} columns but {} has {}; both come from the same model",
                u.display(),
                unknown.cols,
                p.logits.display(),
                input.logits.cols
            );
            let mut at = Vec::new();
            if let Some(t) = ev.raw.uni.t_star() {
                at.push(("t_star", t));
            }
            at.push(("bias", 0.0));
            if let Some(t) =
                metrics::openset::matched_threshold(&input.logits, metrics::openset::MATCHED_ACCEPT)
            {
                at.push(("known95", t));
            }
            let o = metrics::openset::openset(&input.logits, &input.labels, &unknown, &at);
            json["openset"] = serde_json::to_value(&o)?;
        }
        let out = ctx.path(p.out());
        write_atomic(&out, serde_json::to_string_pretty(&json)?.as_bytes())?;
        progress::report(
            &format!(
                "A_SW {:.2} A_CW {:.2} A_Uni {:.2}",
                ev.raw.pct(ev.raw.count_sw),
                ev.raw.pct(ev.raw.count_cw),
                ev.raw.pct(ev.raw.count_uni)
            ),
            Some(1.0),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_checked() {
        let k = repro_engine::kinds::Registry::default().with(Evaluate);
        let check = |v| k.resolve("evaluate", &v);
        let ok = check(serde_json::json!({"logits": "a/l.safetensors"})).unwrap();
        assert_eq!(
            ok.writes,
            vec![("logits".to_string(), PathBuf::from("a/metrics.json"))],
            "without `out`, metrics.json goes next to the logits"
        );
        assert_eq!(ok.metrics, vec!["a/metrics.json".to_string()]);
        assert!(check(serde_json::json!({"logits": "l", "bins": 0})).is_err());
        assert!(check(serde_json::json!({"logits": "l", "colour": 1})).is_err());
        assert!(check(serde_json::json!({})).is_err());
    }
}
