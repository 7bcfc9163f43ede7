//! The report's tables as plain data for the templates: accuracy tables like Tables II, V–IX
//! (and their SoftMax-applied twins S.II–S.VII), the γ sweep like Table III / S.I, bias
//! initialisation like Table X and bias change like Table XI.
//!
//! A table is built only from the runs that exist. Each cell holds the exact values (mean over
//! repeated runs, with their spread), whether it is the best of its row, whether a run behind
//! it diverged, and the published value where the paper has that cell; a cell without runs is
//! `None` and the templates print it as missing. Formatting is left to the templates' filters.

use serde::Serialize;

use super::names;
use super::published::Published;
use super::runs::{Role, Run};

/// Used for runs that do not say their dataset / model / loss.
pub const UNSPECIFIED: &str = "unspecified";

/// The four rows of an accuracy block and the paper's digits for each.
pub const ACC_METRICS: [(&str, usize); 4] = [("a_sw", 2), ("a_cw", 2), ("a_uni", 2), ("t_star", 3)];

#[derive(Serialize, Clone, Debug)]
pub struct Column {
    /// `loss` (accuracy tables), `gamma` (γ sweep) or `mode` (bias initialisation).
    pub kind: &'static str,
    pub loss: String,
    pub role: &'static str,
    pub baseline: bool,
    pub gamma: Option<f64>,
    pub mode: Option<u32>,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct Cell {
    /// Mean over the runs behind the cell; `None` = missing.
    pub value: Option<f64>,
    /// Printed as "± pm": the spread over repeated runs, or (Table XI) over the classes.
    pub pm: Option<f64>,
    /// Number of runs with a value.
    pub n: usize,
    /// Best of its row beyond noise (see [`mark_best`]).
    pub best: bool,
    /// Within noise of the row's best (the best itself included when it has ties).
    pub tie: bool,
    pub diverged: bool,
    pub published: Option<f64>,
    pub diff: Option<f64>,
    /// Run ids behind the cell (for the HTML tooltip and the tests).
    pub runs: Vec<String>,
}

#[derive(Serialize, Clone, Debug)]
pub struct Row {
    pub metric: String,
    pub digits: usize,
    pub cells: Vec<Cell>,
}

#[derive(Serialize, Clone, Debug)]
pub struct Block {
    /// `model` (accuracy tables) or `loss` (γ sweep, bias tables).
    pub kind: &'static str,
    pub name: String,
    /// γ sweep only: how the loss was evaluated, when not the default stable form
    /// (`direct`: log(1 + e^x) as written, fp32).
    pub variant: Option<String>,
    pub rows: Vec<Row>,
}

/// Reproduced vs published, one line per cell that both have.
#[derive(Serialize, Clone, Debug)]
pub struct Comparison {
    pub block: String,
    pub block_kind: &'static str,
    pub column: Column,
    pub metric: String,
    pub digits: usize,
    pub ours: f64,
    pub paper: f64,
    pub diff: f64,
    pub table: String,
}

#[derive(Serialize, Clone, Debug)]
pub struct Table {
    /// Anchor and file-name-safe id.
    pub id: String,
    /// `accuracy`, `gamma`, `bias-init`, `bias-change`.
    pub kind: &'static str,
    pub dataset: String,
    pub model: Option<String>,
    pub softmax: bool,
    /// The paper's tables this one mirrors (those with a cell matching one of ours).
    pub paper_tables: Vec<String>,
    pub columns: Vec<Column>,
    pub blocks: Vec<Block>,
    pub comparisons: Vec<Comparison>,
    pub any_diverged: bool,
    /// The distinct numbers of runs (seeds) behind the table's cells, ascending.
    pub ns: Vec<usize>,
    pub notes: Vec<String>,
}

impl Table {
    /// Set `any_diverged` from the cells (after all blocks are added).
    fn note_divergence(&mut self) {
        self.any_diverged = self
            .blocks
            .iter()
            .flat_map(|b| &b.rows)
            .flat_map(|r| &r.cells)
            .any(|c| c.diverged);
        let mut ns: Vec<usize> = self
            .blocks
            .iter()
            .flat_map(|b| &b.rows)
            .flat_map(|r| &r.cells)
            .filter(|c| c.value.is_some())
            .map(|c| c.n)
            .collect();
        ns.sort();
        ns.dedup();
        self.ns = ns;
    }

