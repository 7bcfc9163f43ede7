//! The paper profile's stage graph end to end on the CPU (`--profile paper-mini`): tiny
//! fixture datasets in the ImageNet-1K and CUB-200-2011 archive layouts
//! (tests/fixtures/paper-mini, written by `regenerate_paper_mini_fixture`), a random-weight
//! torchvision ResNet50 saved with `torch.save`, downloaded and imported by the pipeline,
//! evaluated as it is (0 epochs), fine-tuned, swept and bias-studied, to the report with the
//! paper's published values beside ours.
//!
//! Needs the test environment's Python with torchvision (`scripts/setup.sh --tests`) to write
//! the weights, and `repro-torch` built next to `repro`.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::Ws;
use repro::data::mat::{self, Value};
use sha2::{Digest, Sha256};

const CLASSES: usize = 3;
const TRAIN: usize = 4;
const TEST: usize = 2;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A 40-odd-pixel JPEG of class `c`: channel c bright, the others dark, with some texture.
fn jpeg(c: usize, k: usize) -> Vec<u8> {
    let (w, h) = (40 + 3 * k as u32, 36 + 2 * c as u32);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let t = ((x * 3 + y * 5 + k as u32 * 11) % 40) as u8;
        let mut p = [20 + t, 20 + t, 20 + t];
        p[c] = 200 + t;
        image::Rgb(p)
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

/// A tar (gzipped if asked) with fixed metadata, so the bytes are reproducible.
fn tar(entries: &[(String, Vec<u8>)], gzip: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    let t = b.into_inner().unwrap();
    if !gzip {
        return t;
    }
    let mut e = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    e.write_all(&t).unwrap();
    e.finish().unwrap()
}

fn lines(v: impl IntoIterator<Item = String>) -> Vec<u8> {
    let mut s = v.into_iter().collect::<Vec<_>>().join("\n");
    s.push('\n');
    s.into_bytes()
}

/// (class, index in class, is_train) of every fixture image.
fn samples() -> Vec<(usize, usize, bool)> {
    (0..CLASSES)
        .flat_map(|c| (0..TRAIN + TEST).map(move |k| (c, k, k < TRAIN)))
        .collect()
}

/// The ILSVRC2012 archives: devkit (meta.mat, validation ground truth), train tar of
/// per-class tars, flat validation tar.
fn imagenet_files() -> Vec<(String, Vec<u8>)> {
    let s = samples();
    let wnid = |c: usize| format!("n0{}000000", c + 1);
    let items: Vec<Vec<Value>> = (0..CLASSES)
        .map(|c| {
            vec![
                mat::row(&[(c + 1) as f64]),
                mat::string(&wnid(c)),
                mat::string(&format!("thing {c}")),
                mat::row(&[0.0]),
            ]
        })
        .collect();
    let synsets = Value::Struct {
        dims: vec![items.len(), 1],
        fields: ["ILSVRC2012_ID", "WNID", "words", "num_children"]
            .map(String::from)
            .to_vec(),
        items,
    };
    let val: Vec<_> = s.iter().filter(|x| !x.2).collect();
    let devkit = tar(
        &[
            (
                "ILSVRC2012_devkit_t12/data/meta.mat".into(),
                mat::write(&[("synsets", synsets)], true),
            ),
            (
                "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt".into(),
                lines(val.iter().map(|(c, _, _)| (c + 1).to_string())),
            ),
        ],
        true,
    );
    let val_tar: Vec<_> = val
        .iter()
        .enumerate()
        .map(|(i, (c, k, _))| (format!("ILSVRC2012_val_{:08}.JPEG", i + 1), jpeg(*c, *k)))
        .collect();
    let outer: Vec<_> = (0..CLASSES)
        .map(|c| {
            let inner: Vec<_> = s
                .iter()
                .filter(|x| x.0 == c && x.2)
                .map(|(c, k, _)| (format!("{}_{k}.JPEG", wnid(*c)), jpeg(*c, *k)))
                .collect();
            (format!("{}.tar", wnid(c)), tar(&inner, false))
        })
        .collect();
    vec![
        ("ILSVRC2012_img_train.tar".into(), tar(&outer, false)),
        ("ILSVRC2012_img_val.tar".into(), tar(&val_tar, false)),
        ("ILSVRC2012_devkit_t12.tar.gz".into(), devkit),
    ]
}

/// CUB_200_2011.tgz with the official text files.
fn cub_files() -> Vec<(String, Vec<u8>)> {
    let s = samples();
    let r = "CUB_200_2011";
    let cls = |c: usize| format!("{:03}.Bird_{c}", c + 1);
    let path = |c: usize, k: usize| format!("{}/Bird_{c}_{k}.jpg", cls(c));
    let mut e = vec![
        (
            format!("{r}/classes.txt"),
            lines((0..CLASSES).map(|c| format!("{} {}", c + 1, cls(c)))),
        ),
        (
            format!("{r}/images.txt"),
            lines(
                s.iter()
                    .enumerate()
                    .map(|(i, (c, k, _))| format!("{} {}", i + 1, path(*c, *k))),
            ),
        ),
        (
            format!("{r}/image_class_labels.txt"),
            lines(
                s.iter()
                    .enumerate()
                    .map(|(i, (c, _, _))| format!("{} {}", i + 1, c + 1)),
            ),
        ),
        (
            format!("{r}/train_test_split.txt"),
            lines(
                s.iter()
                    .enumerate()
                    .map(|(i, (_, _, t))| format!("{} {}", i + 1, *t as u8)),
            ),
        ),
    ];
    for (c, k, _) in &s {
        e.push((format!("{r}/images/{}", path(*c, *k)), jpeg(*c, *k)));
    }
    vec![("CUB_200_2011.tgz".into(), tar(&e, true))]
}

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Write the fixture: `local-data/` (the archives) and `datasets/` (recipes with their
/// sha256s and the fixture's split sizes) under `dir`.
fn write_fixture(dir: &Path) {
    let local = dir.join("local-data");
    let recipes = dir.join("datasets");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::create_dir_all(&recipes).unwrap();
    let sets = [
        (
            "imagenet-1k",
            "imagenet",
            "ImageNet-1K layout (fixture)",
            true,
            imagenet_files(),
        ),
        (
            "cub-200-2011",
            "cub",
            "CUB-200-2011 layout (fixture)",
            false,
            cub_files(),
        ),
    ];
    for (name, layout, title, local_only, files) in sets {
        let mut y = format!(
            "# Fixture for the paper-mini profile (written by tests/paper_mini.rs, \
             regenerate_paper_mini_fixture): {CLASSES} classes, {TRAIN} train + {TEST} test images each.\n\
             name: {name}\ntitle: {title}\nlayout: {layout}\nclasses: {CLASSES}\n\
             splits: {{train: {}, test: {}}}\nper_class: {{train: {TRAIN}, test: {TEST}}}\n",
            CLASSES * TRAIN,
            CLASSES * TEST
        );
        if local_only {
            y.push_str("local_only: true\n");
        }
        y.push_str("files:\n");
        for (f, bytes) in &files {
            std::fs::write(local.join(f), bytes).unwrap();
            y.push_str(&format!("  - name: {f}\n    sha256: {}\n", sha256(bytes)));
            if f.ends_with(".tgz") {
                y.push_str("    extract: tgz\n");
            }
        }
        std::fs::write(recipes.join(format!("{name}.yaml")), y).unwrap();
    }
}

fn fixture_dir() -> PathBuf {
    repo().join("tests/fixtures/paper-mini")
}

/// Rewrite tests/fixtures/paper-mini (run with `--ignored` after changing the generator).
#[test]
#[ignore]
fn regenerate_paper_mini_fixture() {
    write_fixture(&fixture_dir());
}

fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in ["local-data", "datasets"] {
        let mut names: Vec<_> = std::fs::read_dir(dir.join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            out.push((
                format!("{sub}/{n}"),
                std::fs::read(dir.join(sub).join(&n)).unwrap(),
            ));
        }
    }
    out
}

#[test]
fn committed_fixture_is_what_the_generator_writes() {
    let tmp = tempfile::tempdir().unwrap();
    write_fixture(tmp.path());
    let want = files_under(tmp.path());
    let have = files_under(&fixture_dir());
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&have), names(&want));
    for ((n, a), (_, b)) in have.iter().zip(&want) {
        assert!(
            a == b,
            "{n} differs from the generator's output: run `cargo test --test paper_mini -- --ignored`"
        );
    }
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

