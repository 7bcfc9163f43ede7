//! End to end for every image-set recipe: a small dataset generated in the recipe's own
//! archive layout (a few JPEGs per class, annotation text and MATLAB files) is served over a
//! loopback HTTP server and goes through download → preprocess → loader. Each class has its
//! own dominant colour, so the test can check that labels stay attached to their images.

#[path = "../../../tests/data_http.rs"]
mod http;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use http::{Route, Server};
use repro::data::mat::{self, Value};
use repro::data::recipe::{PerClass, Recipe};
use repro_engine::kinds::StageContext;

/// Run a `uses: KIND` stage's body as `repro internal run-kind` would.
fn run_kind(kind: &str, ctx: &StageContext) -> anyhow::Result<()> {
    let ctx = StageContext {
        kind: kind.into(),
        ..ctx.clone()
    };
    repro::kinds::registry().run(&ctx)
}
use repro_torch::loader::{Loader, LoaderConfig};
use sha2::{Digest, Sha256};

const CLASSES: usize = 3;
const TRAIN: usize = 4;
const TEST: usize = 2;

fn ctx(ws: &Path, params: serde_json::Value) -> StageContext {
    // Two threads: the kinds' parallel paths are exercised.
    StageContext {
        threads: 2,
        ..StageContext::new("", params, ws)
    }
}

/// A JPEG of class `c`: channel c bright, the others dark, with some texture; sizes vary.
fn jpeg(c: usize, k: usize) -> Vec<u8> {
    let (w, h) = (40 + 7 * k as u32, 36 + 5 * c as u32);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let t = ((x * 3 + y * 5 + k as u32 * 11) % 40) as u8;
        let mut p = [20 + t, 20 + t, 20 + t];
        p[c] = 200 + t;
        image::Rgb(p)
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
        .encode_image(&img)
        .unwrap();
    out
}

fn tar(entries: &[(String, Vec<u8>)], gzip: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    let t = b.into_inner().unwrap();
    if !gzip {
        return t;
    }
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&t).unwrap();
    e.finish().unwrap()
}

/// (class, index within class, is_train) for every fixture image, in a fixed order.
fn samples() -> Vec<(usize, usize, bool)> {
    (0..CLASSES)
        .flat_map(|c| (0..TRAIN + TEST).map(move |k| (c, k, k < TRAIN)))
        .collect()
}

fn text(lines: impl IntoIterator<Item = String>) -> Vec<u8> {
    lines
        .into_iter()
        .collect::<Vec<_>>()
        .join("\n")
        .into_bytes()
}

fn col(v: &[f64]) -> Value {
    Value::Num {
        dims: vec![v.len(), 1],
        data: v.to_vec(),
    }
}