    /// An empty table (no blocks, comparisons or notes yet).
    fn new(
        id: String,
        kind: &'static str,
        dataset: &str,
        model: Option<&str>,
        columns: Vec<Column>,
    ) -> Table {
        Table {
            id,
            kind,
            dataset: dataset.to_string(),
            model: model.map(str::to_string),
            softmax: false,
            paper_tables: Vec::new(),
            columns,
            blocks: Vec::new(),
            comparisons: Vec::new(),
            any_diverged: false,
            ns: Vec::new(),
            notes: Vec::new(),
        }
    }
}

fn ds(r: &Run) -> &str {
    r.dataset.as_deref().unwrap_or(UNSPECIFIED)
}
fn md(r: &Run) -> &str {
    r.model.as_deref().unwrap_or(UNSPECIFIED)
}
fn ls(r: &Run) -> &str {
    r.loss.as_deref().unwrap_or(UNSPECIFIED)
}

/// A file-name and anchor safe id.
pub fn slug(parts: &[&str]) -> String {
    let s: String = parts
        .join("-")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

fn distinct<'a>(it: impl Iterator<Item = &'a str>, order: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = it.map(str::to_string).collect();
    v.sort_by(|a, b| names::cmp_in(order, a, b));
    v.dedup();
    v
}

fn mean_sd(xs: &[f64]) -> (Option<f64>, Option<f64>) {
    if xs.is_empty() {
        return (None, None);
    }
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (Some(m), None);
    }
    let var = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
    (Some(m), Some(var.sqrt()))
}

/// Cell from the runs behind it; `value` extracts the metric of one run.
fn cell(runs: &[&Run], value: impl Fn(&Run) -> Option<f64>) -> Cell {
    let vals: Vec<f64> = runs
        .iter()
        .filter_map(|r| value(r))
        .filter(|v| v.is_finite())
        .collect();
    let (m, sd) = mean_sd(&vals);
    Cell {
        value: m,
        pm: sd,
        n: vals.len(),
        diverged: runs.iter().any(|r| r.diverged()),
        runs: runs.iter().map(|r| r.id.clone()).collect(),
        ..Cell::default()
    }
}

/// Whether two cells of a row are within noise of each other, by the rule of the claims
/// ([`super::claims::stats`]): with repeated runs behind both, Welch's t-test on the seeds
/// cannot tell them apart (two-sided p ≥ α); a single run against a cell of repeated runs is
/// within noise when it lies inside that cell's prediction band (t = (x − ȳ)/(s·√(1 + 1/n)),
/// n − 1 degrees of freedom, p ≥ α); two single runs, equal printed digits.
fn within_noise(a: &Cell, b: &Cell, digits: usize) -> bool {
    use super::claims::stats::{ALPHA, Noise, student_t_two_sided, welch_p};
    let (Some(x), Some(y)) = (a.value, b.value) else {
        return false;
    };
    let noisy = |c: &Cell| c.pm.filter(|_| c.n >= 2);
    match (noisy(a), noisy(b)) {
        (Some(s1), Some(s2)) => {
            let (n1, n2) = (a.n as f64, b.n as f64);
            let (v1, v2) = (s1 * s1 / n1, s2 * s2 / n2);
            let var = v1 + v2;
            let df = if var > 0.0 {
                var * var / (v1 * v1 / (n1 - 1.0) + v2 * v2 / (n2 - 1.0))
            } else {
                n1 + n2 - 2.0
            };
            welch_p(x - y, 0.0, Noise { se: var.sqrt(), df }) >= ALPHA
        }
        (Some(s), None) | (None, Some(s)) => {
            let n = if a.n >= 2 { a.n } else { b.n } as f64;
            let t = (x - y) / (s * (1.0 + 1.0 / n).sqrt());
            !t.is_finite() && x == y || student_t_two_sided(t, n - 1.0) >= ALPHA
        }
        (None, None) => {
            let scale = 10f64.powi(digits as i32);
            (x * scale).round() == (y * scale).round()
        }
    }
}

