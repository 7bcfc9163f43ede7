//! Fashion-MNIST from the Debian package `dataset-fashion-mnist`: the embedded recipe
//! downloads (verifies the decompressed content) and preprocesses it to 60,000 / 10,000
//! images with 6,000 / 1,000 per class.

use std::path::{Path, PathBuf};

use repro_engine::kinds::StageContext;

/// Run a `uses: KIND` stage's body as `repro internal run-kind` would.
fn run_kind(kind: &str, ctx: &StageContext) -> anyhow::Result<()> {
    let ctx = StageContext {
        kind: kind.into(),
        ..ctx.clone()
    };
    repro::kinds::registry().run(&ctx)
}

fn ctx(ws: &Path, params: serde_json::Value) -> StageContext {
    // Two threads: the kinds' parallel paths are exercised.
    StageContext {
        threads: 2,
        ..StageContext::new("", params, ws)
    }
}

fn recipe() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("stages/datasets/fashion-mnist.yaml")
}

#[test]
fn debian_fashion_mnist_parses_to_the_published_counts() {
    if !Path::new("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists() {
        panic!("dataset-fashion-mnist is not installed; run scripts/setup.sh");
    }
    let ws = tempfile::tempdir().unwrap();
    let recipe = recipe();
    run_kind(
        "download",
        &ctx(
            ws.path(),
            serde_json::json!({"recipe": recipe, "out": "raw/fmnist"}),
        ),
    )
    .unwrap();
    let t = std::time::Instant::now();
    run_kind(
        "preprocess",
        &ctx(
            ws.path(),
            serde_json::json!({"recipe": recipe, "input": "raw/fmnist", "out": "data/fmnist"}),
        ),
    )
    .unwrap();
    eprintln!("preprocess took {:?}", t.elapsed());
    let out = ws.path().join("data/fmnist");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["counts"]["train"]["total"], 60000);
    assert_eq!(meta["counts"]["test"]["total"], 10000);
    assert_eq!(
        meta["counts"]["train"]["per_class"],
        serde_json::json!(vec![6000; 10])
    );
    assert_eq!(
        meta["counts"]["test"]["per_class"],
        serde_json::json!(vec![1000; 10])
    );
    let classes: Vec<String> =
        serde_json::from_slice(&std::fs::read(out.join("classes.json")).unwrap()).unwrap();
    assert_eq!(classes[9], "Ankle boot");

    let bytes = std::fs::read(out.join("train.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let images = st.tensor("images").unwrap();
    assert_eq!(images.shape(), &[60000, 28, 28]);
    assert_eq!(images.dtype(), safetensors::Dtype::U8);
    let labels = st.tensor("labels").unwrap();
    assert_eq!(labels.shape(), &[60000]);
    assert_eq!(labels.dtype(), safetensors::Dtype::I64);
    // Label counts recomputed from the tensor itself, not from meta.json.
    let mut per = [0usize; 10];
    for c in labels.data().chunks_exact(8) {
        per[i64::from_le_bytes(c.try_into().unwrap()) as usize] += 1;
    }
    assert_eq!(per, [6000; 10]);
    // Not a blank tensor: real images have ink.
    assert!(images.data().iter().map(|&b| b as u64).sum::<u64>() > 60000 * 28 * 28 * 40);
}

#[test]
fn a_recipe_with_wrong_counts_fails_clearly_and_places_nothing() {
    let ws = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(recipe())
        .unwrap()
        .replace("test: 10000", "test: 10001");
    std::fs::write(ws.path().join("r.yaml"), text).unwrap();
    run_kind(
        "download",
        &ctx(
            ws.path(),
            serde_json::json!({"recipe": "r.yaml", "out": "raw"}),
        ),
    )
    .unwrap();
    let err = run_kind(
        "preprocess",
        &ctx(
            ws.path(),
            serde_json::json!({"recipe": "r.yaml", "input": "raw", "out": "data"}),
        ),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("'test' has 10000 images, expected 10001"),
        "{msg}"
    );
    assert!(!ws.path().join("data").exists());
}
