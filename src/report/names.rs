//! Canonical names of the paper's datasets, models and losses, their display forms, and the
//! paper's ordering of them.
//!
//! Runs name things however the pipeline author wrote them (`ImageNet`, `imagenet-1k`,
//! `bce_nu`); the published values use one spelling. Matching a run to a paper cell goes
//! through [`dataset`], [`model`] and [`loss`], which map known aliases to the paper's names
//! and leave anything else (a user's own dataset or loss) as written, lower-cased.

use std::cmp::Ordering;

/// The twelve losses of Table I, in the paper's column order.
pub const LOSSES: [&str; 12] = [
    "soft-0", "soft-d", "soft-u", "soft-n0", "soft-nd", "soft-nu", "bce-0", "bce-d", "bce-u",
    "bce-n0", "bce-nd", "bce-nu",
];

/// The paper's datasets, in its order.
pub const DATASETS: [&str; 6] = [
    "imagenet-1k",
    "cub",
    "aircraft",
    "flowers102",
    "cars",
    "dogs",
];

/// The paper's models, in its order.
pub const MODELS: [&str; 3] = ["resnet50", "resnet101", "densenet161"];

fn key(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .flat_map(|c| c.to_lowercase())
        .collect()
}

/// Canonical dataset name: the paper's name for a known alias, else the input lower-cased.
pub fn dataset(s: &str) -> String {
    let k = key(s);
    let canon = match k.as_str() {
        "imagenet" | "imagenet1k" | "ilsvrc2012" | "imagenet2012" | "in1k" => "imagenet-1k",
        "cub" | "cub200" | "cub2002011" | "cub200011" | "birds" => "cub",
        "aircraft" | "fgvcaircraft" => "aircraft",
        "flowers102" | "flowers" | "oxfordflowers102" => "flowers102",
        "cars" | "stanfordcars" | "cars196" => "cars",
        "dogs" | "stanforddogs" => "dogs",
        _ => return s.trim().to_lowercase(),
    };
    canon.to_string()
}

/// Canonical model name (`resnet50`, …), else the input lower-cased.
pub fn model(s: &str) -> String {
    let k = key(s);
    match MODELS.iter().find(|m| **m == k) {
        Some(m) => m.to_string(),
        None => s.trim().to_lowercase(),
    }
}

/// Canonical loss name (`bce-nu`, …); accepts `bce_nu`, `L_bce-nu`, `BCE-NU`.
pub fn loss(s: &str) -> String {
    let mut k = key(s);
    if let Some(rest) = k.strip_prefix('l')
        && LOSSES.iter().any(|l| key(l) == rest)
    {
        k = rest.to_string();
    }
    match LOSSES.iter().find(|l| key(l) == k) {
        Some(l) => l.to_string(),
        None => s.trim().to_lowercase(),
    }
}

/// How a dataset is written in the paper.
pub fn dataset_display(s: &str) -> String {
    match s {
        "imagenet-1k" => "ImageNet-1K",
        "cub" => "CUB",
        "aircraft" => "Aircraft",
        "flowers102" => "Flowers102",
        "cars" => "Cars",
        "dogs" => "Dogs",
        other => return other.to_string(),
    }
    .to_string()
}

/// How a model is written in the paper.
pub fn model_display(s: &str) -> String {
    match s {
        "resnet50" => "ResNet50",
        "resnet101" => "ResNet101",
        "densenet161" => "DenseNet161",
        other => return other.to_string(),
    }
    .to_string()
}

fn rank(list: &[&str], s: &str) -> usize {
    list.iter().position(|x| *x == s).unwrap_or(list.len())
}

/// Paper order first, then alphabetical.
pub fn cmp_in(list: &[&str], a: &str, b: &str) -> Ordering {
    rank(list, a).cmp(&rank(list, b)).then_with(|| a.cmp(b))
}

/// Facts about one loss of Table I.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LossInfo {
    pub bce: bool,
    pub normalized: bool,
    /// `'0'` zero, `'d'` diverse (one per class), `'u'` unified (one for all classes).
    pub bias: char,
}

/// Parse a canonical loss name; `None` for a loss outside Table I.
pub fn loss_info(name: &str) -> Option<LossInfo> {
    if !LOSSES.contains(&name) {
        return None;
    }
    let (formula, mode) = name.split_once('-')?;
    let normalized = mode.starts_with('n');
    let bias = mode.chars().last()?;
    Some(LossInfo {
        bce: formula == "bce",
        normalized,
        bias,
    })
}

/// One row of Table I, in LaTeX and in HTML.
#[derive(serde::Serialize, Clone, Debug)]
pub struct TableIRow {
    pub loss: &'static str,
    pub formula: &'static str,
    pub classifier_tex: &'static str,
    pub classifier_html: &'static str,
    pub bias_tex: &'static str,
    pub bias_html: &'static str,
    pub expression_tex: String,
    pub expression_html: String,
    pub equation: u32,
}