/// Mark the best value of each accuracy row: bold (`best`) only when it beats every other
/// cell beyond noise ([`within_noise`]); otherwise it and the cells within noise of it are
/// marked as tied (`tie`) and none is bold.
fn mark_best(rows: &mut [Row]) {
    for row in rows.iter_mut().filter(|r| r.metric.starts_with("a_")) {
        let present: Vec<usize> = (0..row.cells.len())
            .filter(|&i| row.cells[i].value.is_some())
            .collect();
        if present.len() < 2 {
            continue;
        }
        let bi = present
            .iter()
            .copied()
            .max_by(|&a, &b| {
                row.cells[a]
                    .value
                    .unwrap()
                    .total_cmp(&row.cells[b].value.unwrap())
            })
            .unwrap();
        let ties: Vec<usize> = present
            .iter()
            .copied()
            .filter(|&i| i != bi && within_noise(&row.cells[bi], &row.cells[i], row.digits))
            .collect();
        // A single run is never bold against cells of repeated runs: one seed cannot show
        // that it beats a noisy cell.
        let single_vs_noisy = row.cells[bi].n < 2
            && present
                .iter()
                .any(|&i| i != bi && row.cells[i].n >= 2 && row.cells[i].pm.is_some());
        if ties.is_empty() && single_vs_noisy {
            continue;
        }
        if ties.is_empty() {
            row.cells[bi].best = true;
        } else {
            row.cells[bi].tie = true;
            for i in ties {
                row.cells[i].tie = true;
            }
        }
    }
}

/// Fill in published values and the comparison list.
#[allow(clippy::too_many_arguments)]
fn compare(
    t: &mut Table,
    published: &Published,
    block_i: usize,
    model: &str,
    loss_of: impl Fn(&Block, &Column) -> String,
    role_of: impl Fn(&Column) -> &'static str,
) {
    let block = t.blocks[block_i].clone();
    for (ri, row) in block.rows.iter().enumerate() {
        for (ci, col) in t.columns.iter().enumerate() {
            let c = &row.cells[ci];
            let Some(ours) = c.value else { continue };
            let loss = loss_of(&block, col);
            let Some(p) = published.find(
                &t.dataset,
                model,
                &loss,
                role_of(col),
                t.softmax,
                &row.metric,
                col.gamma,
                col.mode,
            ) else {
                continue;
            };
            let Some(pv) = p.value else { continue };
            let paper = pv * p.unit.map(|u| u / 1e-3).unwrap_or(1.0);
            let diff = ours - paper;
            let cell = &mut t.blocks[block_i].rows[ri].cells[ci];
            cell.published = Some(paper);
            cell.diff = Some(diff);
            t.comparisons.push(Comparison {
                block: block.name.clone(),
                block_kind: block.kind,
                column: col.clone(),
                metric: row.metric.clone(),
                digits: row.digits,
                ours,
                paper,
                diff,
                table: p.table.clone(),
            });
            if !t.paper_tables.contains(&p.table) {
                t.paper_tables.push(p.table.clone());
            }
        }
    }
}

