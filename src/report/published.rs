//! The paper's published values, shipped as data in `stages/published/*.yaml` (transcribed
//! from the paper; each record names its table and cell), and the lookup that matches a run's
//! cell to the paper's.
//!
//! The YAML files are also compiled into the binary, so a workspace without
//! `stages/published/` still gets the comparison; a directory given explicitly (or present at
//! the default path) takes precedence.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::names;

/// One printed cell of one of the paper's tables.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Cell {
    pub table: String,
    pub dataset: String,
    pub model: String,
    pub loss: String,
    pub role: String,
    #[serde(default)]
    pub softmax: bool,
    pub metric: String,
    #[serde(default)]
    pub gamma: Option<f64>,
    #[serde(default)]
    pub bias_init_mode: Option<u32>,
    /// The printed value is in units of `unit` (Table XI: 0.001).
    #[serde(default)]
    pub unit: Option<f64>,
    /// `None` where the paper prints "-".
    pub value: Option<f64>,
    /// A remark on the printed value (e.g. a misprint: it is kept as printed).
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct File {
    table: String,
    #[allow(dead_code)]
    title: String,
    cells: Vec<Cell>,
}

/// All published cells.
#[derive(Debug, Default)]
pub struct Published {
    pub cells: Vec<Cell>,
    /// Where they came from (directory, or "built-in"), for the provenance section.
    pub source: String,
}

/// The built-in copy of `stages/published/`.
const BUILTIN: &[(&str, &str)] = &[
    (
        "table2_imagenet.yaml",
        include_str!("../../stages/published/table2_imagenet.yaml"),
    ),
    (
        "table3_gamma_bce_nu.yaml",
        include_str!("../../stages/published/table3_gamma_bce_nu.yaml"),
    ),
    (
        "table5_cub.yaml",
        include_str!("../../stages/published/table5_cub.yaml"),
    ),
    (
        "table6_aircraft.yaml",
        include_str!("../../stages/published/table6_aircraft.yaml"),
    ),
    (
        "table7_flowers102.yaml",
        include_str!("../../stages/published/table7_flowers102.yaml"),
    ),
    (
        "table8_cars.yaml",
        include_str!("../../stages/published/table8_cars.yaml"),
    ),
    (
        "table9_dogs.yaml",
        include_str!("../../stages/published/table9_dogs.yaml"),
    ),
    (
        "table10_bias_init.yaml",
        include_str!("../../stages/published/table10_bias_init.yaml"),
    ),
    (
        "table11_bias_change.yaml",
        include_str!("../../stages/published/table11_bias_change.yaml"),
    ),
    (
        "tableS1_gamma_soft_nu.yaml",
        include_str!("../../stages/published/tableS1_gamma_soft_nu.yaml"),
    ),
    (
        "tableS2_imagenet_softmax.yaml",
        include_str!("../../stages/published/tableS2_imagenet_softmax.yaml"),
    ),
    (
        "tableS3_cub_softmax.yaml",
        include_str!("../../stages/published/tableS3_cub_softmax.yaml"),
    ),
    (
        "tableS4_aircraft_softmax.yaml",
        include_str!("../../stages/published/tableS4_aircraft_softmax.yaml"),
    ),
    (
        "tableS5_flowers102_softmax.yaml",
        include_str!("../../stages/published/tableS5_flowers102_softmax.yaml"),
    ),
    (
        "tableS6_cars_softmax.yaml",
        include_str!("../../stages/published/tableS6_cars_softmax.yaml"),
    ),
    (
        "tableS7_dogs_softmax.yaml",
        include_str!("../../stages/published/tableS7_dogs_softmax.yaml"),
    ),
];

fn parse(name: &str, text: &str, out: &mut Vec<Cell>) -> Result<()> {
    let f: File = serde_yaml_ng::from_str(text).with_context(|| {
        format!("{name}: not a published-values file (table, title, cells: [...])")
    })?;
    for mut c in f.cells {
        if c.table != f.table {
            bail!(
                "{name}: a cell says table {} inside the file of table {}",
                c.table,
                f.table
            );
        }
        c.dataset = names::dataset(&c.dataset);
        c.model = names::model(&c.model);
        c.loss = names::loss(&c.loss);
        out.push(c);
    }
    Ok(())
}

impl Published {
    /// The built-in copy.
    pub fn builtin() -> Result<Published> {
        let mut cells = Vec::new();
        for (name, text) in BUILTIN {
            parse(
                &format!("(built-in) stages/published/{name}"),
                text,
                &mut cells,
            )?;
        }
        Ok(Published {
            cells,
            source: "built-in copy of stages/published".into(),
        })
    }

    /// Every `*.yaml` in `dir`, in name order.
    pub fn load_dir(dir: &Path, shown_as: &str) -> Result<Published> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("published: cannot read directory {}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        files.sort();
        let mut cells = Vec::new();
        for p in files {
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            parse(&p.display().to_string(), &text, &mut cells)?;
        }
        Ok(Published {
            cells,
            source: shown_as.to_string(),
        })
    }