/// The files of each recipe, by the names the recipe gives them.
fn fixture(layout: &str) -> HashMap<String, Vec<u8>> {
    let mut files = HashMap::new();
    let s = samples();
    match layout {
        "cub" => {
            let r = "CUB_200_2011";
            let cls = |c: usize| format!("{:03}.Bird_{c}", c + 1);
            let mut e = vec![(
                format!("{r}/classes.txt"),
                text((0..CLASSES).map(|c| format!("{} {}", c + 1, cls(c)))),
            )];
            let path = |c: usize, k: usize| format!("{}/Bird_{c}_{k}.jpg", cls(c));
            e.push((
                format!("{r}/images.txt"),
                text(
                    s.iter()
                        .enumerate()
                        .map(|(i, (c, k, _))| format!("{} {}", i + 1, path(*c, *k))),
                ),
            ));
            e.push((
                format!("{r}/image_class_labels.txt"),
                text(
                    s.iter()
                        .enumerate()
                        .map(|(i, (c, _, _))| format!("{} {}", i + 1, c + 1)),
                ),
            ));
            e.push((
                format!("{r}/train_test_split.txt"),
                text(
                    s.iter()
                        .enumerate()
                        .map(|(i, (_, _, t))| format!("{} {}", i + 1, *t as u8)),
                ),
            ));
            for (c, k, _) in &s {
                e.push((format!("{r}/images/{}", path(*c, *k)), jpeg(*c, *k)));
            }
            files.insert("CUB_200_2011.tgz".into(), tar(&e, true));
        }
        "aircraft" => {
            let d = "fgvc-aircraft-2013b/data";
            let variants = ["Boeing 707-320", "A300B4", "ATR-42"];
            let id = |c: usize, k: usize| format!("{:07}", 1_000_000 + c * 100 + k);
            let mut e = vec![(
                format!("{d}/variants.txt"),
                text(variants.iter().map(|v| v.to_string())),
            )];
            for (split, train) in [("trainval", true), ("test", false)] {
                let lines = s
                    .iter()
                    .filter(|x| x.2 == train)
                    .map(|(c, k, _)| format!("{} {}", id(*c, *k), variants[*c]));
                e.push((format!("{d}/images_variant_{split}.txt"), text(lines)));
            }
            for (c, k, _) in &s {
                e.push((format!("{d}/images/{}.jpg", id(*c, *k)), jpeg(*c, *k)));
            }
            files.insert("fgvc-aircraft-2013b.tar.gz".into(), tar(&e, true));
        }
        "flowers102" => {
            // Image ids interleave classes; train = trnid + valid (half each), test = tstid.
            let mut e = Vec::new();
            let mut labels = vec![0.0; s.len()];
            let (mut trn, mut val, mut tst) = (vec![], vec![], vec![]);
            for (i, (c, k, train)) in s.iter().enumerate() {
                let id = i + 1;
                labels[i] = (*c + 1) as f64;
                e.push((format!("jpg/image_{id:05}.jpg"), jpeg(*c, *k)));
                match (train, k % 2) {
                    (true, 0) => trn.push(id as f64),
                    (true, _) => val.push(id as f64),
                    (false, _) => tst.push(id as f64),
                }
            }
            files.insert("102flowers.tgz".into(), tar(&e, true));
            files.insert(
                "imagelabels.mat".into(),
                mat::write(&[("labels", mat::row(&labels))], true),
            );
            files.insert(
                "setid.mat".into(),
                mat::write(
                    &[
                        ("trnid", mat::row(&trn)),
                        ("valid", mat::row(&val)),
                        ("tstid", mat::row(&tst)),
                    ],
                    false,
                ),
            );
        }
        "cars" => {
            let names = Value::Cell {
                dims: vec![1, CLASSES],
                items: (0..CLASSES)
                    .map(|c| mat::string(&format!("Car Model {c} 2012")))
                    .collect(),
            };
            let annos = |train: bool| {
                let items: Vec<Vec<Value>> = s
                    .iter()
                    .filter(|x| x.2 == train)
                    .enumerate()
                    .map(|(i, (c, _, _))| {
                        vec![
                            mat::row(&[1.0]),
                            mat::row(&[2.0]),
                            mat::row(&[30.0]),
                            mat::row(&[30.0]),
                            mat::row(&[(*c + 1) as f64]),
                            mat::string(&format!("{:05}.jpg", i + 1)),
                        ]
                    })
                    .collect();
                let fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
                    .map(String::from)
                    .to_vec();
                Value::Struct {
                    dims: vec![1, items.len()],
                    fields,
                    items,
                }
            };
            files.insert(
                "car_devkit.tgz".into(),
                tar(
                    &[
                        (
                            "devkit/cars_meta.mat".into(),
                            mat::write(&[("class_names", names)], true),
                        ),
                        (
                            "devkit/cars_train_annos.mat".into(),
                            mat::write(&[("annotations", annos(true))], true),
                        ),
                    ],
                    true,
                ),
            );
            files.insert(
                "cars_test_annos_withlabels.mat".into(),
                mat::write(&[("annotations", annos(false))], true),
            );
            for (split, train) in [("cars_train", true), ("cars_test", false)] {
                let e: Vec<_> = s
                    .iter()
                    .filter(|x| x.2 == train)
                    .enumerate()
                    .map(|(i, (c, k, _))| (format!("{split}/{:05}.jpg", i + 1), jpeg(*c, *k)))
                    .collect();
                files.insert(format!("{split}.tgz"), tar(&e, true));
            }
        }
        "dogs" => {
            let dir = |c: usize| format!("n0208{c:04}-Breed_{c}");
            let rel = |c: usize, k: usize| format!("{}/n0208{c:04}_{k}.jpg", dir(c));
            let e: Vec<_> = s
                .iter()
                .map(|(c, k, _)| (format!("Images/{}", rel(*c, *k)), jpeg(*c, *k)))
                .collect();
            files.insert("images.tar".into(), tar(&e, false));
            let list = |train: bool, nested: bool| {
                let chosen: Vec<_> = s.iter().filter(|x| x.2 == train).collect();
                let cells = chosen
                    .iter()
                    .map(|(c, k, _)| {
                        let v = mat::string(&rel(*c, *k));
                        if nested {
                            Value::Cell {
                                dims: vec![1, 1],
                                items: vec![v],
                            }
                        } else {
                            v
                        }
                    })
                    .collect();
                let labels: Vec<f64> = chosen.iter().map(|(c, _, _)| (*c + 1) as f64).collect();
                mat::write(
                    &[
                        (
                            "file_list",
                            Value::Cell {
                                dims: vec![chosen.len(), 1],
                                items: cells,
                            },
                        ),
                        ("labels", col(&labels)),
                    ],
                    true,
                )
            };
            files.insert(
                "lists.tar".into(),
                tar(
                    &[
                        ("train_list.mat".into(), list(true, false)),
                        ("test_list.mat".into(), list(false, true)),
                    ],
                    false,
                ),
            );
        }
        "imagenet" => {
            // Leaves numbered out of WNID order, plus one inner synset that must be ignored.
            let wnid = |c: usize| format!("n0{}000000", c + 1);
            let ilsvrc_id = |c: usize| (c + 2) % CLASSES + 1;
            let mut order: Vec<usize> = (0..CLASSES).collect();
            order.sort_by_key(|&c| ilsvrc_id(c));
            let mut items: Vec<Vec<Value>> = order
                .iter()
                .map(|&c| {
                    vec![
                        mat::row(&[ilsvrc_id(c) as f64]),
                        mat::string(&wnid(c)),
                        mat::string(&format!("thing {c}")),
                        mat::row(&[0.0]),
                    ]
                })
                .collect();
            items.push(vec![
                mat::row(&[1001.0]),
                mat::string("n09999999"),
                mat::string("everything"),
                mat::row(&[3.0]),
            ]);
            let fields = ["ILSVRC2012_ID", "WNID", "words", "num_children"]
                .map(String::from)
                .to_vec();
            let synsets = Value::Struct {
                dims: vec![items.len(), 1],
                fields,
                items,
            };
            let val: Vec<_> = s.iter().filter(|x| !x.2).collect();
            let truth = text(val.iter().map(|(c, _, _)| ilsvrc_id(*c).to_string()));
            files.insert(
                "ILSVRC2012_devkit_t12.tar.gz".into(),
                tar(
                    &[
                        (
                            "ILSVRC2012_devkit_t12/data/meta.mat".into(),
                            mat::write(&[("synsets", synsets)], true),
                        ),
                        (
                            "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt"
                                .into(),
                            truth,
                        ),
                    ],
                    true,
                ),
            );
            let val_tar: Vec<_> = val
                .iter()
                .enumerate()
                .map(|(i, (c, k, _))| (format!("ILSVRC2012_val_{:08}.JPEG", i + 1), jpeg(*c, *k)))
                .collect();
            files.insert("ILSVRC2012_img_val.tar".into(), tar(&val_tar, false));
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
            files.insert("ILSVRC2012_img_train.tar".into(), tar(&outer, false));
        }
        other => panic!("no fixture for layout {other}"),
    }
    files
}