/// Accuracy tables (per dataset): rows model × metric, columns the losses, with a
/// pre-training column when a pre-trained model was evaluated.
pub fn accuracy_tables(runs: &[Run], published: &Published, softmax: bool) -> Vec<Table> {
    let acc_runs: Vec<&Run> = runs
        .iter()
        .filter(|r| matches!(r.role, Role::Finetune | Role::Pretrain))
        // A run without metrics.json has nothing to show here (provenance lists it).
        .filter(|r| r.metrics.is_some())
        .filter(|r| !softmax || r.acc(true).is_some())
        .collect();
    let datasets = distinct(acc_runs.iter().map(|r| ds(r)), &names::DATASETS);
    let mut out = Vec::new();
    for d in datasets {
        let here: Vec<&Run> = acc_runs.iter().copied().filter(|r| ds(r) == d).collect();
        let models = distinct(here.iter().map(|r| md(r)), &names::MODELS);
        let mut columns = Vec::new();
        for pl in distinct(
            here.iter()
                .filter(|r| r.role == Role::Pretrain)
                .map(|r| ls(r)),
            &names::LOSSES,
        ) {
            columns.push(Column {
                kind: "loss",
                loss: pl,
                role: "pretrain",
                baseline: false,
                gamma: None,
                mode: None,
            });
        }
        let mut losses: Vec<String> = names::LOSSES.iter().map(|s| s.to_string()).collect();
        for l in distinct(
            here.iter()
                .filter(|r| r.role == Role::Finetune)
                .map(|r| ls(r)),
            &names::LOSSES,
        ) {
            if !losses.contains(&l) {
                losses.push(l);
            }
        }
        for l in losses {
            let baseline = l == "soft-d";
            columns.push(Column {
                kind: "loss",
                loss: l,
                role: "finetune",
                baseline,
                gamma: None,
                mode: None,
            });
        }
        let mut t = Table::new(
            slug(&[if softmax { "softmax" } else { "acc" }, &d]),
            "accuracy",
            &d,
            None,
            columns,
        );
        t.softmax = softmax;
        for m in &models {
            let mut rows: Vec<Row> = ACC_METRICS
                .iter()
                .map(|(metric, digits)| Row {
                    metric: metric.to_string(),
                    digits: *digits,
                    cells: t
                        .columns
                        .iter()
                        .map(|col| {
                            let rs: Vec<&Run> = here
                                .iter()
                                .copied()
                                .filter(|r| {
                                    md(r) == m && ls(r) == col.loss && r.role.as_str() == col.role
                                })
                                .collect();
                            cell(&rs, |r| r.acc(softmax).and_then(|a| a.get(metric)))
                        })
                        .collect(),
                })
                .collect();
            mark_best(&mut rows);
            t.blocks.push(Block {
                kind: "model",
                name: m.clone(),
                variant: None,
                rows,
            });
            let bi = t.blocks.len() - 1;
            compare(&mut t, published, bi, m, |_, c| c.loss.clone(), |c| c.role);
        }
        t.note_divergence();
        out.push(t);
    }
    out
}

