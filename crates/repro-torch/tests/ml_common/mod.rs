//! Test helpers shared by the `ml_*` tests: build a dataset directory in the `preprocess`
//! output form (train/test safetensors + classes.json) from the Fashion-MNIST IDX files of
//! the Debian package, or from random data, and read tensors back.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};

pub const FASHION_DIR: &str = "/usr/share/datasets/fashion-mnist";

fn gunzip(path: &Path) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(f)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// (images u8 [n*28*28], labels) of the first `limit` samples of an IDX pair.
fn read_idx(
    images: &Path,
    labels: &Path,
    limit: usize,
) -> (Vec<u8>, Vec<i64>, usize, usize, usize) {
    let im = gunzip(images);
    let lb = gunzip(labels);
    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap()) as usize;
    assert_eq!(
        be(&im[0..4]),
        2051,
        "{}: not an IDX image file",
        images.display()
    );
    assert_eq!(
        be(&lb[0..4]),
        2049,
        "{}: not an IDX label file",
        labels.display()
    );
    let (n, h, w) = (be(&im[4..8]), be(&im[8..12]), be(&im[12..16]));
    let n = n.min(limit);
    let pixels = im[16..16 + n * h * w].to_vec();
    let labels = lb[8..8 + n].iter().map(|&y| y as i64).collect();
    (pixels, labels, n, h, w)
}

pub fn write_split(path: &Path, images: &[u8], labels: &[i64], shape: Vec<usize>) {
    let n = labels.len();
    let lbytes: Vec<u8> = labels.iter().flat_map(|y| y.to_le_bytes()).collect();
    let views = vec![
        (
            "images".to_string(),
            TensorView::new(Dtype::U8, shape, images).unwrap(),
        ),
        (
            "labels".to_string(),
            TensorView::new(Dtype::I64, vec![n], &lbytes).unwrap(),
        ),
    ];
    safetensors::serialize_to_file(views, &None, path).unwrap();
}

/// A dataset directory with the first `n_train` / `n_test` Fashion-MNIST samples, or `None`
/// when the Debian package's files are not installed.
pub fn fashion_mnist(dir: &Path, n_train: usize, n_test: usize) -> Option<PathBuf> {
    let src = Path::new(FASHION_DIR);
    if !src.join("train-images-idx3-ubyte.gz").exists() {
        eprintln!("{FASHION_DIR} not installed: skipping");
        return None;
    }
    std::fs::create_dir_all(dir).unwrap();
    for (split, prefix, limit) in [("train", "train", n_train), ("test", "t10k", n_test)] {
        let (im, lb, n, h, w) = read_idx(
            &src.join(format!("{prefix}-images-idx3-ubyte.gz")),
            &src.join(format!("{prefix}-labels-idx1-ubyte.gz")),
            limit,
        );
        write_split(
            &dir.join(format!("{split}.safetensors")),
            &im,
            &lb,
            vec![n, h, w],
        );
    }
    let classes = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ];
    std::fs::write(
        dir.join("classes.json"),
        serde_json::to_string(&classes).unwrap(),
    )
    .unwrap();
    Some(dir.to_path_buf())
}

/// A random dataset: `classes` classes whose images are noise around a per-class pattern.
pub fn synthetic(
    dir: &Path,
    n_train: usize,
    n_test: usize,
    classes: usize,
    h: usize,
    w: usize,
    c: usize,
) -> PathBuf {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let per = h * w * c;
    let patterns: Vec<Vec<u8>> = (0..classes)
        .map(|_| (0..per).map(|_| rng.gen_range(0..=255u8)).collect())
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    for (split, n) in [("train", n_train), ("test", n_test)] {
        let mut images = Vec::with_capacity(n * per);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let y = i % classes;
            labels.push(y as i64);
            for &p in &patterns[y] {
                images.push(p.saturating_add(rng.gen_range(0..40)));
            }
        }
        let shape = if c == 1 {
            vec![n, h, w]
        } else {
            vec![n, h, w, c]
        };
        write_split(
            &dir.join(format!("{split}.safetensors")),
            &images,
            &labels,
            shape,
        );
    }
    let names: Vec<String> = (0..classes).map(|i| format!("class{i}")).collect();
    std::fs::write(
        dir.join("classes.json"),
        serde_json::to_string(&names).unwrap(),
    )
    .unwrap();
    dir.to_path_buf()
}

/// Every tensor of a safetensors file as raw bytes, with dtype and shape.
pub fn read_raw(path: &Path) -> HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect()
}

pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

pub fn i64s(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// The `repro-torch` binary built for these tests (same `internal run-kind` interface).
pub fn repro() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_repro-torch"))
}

/// A stand-in for the engine's stage key (the context's `key`) of a train stage: it changes with the
/// parameters, as the engine's does.
pub fn stage_key(params: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(params.to_string().as_bytes()))
}

/// Run `repro internal run-kind` for a train stage in `ws` with the given params, with
/// the stage key in its context as the engine writes it; returns (success, stdout, stderr).
pub fn run_train(
    ws: &Path,
    params: serde_json::Value,
    threads: usize,
    checkpoint: Option<&str>,
) -> (bool, String, String) {
    let key = stage_key(&params);
    let spec = serde_json::json!({
        "stage": "train@test",
        "kind": "train",
        "key": key,
        "params": params,
        "checkpoint": checkpoint,
        "threads": threads,
        "gpus": [],
    });
    let spec_path = ws.join(format!("spec-{}.json", std::process::id()));
    std::fs::write(&spec_path, serde_json::to_string(&spec).unwrap()).unwrap();
    let out = std::process::Command::new(repro())
        .args(["internal", "run-kind"])
        .arg(&spec_path)
        .current_dir(ws)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