fn recipes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../stages/datasets")
}

/// The real recipe, pointed at the fixture: sources on the test server, sha256 of the
/// fixture bytes, split sizes of the fixture.
fn test_recipe(file: &str, srv: &Server) -> Recipe {
    test_recipe_in(file, srv, None)
}

/// As `test_recipe`; files of a `local_only` recipe are written to `local` instead of served.
fn test_recipe_in(file: &str, srv: &Server, local: Option<&Path>) -> Recipe {
    let mut r = Recipe::load(&recipes_dir().join(file)).unwrap();
    let layout = serde_json::to_value(r.layout)
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    let mut fx = fixture(&layout);
    for f in &mut r.files {
        let bytes = fx
            .remove(&f.name)
            .unwrap_or_else(|| panic!("{file}: the fixture has no file '{}'", f.name));
        if r.local_only {
            let dir = local.expect("a local_only recipe needs a local directory");
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(&f.name), &bytes).unwrap();
        } else {
            let path = format!("/{}/{}", r.name, f.name);
            f.sources = vec![srv.add(&path, Route::Bytes(bytes.clone()))];
        }
        f.sha256 = Some(hex::encode(Sha256::digest(&bytes)));
        f.md5 = None;
        f.content_sha256 = None;
    }
    assert!(
        fx.is_empty(),
        "{file}: recipe does not list {:?}",
        fx.keys()
    );
    r.classes = CLASSES;
    r.class_names = None;
    r.splits = [
        ("train".to_string(), CLASSES * TRAIN),
        ("test".to_string(), CLASSES * TEST),
    ]
    .into();
    r.per_class = [
        ("train".to_string(), PerClass::Exact(TRAIN)),
        ("test".to_string(), PerClass::Exact(TEST)),
    ]
    .into();
    r
}