/// γ sweep tables (per dataset and model): one block per loss, columns the γ values.
pub fn gamma_tables(runs: &[Run], published: &Published) -> Vec<Table> {
    let sweep: Vec<&Run> = runs.iter().filter(|r| r.role == Role::GammaSweep).collect();
    let mut out = Vec::new();
    for d in distinct(sweep.iter().map(|r| ds(r)), &names::DATASETS) {
        let in_d: Vec<&Run> = sweep.iter().copied().filter(|r| ds(r) == d).collect();
        for m in distinct(in_d.iter().map(|r| md(r)), &names::MODELS) {
            let here: Vec<&Run> = in_d.iter().copied().filter(|r| md(r) == m).collect();
            let mut gammas: Vec<f64> = here
                .iter()
                .filter_map(|r| r.gamma)
                .filter(|g| g.is_finite())
                .collect();
            gammas.sort_by(|a, b| a.total_cmp(b));
            gammas.dedup();
            let mut notes = Vec::new();
            let no_gamma = here.iter().filter(|r| r.gamma.is_none()).count();
            if no_gamma > 0 {
                notes.push(format!(
                    "{no_gamma} γ-sweep run(s) without a γ value are left out."
                ));
            }
            let columns: Vec<Column> = gammas
                .iter()
                .map(|g| Column {
                    kind: "gamma",
                    loss: String::new(),
                    role: "gamma-sweep",
                    baseline: false,
                    gamma: Some(*g),
                    mode: None,
                })
                .collect();
            let mut t = Table::new(slug(&["gamma", &d, &m]), "gamma", &d, Some(&m), columns);
            t.notes = notes;
            let numerics = |r: &Run| r.numerics.clone().filter(|v| v != "stable");
            let mut keys: Vec<(String, Option<String>)> = here
                .iter()
                .map(|r| (ls(r).to_string(), numerics(r)))
                .collect();
            keys.sort_by(|a, b| names::cmp_in(&names::LOSSES, &a.0, &b.0).then(a.1.cmp(&b.1)));
            keys.dedup();
            for (l, variant) in keys {
                let rows = ACC_METRICS
                    .iter()
                    .map(|(metric, _)| Row {
                        metric: metric.to_string(),
                        // Tables III and S.I print t* with two decimals.
                        digits: 2,
                        cells: t
                            .columns
                            .iter()
                            .map(|col| {
                                let rs: Vec<&Run> = here
                                    .iter()
                                    .copied()
                                    .filter(|r| {
                                        ls(r) == l
                                            && numerics(r) == variant
                                            && r.gamma.is_some_and(|g| Some(g) == col.gamma)
                                    })
                                    .collect();
                                cell(&rs, |r| r.acc(false).and_then(|a| a.get(metric)))
                            })
                            .collect(),
                    })
                    .collect();
                t.blocks.push(Block {
                    kind: "loss",
                    name: l,
                    variant,
                    rows,
                });
                let bi = t.blocks.len() - 1;
                compare(&mut t, published, bi, &m, |b, _| b.name.clone(), |c| c.role);
            }
            t.note_divergence();
            out.push(t);
        }
    }
    out
}

/// Runs of one (dataset, model, loss) at one bias initialisation mode; mode 0 (the default
/// initialisation) falls back to the fine-tuning run when no bias-init run says mode 0.
fn mode_runs<'a>(runs: &'a [Run], d: &str, m: &str, l: &str, mode: u32) -> (Vec<&'a Run>, bool) {
    let direct: Vec<&Run> = runs
        .iter()
        .filter(|r| {
            r.role == Role::BiasInit
                && ds(r) == d
                && md(r) == m
                && ls(r) == l
                && r.bias_init_mode == Some(mode)
        })
        .collect();
    if !direct.is_empty() || mode != 0 {
        return (direct, false);
    }
    let fallback: Vec<&Run> = runs
        .iter()
        .filter(|r| r.role == Role::Finetune && ds(r) == d && md(r) == m && ls(r) == l)
        .collect();
    let used = !fallback.is_empty();
    (fallback, used)
}

/// Change of the biases over training, ×10⁻³: (mean, std) over the classes.
pub fn bias_change(r: &Run) -> Option<(f64, f64)> {
    let a = r.bias_init()?;
    let b = r.bias_final()?;
    if a.len() != b.len() || a.is_empty() {
        return None;
    }
    let d: Vec<f64> = a
        .iter()
        .zip(&b)
        .map(|(x, y)| Some((*y)? - (*x)?))
        .collect::<Option<Vec<_>>>()?;
    if d.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let n = d.len() as f64;
    let m = d.iter().sum::<f64>() / n;
    let var = d.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
    Some((m * 1e3, var.sqrt() * 1e3))
}