/// Table I: the twelve losses with formula, classifier, bias mode and expression (Eqs. 48–59).
pub fn table_i() -> Vec<TableIRow> {
    LOSSES
        .iter()
        .enumerate()
        .map(|(k, &l)| {
            let info = loss_info(l).expect("Table I loss");
            let (c_tex, c_html) = if info.normalized {
                (r"\gamma\cos(W_i,\mathbf{x})", "γ cos(W<sub>i</sub>, x)")
            } else {
                (r"W_i^T\mathbf{x}", "W<sub>i</sub><sup>T</sup>x")
            };
            let (b_tex, b_html) = match info.bias {
                '0' => ("0", "0"),
                'd' => ("b_i", "b<sub>i</sub>"),
                _ => ("b", "b"),
            };
            // metric of class m for the positive sample x^(i)
            let metric = |m: &str, tex: bool| -> String {
                if info.normalized {
                    if tex {
                        format!(r"\gamma\cos(W_{m},\mathbf{{x}}^{{(i)}})")
                    } else {
                        format!("γcos(W<sub>{m}</sub>, x<sup>(i)</sup>)")
                    }
                } else if tex {
                    format!(r"W_{m}^T\mathbf{{x}}^{{(i)}}")
                } else {
                    format!("W<sub>{m}</sub><sup>T</sup>x<sup>(i)</sup>")
                }
            };
            // Bias term as it enters the exponent of Eqs. 48–59: linear classifiers add the
            // bias, normalized ones subtract it.
            let bias_term = |m: &str, tex: bool| -> String {
                let b = match info.bias {
                    '0' => return String::new(),
                    'd' => {
                        if tex {
                            format!("b_{m}")
                        } else {
                            format!("b<sub>{m}</sub>")
                        }
                    }
                    _ => "b".to_string(),
                };
                if info.normalized {
                    format!(" - {b}")
                } else {
                    format!(" + {b}")
                }
            };
            let neg_bias = |m: &str, tex: bool| -> String {
                let t = bias_term(m, tex);
                if let Some(r) = t.strip_prefix(" + ") {
                    format!(" - {r}")
                } else if let Some(r) = t.strip_prefix(" - ") {
                    format!(" + {r}")
                } else {
                    t
                }
            };
            let (e_tex, e_html) = if info.bce {
                (
                    format!(
                        r"\log(1+e^{{-{}{}}}) + \sum_{{j\neq i}}\log(1+e^{{{}{}}})",
                        metric("i", true),
                        neg_bias("i", true),
                        metric("j", true),
                        bias_term("j", true)
                    ),
                    format!(
                        "log(1 + e<sup>−{}{}</sup>) + Σ<sub>j≠i</sub> log(1 + e<sup>{}{}</sup>)",
                        metric("i", false),
                        neg_bias("i", false).replace('-', "−"),
                        metric("j", false),
                        bias_term("j", false).replace('-', "−")
                    ),
                )
            } else {
                (
                    format!(
                        r"-\log\frac{{e^{{{}{}}}}}{{\sum_{{j=1}}^N e^{{{}{}}}}}",
                        metric("i", true),
                        bias_term("i", true),
                        metric("j", true),
                        bias_term("j", true)
                    ),
                    format!(
                        "−log[e<sup>{}{}</sup> / Σ<sub>j</sub> e<sup>{}{}</sup>]",
                        metric("i", false),
                        bias_term("i", false).replace('-', "−"),
                        metric("j", false),
                        bias_term("j", false).replace('-', "−")
                    ),
                )
            };
            TableIRow {
                loss: l,
                formula: if info.bce { "BCE" } else { "SoftMax" },
                classifier_tex: c_tex,
                classifier_html: c_html,
                bias_tex: b_tex,
                bias_html: b_html,
                expression_tex: e_tex,
                expression_html: e_html,
                equation: 48 + k as u32,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_map_to_paper_names() {
        assert_eq!(dataset("ImageNet"), "imagenet-1k");
        assert_eq!(dataset("CUB-200-2011"), "cub");
        assert_eq!(dataset("fashion-mnist"), "fashion-mnist");
        assert_eq!(model("ResNet-50"), "resnet50");
        assert_eq!(loss("bce_nu"), "bce-nu");
        assert_eq!(loss("L_soft-n0"), "soft-n0");
        assert_eq!(loss("my-loss"), "my-loss");
    }

    #[test]
    fn loss_info_reads_the_name() {
        let i = loss_info("bce-nd").unwrap();
        assert!(i.bce && i.normalized && i.bias == 'd');
        let i = loss_info("soft-0").unwrap();
        assert!(!i.bce && !i.normalized && i.bias == '0');
        assert!(loss_info("other").is_none());
    }

    #[test]
    fn table_i_signs_follow_the_paper() {
        let t = table_i();
        assert_eq!(t.len(), 12);
        // Eq. 58 (bce-nd): log(1 + e^{-γcos(W_i,x) + b_i}) + Σ log(1 + e^{γcos(W_j,x) - b_j})
        let nd = &t[10];
        assert_eq!(nd.loss, "bce-nd");
        assert_eq!(nd.equation, 58);
        assert!(
            nd.expression_tex
                .contains(r"e^{-\gamma\cos(W_i,\mathbf{x}^{(i)}) + b_i}")
        );
        assert!(
            nd.expression_tex
                .contains(r"e^{\gamma\cos(W_j,\mathbf{x}^{(i)}) - b_j}")
        );
        // Eq. 55 (bce-d): e^{-W_i^T x - b_i} and e^{W_j^T x + b_j}
        assert!(
            t[7].expression_tex
                .contains(r"e^{-W_i^T\mathbf{x}^{(i)} - b_i}")
        );
        assert!(
            t[7].expression_tex
                .contains(r"e^{W_j^T\mathbf{x}^{(i)} + b_j}")
        );
    }
}
