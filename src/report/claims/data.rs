//! The common data of both sources: the published cells and our runs, as one flat list of
//! records.

use std::collections::BTreeMap;

use super::super::findings;
use super::super::names;
use super::super::published::Published;
use super::super::runs::{Role, Run};
use super::super::tables;
use super::stats::Stat;

#[derive(Clone, Debug)]
pub(super) struct Rec {
    pub(super) dataset: String,
    pub(super) model: String,
    pub(super) loss: String,
    pub(super) role: &'static str,
    /// `a_sw`, `a_cw`, `a_uni`, `gap`, `sm:<metric>` (after SoftMax), `smdelta:<metric>`
    /// (after SoftMax minus without, per run), `bias_change_mean`.
    pub(super) metric: String,
    pub(super) gamma: Option<f64>,
    pub(super) mode: Option<u32>,
    /// `stable` (default) or `direct` (see the train option `numerics`); `paper` for
    /// published cells.
    pub(super) numerics: String,
    pub(super) values: Vec<f64>,
}

pub(super) struct Data {
    pub(super) recs: Vec<Rec>,
    pub(super) classes: BTreeMap<String, usize>,
    /// Run-level bias-threshold findings (ours only).
    pub(super) bias: Vec<findings::Finding>,
    pub(super) ours: bool,
}

impl Data {
    pub(super) fn stat(&self, f: impl Fn(&Rec) -> bool) -> Option<Stat> {
        let v: Vec<f64> = self
            .recs
            .iter()
            .filter(|r| f(r))
            .flat_map(|r| r.values.iter().copied())
            .collect();
        Stat::of(&v)
    }

    pub(super) fn units(
        &self,
        role: &str,
        datasets: &Option<Vec<String>>,
    ) -> Vec<(String, String)> {
        let mut u: Vec<(String, String)> = self
            .recs
            .iter()
            .filter(|r| r.role == role)
            .filter(|r| datasets.as_ref().is_none_or(|d| d.contains(&r.dataset)))
            .map(|r| (r.dataset.clone(), r.model.clone()))
            .collect();
        u.sort_by(|a, b| {
            names::cmp_in(&names::DATASETS, &a.0, &b.0)
                .then_with(|| names::cmp_in(&names::MODELS, &a.1, &b.1))
        });
        u.dedup();
        u
    }

    pub(super) fn finetune(&self, d: &str, m: &str, loss: &str, metric: &str) -> Option<Stat> {
        self.stat(|r| {
            r.role == "finetune"
                && r.dataset == d
                && r.model == m
                && r.loss == loss
                && r.metric == metric
        })
    }
}

pub(super) fn published_data(p: &Published) -> Data {
    let recs = p
        .cells
        .iter()
        .filter_map(|c| {
            let v = c.value?;
            let value = v * c.unit.map(|u| u / 1e-3).unwrap_or(1.0);
            let metric = if c.softmax {
                format!("sm:{}", c.metric)
            } else {
                c.metric.clone()
            };
            let role: &'static str = match c.role.as_str() {
                "finetune" => "finetune",
                "gamma-sweep" => "gamma-sweep",
                "bias-init" => "bias-init",
                _ => "other",
            };
            Some(Rec {
                dataset: c.dataset.clone(),
                model: c.model.clone(),
                loss: c.loss.clone(),
                role,
                metric,
                gamma: c.gamma,
                mode: c.bias_init_mode,
                numerics: "paper".into(),
                values: vec![value],
            })
        })
        .collect::<Vec<_>>();
    let mut data = Data {
        recs,
        // Table IV of the paper.
        classes: [
            ("imagenet-1k", 1000),
            ("cub", 200),
            ("aircraft", 100),
            ("flowers102", 102),
            ("cars", 196),
            ("dogs", 120),
        ]
        .iter()
        .map(|(d, n)| (d.to_string(), *n))
        .collect(),
        bias: Vec::new(),
        ours: false,
    };
    // Derived cells, as for our runs: the gap and the SoftMax deltas.
    let mut extra = Vec::new();
    for r in data.recs.iter().filter(|r| r.metric == "a_sw") {
        let other = |metric: &str| {
            data.recs.iter().find(|x| {
                x.metric == metric
                    && x.dataset == r.dataset
                    && x.model == r.model
                    && x.loss == r.loss
                    && x.role == r.role
                    && x.gamma == r.gamma
                    && x.mode == r.mode
            })
        };
        if let Some(u) = other("a_uni") {
            extra.push(Rec {
                metric: "gap".into(),
                values: vec![r.values[0] - u.values[0]],
                ..r.clone()
            });
        }
        if let Some(c) = other("a_cw") {
            extra.push(Rec {
                metric: "gap_cw".into(),
                values: vec![r.values[0] - c.values[0]],
                ..r.clone()
            });
        }
    }
    for r in data.recs.iter().filter(|r| r.metric.starts_with("sm:")) {
        let base = &r.metric[3..];
        if let Some(x) = data.recs.iter().find(|x| {
            x.metric == base
                && x.dataset == r.dataset
                && x.model == r.model
                && x.loss == r.loss
                && x.role == r.role
        }) {
            extra.push(Rec {
                metric: format!("smdelta:{base}"),
                values: vec![r.values[0] - x.values[0]],
                ..r.clone()
            });
        }
    }
    data.recs.extend(extra);
    data
}