fn tree_hash(dir: &Path) -> String {
    let mut paths = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path())
            } else {
                paths.push(e.path())
            }
        }
    }
    paths.sort();
    let mut h = Sha256::new();
    for p in paths {
        h.update(p.strip_prefix(dir).unwrap().to_string_lossy().as_bytes());
        h.update(std::fs::read(&p).unwrap());
    }
    hex::encode(h.finalize())
}

fn end_to_end(recipe_file: &str) {
    let srv = Server::start();
    let ws = tempfile::tempdir().unwrap();
    let recipe = test_recipe_in(recipe_file, &srv, Some(&ws.path().join("local")));
    std::fs::write(
        ws.path().join("recipe.yaml"),
        serde_yaml_ng::to_string(&recipe).unwrap(),
    )
    .unwrap();

    let mut dl = serde_json::json!({"recipe": "recipe.yaml", "out": "raw"});
    if recipe.local_only {
        dl["local_dir"] = "local".into();
    }
    run_kind("download", &ctx(ws.path(), dl)).unwrap();
    let pre = serde_json::json!({"recipe": "recipe.yaml", "input": "raw", "out": "data", "short_side": 32, "shard_mb": 0});
    run_kind("preprocess", &ctx(ws.path(), pre.clone())).unwrap();
    let data = ws.path().join("data");
    let first = tree_hash(&data);
    // Same input, same bytes: the engine's cache depends on it.
    run_kind("preprocess", &ctx(ws.path(), pre)).unwrap();
    assert_eq!(
        tree_hash(&data),
        first,
        "{recipe_file}: preprocess is not deterministic"
    );

    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("meta.json")).unwrap()).unwrap();
    assert_eq!(
        meta["counts"]["train"]["per_class"],
        serde_json::json!(vec![TRAIN; CLASSES]),
        "{recipe_file}"
    );
    assert_eq!(
        meta["counts"]["test"]["per_class"],
        serde_json::json!(vec![TEST; CLASSES]),
        "{recipe_file}"
    );

    // Test split: deterministic, images keep their labels (dominant channel = class).
    let cfg = LoaderConfig {
        batch_size: 4,
        image_size: 24,
        workers: 2,
        ..LoaderConfig::default()
    };
    let test = Loader::new(&data, "test", cfg).unwrap();
    assert_eq!(test.classes().len(), CLASSES);
    assert_eq!(test.len(), CLASSES * TEST);
    let mut seen = vec![0; CLASSES];
    for batch in test.epoch(0) {
        let (x, y) = batch.unwrap();
        let n = y.size()[0];
        assert_eq!(x.size(), vec![n, 3, 24, 24]);
        let means = x.mean_dim(&[2i64, 3][..], false, tch::Kind::Float); // [n, 3]
        let arg = means.argmax(1, false);
        for i in 0..n {
            let label = y.int64_value(&[i]);
            assert_eq!(
                arg.int64_value(&[i]),
                label,
                "{recipe_file}: sample {i} colour does not match label {label}"
            );
            seen[label as usize] += 1;
        }
    }
    assert_eq!(seen, vec![TEST; CLASSES]);

    // Train split: augmented, shuffled, reproducible from the seed, different across epochs.
    let cfg = LoaderConfig {
        batch_size: 5,
        image_size: 24,
        train_augment: true,
        seed: 7,
        workers: 2,
        ..LoaderConfig::default()
    };
    let train = Loader::new(&data, "train", cfg.clone()).unwrap();
    let labels = |l: &Loader, e: u64| -> (Vec<i64>, Vec<f64>) {
        let mut ys = Vec::new();
        let mut sums = Vec::new();
        for b in l.epoch(e) {
            let (x, y) = b.unwrap();
            assert!(x.isfinite().all().int64_value(&[]) == 1);
            ys.extend(Vec::<i64>::try_from(&y).unwrap());
            sums.push(x.sum(tch::Kind::Double).double_value(&[]));
        }
        (ys, sums)
    };
    let (y0, s0) = labels(&train, 0);
    assert_eq!(y0.len(), CLASSES * TRAIN);
    let mut sorted = y0.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (0..CLASSES as i64)
            .flat_map(|c| std::iter::repeat_n(c, TRAIN))
            .collect::<Vec<_>>()
    );
    let one_worker = Loader::new(&data, "train", LoaderConfig { workers: 1, ..cfg }).unwrap();
    assert_eq!(
        labels(&one_worker, 0),
        (y0.clone(), s0.clone()),
        "{recipe_file}: batches depend on the worker count"
    );
    let (y1, s1) = labels(&train, 1);
    assert!(
        y1 != y0 || s1 != s0,
        "{recipe_file}: epochs 0 and 1 are identical"
    );
}

