//! Where the images, labels and splits of each dataset are in its extracted archives.
//!
//! Each layout turns the `download` output directory into a [`Listing`]: class names and, per
//! split, the image files with their labels, in a fixed order (so preprocessing is
//! deterministic). Labels are 0-based here whatever the dataset's own convention.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::mat;
use super::recipe::{Layout, Recipe};

/// One image to preprocess.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub file: PathBuf,
    pub label: usize,
}

/// Everything `preprocess` needs to know about an image set.
#[derive(Debug)]
pub struct Listing {
    pub classes: Vec<String>,
    /// `train` and `test`, in that order.
    pub splits: Vec<(String, Vec<Item>)>,
}

/// List the dataset found in `input` according to `recipe.layout`.
pub fn list(recipe: &Recipe, input: &Path) -> Result<Listing> {
    let listing = match recipe.layout {
        Layout::Cub => cub(input),
        Layout::Aircraft => aircraft(input),
        Layout::Flowers102 => flowers102(input, recipe),
        Layout::Cars => cars(input),
        Layout::Dogs => dogs(input),
        Layout::Idx => bail!("layout 'idx' is not an image set"),
        Layout::Imagenet => {
            bail!("layout 'imagenet' is streamed from its archives (see data::imagenet)")
        }
    }
    .with_context(|| {
        format!(
            "reading the {:?} layout in {}",
            recipe.layout,
            input.display()
        )
    })?;
    for (split, items) in &listing.splits {
        if let Some(bad) = items.iter().find(|i| i.label >= listing.classes.len()) {
            bail!(
                "split '{split}': label {} of {} is outside the {} classes",
                bad.label,
                bad.file.display(),
                listing.classes.len()
            );
        }
    }
    Ok(listing)
}

