//! Uniform classification metrics (paper Section III, Eqs. 7 and 11–26; Supplement S.IV).
//!
//! Input is a matrix of classification metrics c_j(x) (one row per test sample, bias included)
//! and the true classes; output is the sample-wise, class-wise and uniform accuracies A_SW,
//! A_CW, A_Uni with their optimal thresholds, the same after SoftMax, and the distribution
//! statistics behind the paper's figures. This module knows nothing about training or the
//! pipeline engine. The work is one parallel pass over the matrix ([`rows`]) followed by
//! O(n log n) threshold sweeps ([`sweep`], [`accuracy`]); see docs/metrics.md.

pub mod accuracy;
pub mod distribution;
pub mod input;
pub mod openset;
pub mod output;
pub mod rows;
pub mod sweep;

use anyhow::Result;

pub use accuracy::{Accuracies, Domain};
pub use distribution::Dist;
pub use input::{EvalInput, LogitsFile, Matrix};

/// Default number of histogram bins for the distribution statistics.
pub const DEFAULT_BINS: usize = 100;

/// The full evaluation of one metric matrix.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub n: usize,
    pub classes: usize,
    /// Samples whose row holds a NaN or infinite metric (counted as wrong).
    pub non_finite_samples: usize,
    pub raw: Accuracies,
    pub softmax: Accuracies,
    /// Distribution statistics of `logits` (with bias), when requested.
    pub with_bias: Option<Dist>,
    /// The same for `logits_nobias`, when requested and present.
    pub without_bias: Option<Dist>,
}

/// The raw and SoftMax accuracies, side by side (independent sweeps).
fn both_domains(
    stats: &[rows::RowStat],
    labels: &[u32],
    classes: usize,
) -> (Accuracies, Accuracies) {
    rayon::join(
        || accuracy::accuracies(stats, labels, classes, Domain::Raw),
        || accuracy::accuracies(stats, labels, classes, Domain::Softmax),
    )
}

/// Accuracies (raw and SoftMax) of a metric matrix, without distribution statistics.
pub fn evaluate(logits: &Matrix<'_>, labels: &[u32]) -> Evaluation {
    let stats = rows::row_stats(logits, labels, true);
    let (raw, softmax) = both_domains(&stats, labels, logits.cols);
    Evaluation {
        n: logits.rows,
        classes: logits.cols,
        non_finite_samples: stats.iter().filter(|s| !s.finite).count(),
        raw,
        softmax,
        with_bias: None,
        without_bias: None,
    }
}

/// Everything, including distribution statistics with `bins` histogram bins (over the samples
/// correctly classified with bias, for both matrices).
pub fn evaluate_full(input: &EvalInput<'_>, bins: usize) -> Evaluation {
    let stats = rows::row_stats(&input.logits, &input.labels, true);
    let classes = input.logits.cols;
    let (raw, softmax) = both_domains(&stats, &input.labels, classes);
    let correct: Vec<bool> = stats.iter().map(|s| s.correct()).collect();
    let with_bias = distribution::distribution(&input.logits, &input.labels, &correct, bins);
    let without_bias = input
        .logits_nobias
        .as_ref()
        .map(|m| distribution::distribution(m, &input.labels, &correct, bins));
    Evaluation {
        n: input.logits.rows,
        classes,
        non_finite_samples: stats.iter().filter(|s| !s.finite).count(),
        raw,
        softmax,
        with_bias: Some(with_bias),
        without_bias,
    }
}

/// `repro eval --logits FILE [--json]`.
pub fn cli_eval(logits: &std::path::Path, json: bool) -> Result<i32> {
    let file = LogitsFile::open(logits)?;
    let input = file.read()?;
    let ev = evaluate(&input.logits, &input.labels);
    if json {
        let v = output::to_json(&ev, &input, &serde_json::json!({}));
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", output::table(&ev, &logits.display().to_string()));
    }
    Ok(0)
}