pub(super) fn runs_data(runs: &[Run]) -> Data {
    // Group runs that differ only in their seed.
    let mut groups: BTreeMap<String, (Rec, Vec<&Run>)> = BTreeMap::new();
    let mut classes = BTreeMap::new();
    for r in runs.iter().filter(|r| r.metrics.is_some()) {
        let (Some(d), Some(m), Some(l)) = (&r.dataset, &r.model, &r.loss) else {
            continue;
        };
        if let Some(n) = r.metrics.as_ref().and_then(|m| m.classes) {
            classes.insert(d.clone(), n as usize);
        }
        let role: &'static str = match r.role {
            Role::Finetune => "finetune",
            Role::GammaSweep => "gamma-sweep",
            Role::BiasInit => "bias-init",
            Role::Pretrain => "pretrain",
            Role::OpenSet => "openset",
        };
        let numerics = r.numerics.clone().unwrap_or_else(|| "stable".into());
        let key = format!(
            "{d}|{m}|{l}|{role}|{:?}|{:?}|{numerics}",
            r.gamma.filter(|_| role == "gamma-sweep"),
            r.bias_init_mode
        );
        let e = groups.entry(key).or_insert_with(|| {
            (
                Rec {
                    dataset: d.clone(),
                    model: m.clone(),
                    loss: l.clone(),
                    role,
                    metric: String::new(),
                    gamma: r.gamma,
                    mode: r.bias_init_mode,
                    numerics,
                    values: Vec::new(),
                },
                Vec::new(),
            )
        });
        e.1.push(r);
    }
    let mut recs = Vec::new();
    type Getter = Box<dyn Fn(&Run) -> Option<f64>>;
    let mut getters: Vec<(String, Getter)> = Vec::new();
    for m in ["a_sw", "a_cw", "a_uni", "t_star"] {
        getters.push((m.into(), Box::new(move |r: &Run| r.acc(false)?.get(m))));
        getters.push((
            format!("sm:{m}"),
            Box::new(move |r: &Run| r.acc(true)?.get(m)),
        ));
        getters.push((
            format!("smdelta:{m}"),
            Box::new(move |r: &Run| Some(r.acc(true)?.get(m)? - r.acc(false)?.get(m)?)),
        ));
    }
    getters.push((
        "gap_cw".into(),
        Box::new(|r: &Run| {
            let a = r.acc(false)?;
            Some(a.get("a_sw")? - a.get("a_cw")?)
        }),
    ));
    getters.push((
        "gap".into(),
        Box::new(|r: &Run| {
            let a = r.acc(false)?;
            Some(a.get("a_sw")? - a.get("a_uni")?)
        }),
    ));
    getters.push((
        "bias_change_mean".into(),
        Box::new(|r: &Run| tables::bias_change(r).map(|x| x.0)),
    ));
    getters.push((
        "overlap_width".into(),
        Box::new(|r: &Run| r.dist(false)?.overlap_width),
    ));
    getters.push((
        "pos_spread".into(),
        Box::new(|r: &Run| r.dist(false)?.std_min_pos),
    ));
    getters.push((
        "type2_sep".into(),
        Box::new(super::distribution::type_two_separated),
    ));
    getters.push((
        "bias_change_std".into(),
        Box::new(|r: &Run| tables::bias_change(r).map(|x| x.1)),
    ));
    for (rec, rs) in groups.values() {
        for (metric, g) in &getters {
            let values: Vec<f64> = rs.iter().filter_map(|r| g(r)).collect();
            if !values.is_empty() {
                recs.push(Rec {
                    metric: metric.clone(),
                    values,
                    ..rec.clone()
                });
            }
        }
    }
    let bias = runs
        .iter()
        .filter(|r| r.role == Role::Finetune)
        .filter_map(findings::bias_threshold)
        .collect();
    Data {
        recs,
        classes,
        bias,
        ours: true,
    }
}