fn read_lines(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// Split "<id> <rest>" lines into a map.
fn id_map(path: &Path) -> Result<BTreeMap<usize, String>> {
    read_lines(path)?
        .into_iter()
        .map(|l| {
            let (id, rest) = l
                .split_once(' ')
                .with_context(|| format!("{}: line '{l}' is not '<id> <value>'", path.display()))?;
            let id = id
                .parse()
                .with_context(|| format!("{}: bad id in '{l}'", path.display()))?;
            Ok((id, rest.trim().to_string()))
        })
        .collect()
}

/// Parse a 1-based label as 0-based.
fn label1(s: &str, what: &Path) -> Result<usize> {
    let v: usize = s
        .trim()
        .parse()
        .with_context(|| format!("{}: bad label '{s}'", what.display()))?;
    v.checked_sub(1)
        .with_context(|| format!("{}: label 0 in a 1-based file", what.display()))
}

/// CUB-200-2011: CUB_200_2011/{images.txt, image_class_labels.txt, train_test_split.txt,
/// classes.txt, images/}.
fn cub(input: &Path) -> Result<Listing> {
    let images_txt = find_file(input, "images.txt")?;
    let root = images_txt.parent().unwrap().to_path_buf();
    let images = id_map(&images_txt)?;
    let labels = id_map(&root.join("image_class_labels.txt"))?;
    let is_train = id_map(&root.join("train_test_split.txt"))?;
    let classes_txt = root.join("classes.txt");
    let classes: Vec<String> = id_map(&classes_txt)?.into_values().collect();
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (id, rel) in images {
        let label = label1(
            labels
                .get(&id)
                .with_context(|| format!("image {id} has no class label"))?,
            &classes_txt,
        )?;
        let item = Item {
            file: root.join("images").join(rel),
            label,
        };
        match is_train.get(&id).map(String::as_str) {
            Some("1") => train.push(item),
            Some("0") => test.push(item),
            other => bail!("train_test_split.txt: image {id} has split {other:?}, expected 0 or 1"),
        }
    }
    Ok(Listing {
        classes,
        splits: vec![("train".into(), train), ("test".into(), test)],
    })
}

/// FGVC-Aircraft, variant level: fgvc-aircraft-2013b/data/{variants.txt,
/// images_variant_trainval.txt, images_variant_test.txt, images/<id>.jpg}.
fn aircraft(input: &Path) -> Result<Listing> {
    let data = match find_file(input, "data") {
        Ok(d) if d.join("variants.txt").exists() => d,
        _ => find_file(input, "variants.txt")?
            .parent()
            .unwrap()
            .to_path_buf(),
    };
    let classes = read_lines(&data.join("variants.txt"))?;
    let index: HashMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let mut splits = Vec::new();
    for (split, file) in [
        ("train", "images_variant_trainval.txt"),
        ("test", "images_variant_test.txt"),
    ] {
        let path = data.join(file);
        let mut items = Vec::new();
        for line in read_lines(&path)? {
            let (id, variant) = line.split_once(' ').with_context(|| {
                format!(
                    "{}: line '{line}' is not '<image> <variant>'",
                    path.display()
                )
            })?;
            let label = *index.get(variant.trim()).with_context(|| {
                format!(
                    "{}: variant '{variant}' is not in variants.txt",
                    path.display()
                )
            })?;
            items.push(Item {
                file: data.join("images").join(format!("{id}.jpg")),
                label,
            });
        }
        splits.push((split.to_string(), items));
    }
    Ok(Listing { classes, splits })
}

fn mat_indices(v: &mat::Value, path: &Path, what: &str) -> Result<Vec<usize>> {
    v.nums()
        .with_context(|| format!("{}: '{what}'", path.display()))?
        .iter()
        .map(|&x| {
            if x < 1.0 || x.fract() != 0.0 {
                bail!(
                    "{}: '{what}' holds {x}, expected 1-based integers",
                    path.display()
                );
            }
            Ok(x as usize)
        })
        .collect()
}

/// Oxford Flowers102: jpg/image_NNNNN.jpg, imagelabels.mat (`labels`, 1-based),
/// setid.mat (`trnid`, `valid`, `tstid`). Train is train+val, as in the paper's Table IV.
fn flowers102(input: &Path, recipe: &Recipe) -> Result<Listing> {
    let labels_path = find_file(input, "imagelabels.mat")?;
    let root = labels_path.parent().unwrap().to_path_buf();
    let setid_path = root.join("setid.mat");
    let labels = mat_indices(
        &mat::read_var(&labels_path, "labels")?,
        &labels_path,
        "labels",
    )?;
    let setid = mat::read(&setid_path)?;
    let get = |name: &str| -> Result<Vec<usize>> {
        let v = setid
            .get(name)
            .with_context(|| format!("{}: no variable '{name}'", setid_path.display()))?;
        mat_indices(v, &setid_path, name)
    };
    let jpg = find_file(input, "jpg")?;
    let item = |id: usize| -> Result<Item> {
        let label = *labels
            .get(id - 1)
            .with_context(|| format!("image {id} has no label in imagelabels.mat"))?
            - 1;
        Ok(Item {
            file: jpg.join(format!("image_{id:05}.jpg")),
            label,
        })
    };
    let mut train_ids = get("trnid")?;
    train_ids.extend(get("valid")?);
    train_ids.sort_unstable();
    let train = train_ids
        .into_iter()
        .map(item)
        .collect::<Result<Vec<_>>>()?;
    let test = get("tstid")?
        .into_iter()
        .map(item)
        .collect::<Result<Vec<_>>>()?;
    let n = labels.iter().copied().max().unwrap_or(0);
    let classes = recipe.class_names.clone().unwrap_or_else(|| {
        (1..=n.max(recipe.classes))
            .map(|c| format!("class_{c:03}"))
            .collect()
    });
    Ok(Listing {
        classes,
        splits: vec![("train".into(), train), ("test".into(), test)],
    })
}

/// The `fname` and `class` fields of an `annotations` struct array.
fn car_annotations(path: &Path) -> Result<Vec<(String, usize)>> {
    let a = mat::read_var(path, "annotations")?;
    let names = a
        .field("fname")
        .with_context(|| format!("{}: annotations", path.display()))?;
    let classes = a
        .field("class")
        .with_context(|| format!("{}: annotations", path.display()))?;
    names
        .iter()
        .zip(classes)
        .map(|(n, c)| {
            let c = c.nums()?.first().copied().context("empty class")?;
            if c < 1.0 {
                bail!("{}: class {c} is not 1-based", path.display());
            }
            Ok((n.text()?.to_string(), c as usize - 1))
        })
        .collect()
}

/// Stanford Cars: cars_train/, cars_test/, devkit/{cars_meta.mat, cars_train_annos.mat},
/// cars_test_annos_withlabels.mat.
fn cars(input: &Path) -> Result<Listing> {
    let meta = find_file(input, "devkit")?.join("cars_meta.mat");
    let root = meta.parent().unwrap().parent().unwrap().to_path_buf();
    let classes = mat::read_var(&meta, "class_names")?
        .cells()
        .with_context(|| format!("{}: class_names", meta.display()))?
        .iter()
        .map(|c| c.text().map(str::to_string))
        .collect::<Result<Vec<_>>>()?;
    let train_annos = car_annotations(&root.join("devkit/cars_train_annos.mat"))?;
    let test_annos = car_annotations(&find_file(input, "cars_test_annos_withlabels.mat")?)?;
    let train_dir = find_file(input, "cars_train")?;
    let test_dir = find_file(input, "cars_test")?;
    let items = |annos: Vec<(String, usize)>, dir: &Path| -> Vec<Item> {
        annos
            .into_iter()
            .map(|(f, label)| Item {
                file: dir.join(f),
                label,
            })
            .collect()
    };
    Ok(Listing {
        classes,
        splits: vec![
            ("train".into(), items(train_annos, &train_dir)),
            ("test".into(), items(test_annos, &test_dir)),
        ],
    })
}

/// Stanford Dogs: Images/<wnid>-<breed>/*.jpg and lists/{train,test}_list.mat (`file_list`
/// cells relative to Images/, `labels` 1-based). Class names are the breed folder names in
/// label order.
fn dogs(input: &Path) -> Result<Listing> {
    let images = find_file(input, "Images")?;
    let mut classes: Vec<Option<String>> = Vec::new();
    let mut splits = Vec::new();
    for (split, file) in [("train", "train_list.mat"), ("test", "test_list.mat")] {
        let path = find_file(input, file).or_else(|_| find_file(&input.join("lists"), file))?;
        let vars = mat::read(&path)?;
        let files = vars
            .get("file_list")
            .with_context(|| format!("{}: no 'file_list'", path.display()))?;
        let labels = vars
            .get("labels")
            .with_context(|| format!("{}: no 'labels'", path.display()))?;
        let labels = mat_indices(labels, &path, "labels")?;
        let files = files
            .cells()
            .with_context(|| format!("{}: file_list", path.display()))?;
        if files.len() != labels.len() {
            bail!(
                "{}: {} files but {} labels",
                path.display(),
                files.len(),
                labels.len()
            );
        }
        let mut items = Vec::with_capacity(files.len());
        for (f, l) in files.iter().zip(labels) {
            // Cells may be nested one level ({'a/b.jpg'} inside a cell).
            let rel = match f {
                mat::Value::Cell { items, .. } => items.first().context("empty cell")?.text()?,
                other => other.text()?,
            };
            let label = l - 1;
            let folder = rel.split('/').next().unwrap_or(rel);
            let breed = folder
                .split_once('-')
                .map(|(_, b)| b)
                .unwrap_or(folder)
                .to_string();
            if classes.len() <= label {
                classes.resize(label + 1, None);
            }
            match &classes[label] {
                None => classes[label] = Some(breed),
                Some(b) if *b != breed => bail!(
                    "{}: label {} is both '{b}' and '{breed}'",
                    path.display(),
                    l
                ),
                _ => {}
            }
            items.push(Item {
                file: images.join(rel),
                label,
            });
        }
        splits.push((split.to_string(), items));
    }
    let classes = classes
        .into_iter()
        .enumerate()
        .map(|(i, c)| c.with_context(|| format!("class {} has no images", i + 1)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Listing { classes, splits })
}

/// Find `name` in `dir` or one level below (archives often add a top folder).
pub fn find_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let direct = dir.join(name);
    if direct.exists() {
        return Ok(direct);
    }
    let mut subdirs: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    subdirs.sort();
    for d in subdirs {
        if d.join(name).exists() {
            return Ok(d.join(name));
        }
    }
    bail!(
        "expected '{name}' in {} (or one folder below); is the download complete?",
        dir.display()
    )
}
