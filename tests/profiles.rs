//! The repository's own pipeline under each of its profiles, without running anything: every
//! profile in stages/profiles/ loads and dry-runs; the paper profile plans Section V's
//! experiments (6 datasets × 3 models × 12 losses of fine-tuning, the γ sweep on ImageNet only,
//! the bias study on CUB only, the released models evaluated as they are on ImageNet);
//! `repro dag --format json` shows each stage's resolved parameters; a bad value in a profile
//! is reported at the profile's line.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::Ws;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A workspace with the repository's pipeline, stages, templates and fixtures, and a
/// `local-data/` holding (empty stand-ins for) the archives the recipes name: a dry run reads
/// no data, it checks the plan.
fn workspace() -> Ws {
    let ws = Ws::new("");
    std::fs::copy(repo().join("pipeline.yaml"), ws.path("pipeline.yaml")).unwrap();
    for d in ["stages", "templates", "tests/fixtures/paper-mini"] {
        copy_dir(&repo().join(d), &ws.path(d));
    }
    for f in [
        "ILSVRC2012_img_train.tar",
        "ILSVRC2012_img_val.tar",
        "ILSVRC2012_devkit_t12.tar.gz",
    ] {
        ws.write(&format!("local-data/{f}"), "");
    }
    ws
}

/// Stage names the dry run would run, by the part before `@`.
fn planned(out: &str) -> BTreeMap<String, Vec<String>> {
    let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in out.lines() {
        let Some(rest) = l
            .strip_prefix("would run ")
            .or_else(|| l.strip_prefix("may run "))
        else {
            continue;
        };
        let name = rest.split(" (").next().unwrap().to_string();
        let group = name.split('@').next().unwrap().to_string();
        by.entry(group).or_default().push(name);
    }
    by
}

#[test]
fn paper_profile_dry_run_plans_section_v() {
    let ws = workspace();
    let out = ws.ok(&["run", "--profile", "paper", "--dry-run"]);
    let by = planned(&out);
    let n = |g: &str| by.get(g).map_or(0, Vec::len);
    assert_eq!(n("download"), 6, "{out}");
    assert_eq!(n("preprocess"), 6);
    assert_eq!(n("weights_download"), 3);
    assert_eq!(n("weights_import"), 3);
    // Table II's pre-training column: the three released models on ImageNet only.
    assert_eq!(n("pretrain"), 3);
    assert!(
        by["pretrain"]
            .iter()
            .all(|s| s.starts_with("pretrain@imagenet-1k,"))
    );
    assert_eq!(n("finetune"), 6 * 3 * 12);
    assert_eq!(n("evaluate_finetune"), 6 * 3 * 12);
    // Table III / S.I: ResNet50, soft-nu and bce-nu, 25 values of γ, ImageNet only.
    assert_eq!(n("gamma_sweep"), 2 * 25);
    assert!(
        by["gamma_sweep"]
            .iter()
            .all(|s| s.starts_with("gamma_sweep@imagenet-1k,resnet50,"))
    );
    // Tables X, XI: ResNet50, four diverse-bias losses, modes 1–7, CUB only.
    assert_eq!(n("bias_init"), 4 * 7);
    assert!(
        by["bias_init"]
            .iter()
            .all(|s| s.starts_with("bias_init@cub-200-2011,resnet50,"))
    );
    assert_eq!(n("report"), 1);
    let total: usize = by.values().map(Vec::len).sum();
    assert!(
        out.contains(&format!("dry run: {total} would run")),
        "{out}"
    );
}