/// Tables X and XI (per dataset and model): accuracies per loss and initialisation mode, and
/// the change of the biases.
pub fn bias_tables(runs: &[Run], published: &Published) -> Vec<Table> {
    let init: Vec<&Run> = runs.iter().filter(|r| r.role == Role::BiasInit).collect();
    let mut out = Vec::new();
    for d in distinct(init.iter().map(|r| ds(r)), &names::DATASETS) {
        let in_d: Vec<&Run> = init.iter().copied().filter(|r| ds(r) == d).collect();
        for m in distinct(in_d.iter().map(|r| md(r)), &names::MODELS) {
            let here: Vec<&Run> = in_d.iter().copied().filter(|r| md(r) == m).collect();
            let losses = distinct(here.iter().map(|r| ls(r)), &names::LOSSES);
            let mut modes: Vec<u32> = here.iter().filter_map(|r| r.bias_init_mode).collect();
            let mut notes = Vec::new();
            let no_mode = here.iter().filter(|r| r.bias_init_mode.is_none()).count();
            if no_mode > 0 {
                notes.push(format!(
                    "{no_mode} bias-init run(s) without an initialisation mode are left out."
                ));
            }
            let any_fallback = losses.iter().any(|l| mode_runs(runs, &d, &m, l, 0).1);
            if any_fallback {
                modes.push(0);
                notes.push("Mode 0 (default initialisation) is taken from the fine-tuning run where no bias-init run has mode 0.".into());
            }
            modes.sort();
            modes.dedup();
            let columns: Vec<Column> = modes
                .iter()
                .map(|k| Column {
                    kind: "mode",
                    loss: String::new(),
                    role: "bias-init",
                    baseline: false,
                    gamma: None,
                    mode: Some(*k),
                })
                .collect();
            let mut t = Table::new(
                slug(&["bias-init", &d, &m]),
                "bias-init",
                &d,
                Some(&m),
                columns.clone(),
            );
            t.notes = notes.clone();
            let mut change_rows = Vec::new();
            for l in &losses {
                let rows = ACC_METRICS
                    .iter()
                    .map(|(metric, _)| Row {
                        metric: metric.to_string(),
                        digits: 2,
                        cells: modes
                            .iter()
                            .map(|k| {
                                cell(&mode_runs(runs, &d, &m, l, *k).0, |r| {
                                    r.acc(false).and_then(|a| a.get(metric))
                                })
                            })
                            .collect(),
                    })
                    .collect();
                t.blocks.push(Block {
                    kind: "loss",
                    name: l.clone(),
                    variant: None,
                    rows,
                });
                let bi = t.blocks.len() - 1;
                compare(&mut t, published, bi, &m, |b, _| b.name.clone(), |c| c.role);
                let cells: Vec<Cell> = modes
                    .iter()
                    .map(|k| {
                        let (rs, _) = mode_runs(runs, &d, &m, l, *k);
                        let changes: Vec<(f64, f64)> =
                            rs.iter().filter_map(|r| bias_change(r)).collect();
                        let mut c = cell(&rs, |r| bias_change(r).map(|x| x.0));
                        // One run: ± is the spread over the classes, as in Table XI.
                        if changes.len() == 1 {
                            c.pm = Some(changes[0].1);
                        }
                        c
                    })
                    .collect();
                if cells.iter().any(|c| c.value.is_some()) {
                    change_rows.push((l.clone(), cells));
                }
            }
            t.note_divergence();
            out.push(t);
            if !change_rows.is_empty() {
                let mut ct = Table::new(
                    slug(&["bias-change", &d, &m]),
                    "bias-change",
                    &d,
                    Some(&m),
                    columns.clone(),
                );
                for (l, cells) in change_rows {
                    ct.blocks.push(Block {
                        kind: "loss",
                        name: l,
                        variant: None,
                        rows: vec![Row {
                            metric: "bias_change_mean".into(),
                            digits: 1,
                            cells,
                        }],
                    });
                    let bi = ct.blocks.len() - 1;
                    compare(
                        &mut ct,
                        published,
                        bi,
                        &m,
                        |b, _| b.name.clone(),
                        |c| c.role,
                    );
                }
                ct.note_divergence();
                out.push(ct);
            }
        }
    }
    out
}