#[test]
fn cub_end_to_end() {
    end_to_end("cub-200-2011.yaml");
}

#[test]
fn aircraft_end_to_end() {
    end_to_end("fgvc-aircraft.yaml");
}

#[test]
fn flowers102_end_to_end() {
    end_to_end("flowers102.yaml");
}

#[test]
fn cars_end_to_end() {
    end_to_end("stanford-cars.yaml");
}

#[test]
fn dogs_end_to_end() {
    end_to_end("stanford-dogs.yaml");
}

#[test]
fn imagenet_end_to_end_from_local_archives() {
    end_to_end("imagenet-1k.yaml");
}

#[test]
fn every_recipe_loads_with_the_splits_of_table_iv() {
    // Table IV of the paper (train, test, classes), plus Fashion-MNIST and ImageNet-1K.
    let want = [
        ("cub-200-2011", 5994, 5794, 200),
        ("fgvc-aircraft", 6667, 3333, 100),
        ("flowers102", 2040, 6149, 102),
        ("stanford-cars", 8144, 8041, 196),
        ("stanford-dogs", 12000, 8580, 120),
        ("fashion-mnist", 60000, 10000, 10),
        ("imagenet-1k", 1281167, 50000, 1000),
    ];
    for (name, train, test, classes) in want {
        let r = Recipe::load(&recipes_dir().join(format!("{name}.yaml"))).unwrap();
        assert_eq!(
            (r.splits["train"], r.splits["test"], r.classes),
            (train, test, classes),
            "{name}"
        );
        for f in &r.files {
            // Known checksums must parse; unknown ones must be explicitly null.
            if f.sha256.is_some() || f.md5.is_some() || f.content_sha256.is_some() {
                f.checksum(false).unwrap();
            } else {
                assert!(f.checksum(false).is_err());
            }
        }
    }
}

#[test]
fn a_preprocess_count_mismatch_names_the_split_and_places_nothing() {
    let srv = Server::start();
    let ws = tempfile::tempdir().unwrap();
    let mut recipe = test_recipe("cub-200-2011.yaml", &srv);
    recipe.splits.insert("test".into(), 5794);
    std::fs::write(
        ws.path().join("recipe.yaml"),
        serde_yaml_ng::to_string(&recipe).unwrap(),
    )
    .unwrap();
    run_kind(
        "download",
        &ctx(
            ws.path(),
            serde_json::json!({"recipe": "recipe.yaml", "out": "raw"}),
        ),
    )
    .unwrap();
    let err = run_kind(
        "preprocess",
        &ctx(
            ws.path(),
            serde_json::json!({"recipe": "recipe.yaml", "input": "raw", "out": "data"}),
        ),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("'test' has 6 images, expected 5794"), "{msg}");
    assert!(!ws.path().join("data").exists());
}