/// A workspace holding a copy of the repository's pipeline, stages, templates and fixture.
pub fn repo_workspace() -> Ws {
    let ws = Ws::new("");
    std::fs::copy(repo().join("pipeline.yaml"), ws.path("pipeline.yaml")).unwrap();
    for d in ["stages", "templates", "tests/fixtures/paper-mini"] {
        copy_dir(&repo().join(d), &ws.path(d));
    }
    ws
}

/// Random-weight torchvision `arch` with `classes` outputs, saved with torch.save.
fn make_weights(arch: &str, classes: usize, out: &Path) {
    let py = repo().join(".venv/bin/python");
    let o = std::process::Command::new(&py)
        .arg(repo().join("scripts/make_random_weights.py"))
        .args([arch, &classes.to_string()])
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", py.display()));
    assert!(
        o.status.success(),
        "writing torchvision weights failed (scripts/setup.sh --tests installs torchvision):\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn ran_stages(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("ran "))
        .map(|l| l.split(" in ").next().unwrap().to_string())
        .collect()
}

// About a minute on 2 cores (7 minutes under a load average of ~10); most of it is
// ResNet50 on the CPU.
#[test]
fn paper_mini_runs_the_paper_graph_end_to_end() {
    let ws = repo_workspace();
    let pth = ws.path("paper-mini-weights/resnet50-random.pth");
    std::fs::create_dir_all(pth.parent().unwrap()).unwrap();
    make_weights("resnet50", CLASSES, &pth);
    // The whole digest as the pinned prefix (a short all-digit prefix would read as a number).
    let prefix = format!(
        "pretrained.resnet50.sha256_prefix={}",
        sha256(&std::fs::read(&pth).unwrap())
    );

    let out = ws.ok(&[
        "run",
        "--profile",
        "paper-mini",
        "--set",
        &prefix,
        "-j",
        "2",
    ]);
    assert!(out.contains(" 0 failed"), "{out}");
    let ran = ran_stages(&out);
    let count = |p: &str| ran.iter().filter(|s| s.starts_with(p)).count();
    assert_eq!(count("weights_download@"), 1, "{ran:?}");
    assert_eq!(count("weights_import@"), 1, "{ran:?}");
    assert_eq!(count("pretrain@"), 1, "{ran:?}");
    assert_eq!(count("finetune@"), 2 * 2, "{ran:?}");
    assert_eq!(count("gamma_sweep@"), 2, "{ran:?}");
    assert_eq!(count("bias_init@"), 4, "{ran:?}");
    assert_eq!(count("report"), 1, "{ran:?}");
    assert!(
        ran.iter()
            .all(|s| !s.starts_with("gamma_sweep@cub") && !s.starts_with("bias_init@imagenet"))
    );

    // The 0-epoch evaluation is the imported model as it is: no training recorded, and its
    // bias is the torchvision classifier's (the file's fc.bias), not a fresh head's.
    let t: serde_json::Value =
        serde_json::from_str(&ws.read("runs/imagenet-1k/resnet50/pretrain/train.json")).unwrap();
    assert_eq!(t["epochs"].as_array().unwrap().len(), 0, "{t}");
    assert_eq!(t["params"]["epochs"], 0);
    // Per-dataset settings reach the stages.
    let t: serde_json::Value =
        serde_json::from_str(&ws.read("runs/imagenet-1k/resnet50/bce-nu/seed0/train.json"))
            .unwrap();
    assert_eq!(t["params"]["lr"], 0.0001);
    assert_eq!(t["params"]["unified_bias_init"], 0.0);
    assert_eq!(t["bias_init"][0], 0.0);
    let t: serde_json::Value =
        serde_json::from_str(&ws.read("runs/cub-200-2011/resnet50/bce-nu/seed0/train.json"))
            .unwrap();
    assert_eq!(t["params"]["lr"], 0.001);
    assert_eq!(t["image_size"][0], 32);
    assert_eq!(t["epochs"][0]["steps"], 1);

    // The report shows our values with the paper's published ones beside them: Table II's
    // pre-training column and bce-nu column (ImageNet), Table V (CUB), Table III (γ) and X.
    let html = ws.read("report/report.html");
    let m: serde_json::Value =
        serde_json::from_str(&ws.read("runs/cub-200-2011/resnet50/bce-nu/seed0/metrics.json"))
            .unwrap();
    let ours = format!("{:.2}", m["a_sw"].as_f64().unwrap());
    assert!(html.contains(&ours), "the report shows our A_SW {ours}");
    for published in ["paper 75.80", "paper 77.50", "paper 86.09"] {
        assert!(
            html.contains(published),
            "the report lacks the published value ({published})"
        );
    }
}