    /// The published cell for these coordinates, if the paper has one.
    #[allow(clippy::too_many_arguments)]
    pub fn find(
        &self,
        dataset: &str,
        model: &str,
        loss: &str,
        role: &str,
        softmax: bool,
        metric: &str,
        gamma: Option<f64>,
        bias_init_mode: Option<u32>,
    ) -> Option<&Cell> {
        self.cells.iter().find(|c| {
            c.dataset == dataset
                && c.model == model
                && c.loss == loss
                && c.role == role
                && c.softmax == softmax
                && c.metric == metric
                && match (c.gamma, gamma) {
                    (None, _) => true,
                    (Some(a), Some(b)) => (a - b).abs() < 1e-9,
                    (Some(_), None) => false,
                }
                && match (c.bias_init_mode, bias_init_mode) {
                    (None, _) => true,
                    (Some(a), Some(b)) => a == b,
                    (Some(_), None) => false,
                }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inequality (26), A_Uni ≤ A_CW ≤ A_SW, holds for every printed row except the cells
    /// annotated as misprints (Table S.V, DenseNet161, bce-u: A_CW 96.67 > A_SW 96.08).
    #[test]
    fn inequality_26_breaks_only_at_annotated_misprints() {
        let p = Published::builtin().unwrap();
        let get = |c: &Cell, metric: &str| {
            p.cells.iter().find(|x| {
                x.table == c.table
                    && x.dataset == c.dataset
                    && x.model == c.model
                    && x.loss == c.loss
                    && x.softmax == c.softmax
                    && x.gamma == c.gamma
                    && x.bias_init_mode == c.bias_init_mode
                    && x.metric == metric
            })
        };
        let mut broken = Vec::new();
        for c in p.cells.iter().filter(|c| c.metric == "a_cw") {
            let (Some(cw), Some(sw), Some(uni)) = (
                c.value,
                get(c, "a_sw").and_then(|x| x.value),
                get(c, "a_uni").and_then(|x| x.value),
            ) else {
                continue;
            };
            if !(uni <= cw && cw <= sw) {
                assert!(
                    c.note.as_deref().is_some_and(|n| n.starts_with("misprint")),
                    "Table {} {} {} {}: A_Uni {uni} A_CW {cw} A_SW {sw} unannotated",
                    c.table,
                    c.dataset,
                    c.model,
                    c.loss
                );
                broken.push(format!("{} {} {}", c.table, c.model, c.loss));
            }
        }
        assert_eq!(broken, vec!["S.V densenet161 bce-u".to_string()]);
    }

    #[test]
    fn builtin_matches_the_directory_and_spot_checks() {
        let p = Published::builtin().unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("stages/published");
        let d = Published::load_dir(&dir, "dir").unwrap();
        assert_eq!(
            p.cells.len(),
            d.cells.len(),
            "built-in list misses a file of stages/published"
        );
        // Table II, ResNet50, bce-nu, A_Uni = 68.48
        let c = p
            .find(
                "imagenet-1k",
                "resnet50",
                "bce-nu",
                "finetune",
                false,
                "a_uni",
                None,
                None,
            )
            .unwrap();
        assert_eq!((c.table.as_str(), c.value), ("II", Some(68.48)));
        // Table III, gamma 208, t* printed as "-"
        let c = p
            .find(
                "imagenet-1k",
                "resnet50",
                "bce-nu",
                "gamma-sweep",
                false,
                "t_star",
                Some(208.0),
                None,
            )
            .unwrap();
        assert_eq!(c.value, None);
        // Table X, bce-d mode 1, A_SW 0.52
        let c = p
            .find(
                "cub",
                "resnet50",
                "bce-d",
                "bias-init",
                false,
                "a_sw",
                None,
                Some(1),
            )
            .unwrap();
        assert_eq!(c.value, Some(0.52));
        // Table S.V, Flowers102, DenseNet161, bce-n0, A_Uni 97.58
        let c = p
            .find(
                "flowers102",
                "densenet161",
                "bce-n0",
                "finetune",
                true,
                "a_uni",
                None,
                None,
            )
            .unwrap();
        assert_eq!((c.table.as_str(), c.value), ("S.V", Some(97.58)));
        // Table XI, soft-nd, mode 1: -18.4 ± 99 (×1e-3)
        let c = p
            .find(
                "cub",
                "resnet50",
                "soft-nd",
                "bias-init",
                false,
                "bias_change_mean",
                None,
                Some(1),
            )
            .unwrap();
        assert_eq!((c.value, c.unit), (Some(-18.4), Some(0.001)));
        // every accuracy table has 3 models x 4 metrics x 12 losses (+ pre-training on ImageNet)
        let n = |t: &str| p.cells.iter().filter(|c| c.table == t).count();
        assert_eq!(n("II"), 156);
        assert_eq!(n("IX"), 144);
        assert_eq!(n("S.VII"), 144);
        assert_eq!(n("III"), 100);
        assert_eq!(n("X"), 128);
        assert_eq!(n("XI"), 28);
    }
}