#[test]
fn every_profile_loads_and_dry_runs() {
    let ws = workspace();
    let mut names: Vec<String> = std::fs::read_dir(repo().join("stages/profiles"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    assert!(names.len() >= 4, "{names:?}");
    let pipeline = std::fs::read_to_string(repo().join("pipeline.yaml")).unwrap();
    for name in names {
        assert!(
            pipeline.contains(&format!("  {name}: stages/profiles/{name}.yaml")),
            "stages/profiles/{name}.yaml is not listed under `profiles:` in pipeline.yaml"
        );
        let mut args = vec!["run", "--profile", &name, "--dry-run"];
        if name == "paper-mini" {
            // Its weights are written at test time, so their checksum is given on the command
            // line (tests/paper_mini.rs); a dry run verifies nothing.
            args.extend([
                "--set",
                "pretrained.resnet50.sha256_prefix=00000000aaaaaaaa",
            ]);
        }
        let out = ws.ok(&args);
        assert!(out.contains("dry run: "), "{name}: {out}");
        assert!(
            planned(&out).contains_key("finetune"),
            "{name}: no fine-tuning planned\n{out}"
        );
    }
}

#[test]
fn quick_profile_runs_the_bias_study_with_three_seeds() {
    // Issue 28 item 9: a bias-study verdict on one run per cell can only say "single seed";
    // the quick profile repeats it over the main table's three seeds.
    let ws = workspace();
    let by = planned(&ws.ok(&["run", "--profile", "quick", "--dry-run"]));
    let n = |s: &str| by.get(s).map_or(0, Vec::len);
    assert_eq!(n("bias_init"), 4 * 7 * 3);
    assert_eq!(n("evaluate_bias"), 4 * 7 * 3);
    for seed in 0..3 {
        assert!(
            by["bias_init"]
                .iter()
                .any(|s| s == &format!("bias_init@fashion-mnist,mlp,bce-nd,7,{seed}")),
            "{:?}",
            by["bias_init"]
        );
    }
    let out = ws.ok(&["dag", "--profile", "quick", "--format", "json"]);
    let dag: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let b = stage(&dag, "bias_init@fashion-mnist,mlp,soft-d,2,1");
    assert_eq!(b["with"]["seed"], 1);
    assert_eq!(
        b["with"]["out"],
        "runs/fashion-mnist/mlp/bias/soft-d-m2/seed1"
    );
    let e = stage(&dag, "evaluate_bias@fashion-mnist,mlp,soft-d,2,1");
    assert_eq!(e["with"]["meta"]["seed"], 1);
}

fn stage<'a>(dag: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    dag.iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stage {name}"))
}

#[test]
fn dag_json_shows_resolved_parameters_deps_and_outs() {
    let ws = workspace();
    let out = ws.ok(&["dag", "--profile", "paper", "--format", "json"]);
    let dag: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(
        dag.len(),
        6 + 6 + 3 + 3 + 3 + 216 + 50 + 28 + 3 + 216 + 50 + 28 + 1 + 6 + 6 + 6 + 6
    );
    // The numerics study is on in the paper profile: ImageNet, ResNet50, soft-nu and bce-nu at
    // γ = 208/256/512, as written in fp32 with non-finite steps applied, and otherwise the
    // stable sweep's settings (so the two differ in numerics only).
    let d = stage(&dag, "gamma_direct@imagenet-1k,resnet50,bce-nu,256,0");
    let s = stage(&dag, "gamma_sweep@imagenet-1k,resnet50,bce-nu,256,0");
    assert_eq!(d["with"]["numerics"], "direct");
    assert_eq!(d["with"]["on_nonfinite"], "apply");
    for k in [
        "init_from",
        "epochs",
        "lr",
        "batch_size",
        "unified_bias_init",
        "head_init",
        "weight_decay",
        "augment",
        "image_size",
    ] {
        assert_eq!(d["with"][k], s["with"][k], "{k}");
    }
    assert!(stage_exists(
        &dag,
        "gamma_direct@imagenet-1k,resnet50,soft-nu,208,0"
    ));
    assert!(stage_exists(
        &dag,
        "evaluate_gamma_direct@imagenet-1k,resnet50,bce-nu,512,0"
    ));
    // Its second arm (issue 28 item 3): fp16 autocast with AMP's gradient scaler, the loss as
    // written, non-finite steps skipped — the same points and otherwise the same settings.
    let a = stage(&dag, "gamma_amp@imagenet-1k,resnet50,bce-nu,256,0");
    assert_eq!(
        (
            a["with"]["numerics"].clone(),
            a["with"]["mixed_precision"].clone(),
            a["with"]["grad_scaler"].clone(),
            a["with"]["on_nonfinite"].clone()
        ),
        ("direct".into(), true.into(), true.into(), "skip".into())
    );
    for k in [
        "init_from",
        "epochs",
        "lr",
        "batch_size",
        "unified_bias_init",
        "head_init",
        "weight_decay",
        "augment",
        "image_size",
    ] {
        assert_eq!(a["with"][k], s["with"][k], "{k}");
    }
    for g in [208, 256, 512] {
        assert!(stage_exists(
            &dag,
            &format!("evaluate_gamma_amp@imagenet-1k,resnet50,soft-nu,{g},0")
        ));
    }
    assert_eq!(
        stage(&dag, "evaluate_gamma_amp@imagenet-1k,resnet50,bce-nu,512,0")["with"]["meta"]["numerics"],
        "fp16-scaler"
    );
    // FGVC fine-tunes keep a new head.
    let c = stage(&dag, "finetune@cub-200-2011,resnet50,bce-nu,0");
    assert_eq!(c["with"]["head_init"], "new");
    assert_eq!(c["with"]["unified_bias_init"], "log10n");

    // Per-dataset settings: ImageNet 30 epochs at 1e-4, FGVC 100 at 1e-3; b₀ = ln(10·N) for
    // bce-nu (docs/training.md); γ = 96; ImageNet's head from the pre-trained classifier.
    let f = stage(&dag, "finetune@imagenet-1k,resnet50,bce-nu,0");
    assert_eq!(f["kind"], "train");
    assert_eq!(f["with"]["epochs"], 30);
    assert_eq!(f["with"]["lr"], 0.0001);
    assert_eq!(f["with"]["gamma"], 96);
    assert_eq!(f["with"]["unified_bias_init"], "log10n");
    assert_eq!(f["with"]["head_init"], "pretrained");
    assert_eq!(f["with"]["augment"], true);
    assert_eq!(
        f["with"]["init_from"],
        "runs/imagenet-1k/resnet50/pretrain/model.safetensors"
    );
    assert_eq!(
        f["upstream"],
        serde_json::json!(["preprocess@imagenet-1k", "pretrain@imagenet-1k,resnet50"])
    );
    assert_eq!(
        f["outs"][0],
        "runs/imagenet-1k/resnet50/bce-nu/seed0/model.safetensors"
    );
    let f = stage(&dag, "finetune@stanford-dogs,densenet161,soft-d,0");
    assert_eq!(f["with"]["epochs"], 100);
    assert_eq!(f["with"]["lr"], 0.001);
    // Every fine-tune starts from the released ImageNet model.
    assert_eq!(
        f["with"]["init_from"],
        "runs/imagenet-1k/densenet161/pretrain/model.safetensors"
    );
    assert!(
        f["deps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == "runs/imagenet-1k/densenet161/pretrain/model.safetensors")
    );
    // The γ sweep has ImageNet's settings.
    let g = stage(&dag, "gamma_sweep@imagenet-1k,resnet50,bce-nu,208,0");
    assert_eq!(
        (
            g["with"]["epochs"].clone(),
            g["with"]["lr"].clone(),
            g["with"]["gamma"].clone()
        ),
        (30.into(), 0.0001.into(), 208.into())
    );
    let b = stage(&dag, "bias_init@cub-200-2011,resnet50,bce-d,3,0");
    assert_eq!(
        (b["with"]["epochs"].clone(), b["with"]["bias_mode"].clone()),
        (100.into(), 3.into())
    );
    // Table II's pre-training column: the released model evaluated as it is.
    let p = stage(&dag, "pretrain@imagenet-1k,resnet101");
    assert_eq!(p["with"]["epochs"], 0);
    assert_eq!(p["with"]["init_from"], "weights/resnet101.safetensors");
    assert_eq!(
        p["upstream"],
        serde_json::json!(["preprocess@imagenet-1k", "weights_import@resnet101"])
    );
    // One pinned checkpoint per architecture.
    let w = stage(&dag, "weights_download@densenet161");
    assert_eq!(w["kind"], "download");
    assert_eq!(
        w["with"]["sources"][0],
        "https://download.pytorch.org/models/densenet161-8d451a50.pth"
    );
    assert_eq!(w["with"]["sha256_prefix"], "8d451a50");
    let i = stage(&dag, "weights_import@densenet161");
    assert_eq!(i["kind"], "import_weights");
    assert_eq!(
        i["deps"],
        serde_json::json!(["weights/torchvision/densenet161-8d451a50.pth"])
    );
    assert_eq!(
        i["outs"],
        serde_json::json!(["weights/densenet161.safetensors"])
    );
    // A command stage shows its command.
    let ws = Ws::new("stages:\n  a:\n    cmd: echo hi > o\n    outs: [o]\n");
    let dag: Vec<serde_json::Value> =
        serde_json::from_str(&ws.ok(&["dag", "--format", "json"])).unwrap();
    assert_eq!(dag[0]["cmd"], "echo hi > o");
    assert!(dag[0].get("kind").is_none());
}

#[test]
fn a_bad_profile_value_is_reported_at_the_profile_line() {
    let ws = workspace();
    let path = ws.path("stages/profiles/paper.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let bad = text.replace(
        "finetune: {epochs: 100, lr: 0.001, batch_size: 64, limit_train: null}",
        "finetune: {epochs: 100, lr: 0.001, batch_size: 1, limit_train: null}",
    );
    assert_ne!(bad, text);
    std::fs::write(&path, &bad).unwrap();
    let line = bad
        .lines()
        .position(|l| l.contains("batch_size: 1"))
        .unwrap()
        + 1;
    let err = ws.fail(&["run", "--profile", "paper", "--dry-run"]);
    assert!(err.contains("`batch_size` must be at least 2"), "{err}");
    assert!(
        err.contains(&format!("stages/profiles/paper.yaml:{line}:")),
        "{err}"
    );
    assert!(err.contains("used by `batch_size:` at"), "{err}");
    // Reported once for all the fine-tunings that use it, not 180 times.
    assert_eq!(err.matches("must be at least 2").count(), 1, "{err}");
    assert!(err.contains("more stages"), "{err}");
}

fn stage_exists(dag: &[serde_json::Value], name: &str) -> bool {
    dag.iter().any(|s| s["name"] == name)
}
