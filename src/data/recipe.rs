//! Dataset recipes (`stages/datasets/<name>.yaml`): where the files come from, their published
//! checksums, how the extracted tree is laid out, and the split sizes the preprocessed data
//! must have (the paper's Table IV). `download` reads the `files`, `preprocess` the rest.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::checksum::Checksum;
use super::extract::Format;

/// How `preprocess` finds images, labels and splits in the downloaded tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// IDX files (MNIST-style), kept in memory: Fashion-MNIST.
    Idx,
    /// CUB-200-2011: images.txt, image_class_labels.txt, train_test_split.txt, classes.txt.
    Cub,
    /// FGVC-Aircraft (variant level): images_variant_{trainval,test}.txt, variants.txt.
    Aircraft,
    /// Oxford Flowers102: jpg/, imagelabels.mat, setid.mat (train+val vs test).
    Flowers102,
    /// Stanford Cars: cars_{train,test}/, devkit/*.mat, cars_test_annos_withlabels.mat.
    Cars,
    /// Stanford Dogs: Images/<wnid>-<breed>/, lists/{train,test}_list.mat.
    Dogs,
    /// ImageNet-1K from the official ILSVRC2012 archives (train tar of tars, val tar, devkit).
    Imagenet,
}

/// One file of a dataset.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// File name as placed (and as looked up in `local_dir`).
    pub name: String,
    /// URLs or local paths, tried in order.
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub md5: Option<String>,
    /// sha256 of the decompressed content of a gzip file.
    #[serde(default)]
    pub content_sha256: Option<String>,
    /// The first 8+ hex digits of the sha256, where only those are published.
    #[serde(default)]
    pub sha256_prefix: Option<String>,
    /// Archive format to extract (default: place the file as is).
    #[serde(default = "no_extract")]
    pub extract: Format,
}

fn no_extract() -> Format {
    Format::None
}

impl FileSpec {
    pub fn checksum(&self, allow_unverified: bool) -> Result<Checksum> {
        Checksum::from_fields_with_prefix(
            self.sha256.as_deref(),
            self.md5.as_deref(),
            self.content_sha256.as_deref(),
            self.sha256_prefix.as_deref(),
            allow_unverified,
            &self.name,
        )
    }
}

/// Expected images per class in one split: exact, or a `[min, max]` range.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerClass {
    Exact(usize),
    Range([usize; 2]),
}

/// A dataset recipe.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    #[serde(default)]
    pub title: Option<String>,
    pub layout: Layout,
    /// Number of classes.
    pub classes: usize,
    /// Images per split (`train`, `test`).
    pub splits: BTreeMap<String, usize>,
    /// Images per class per split, where known.
    #[serde(default)]
    pub per_class: BTreeMap<String, PerClass>,
    /// Class names, where the archive does not carry them (Fashion-MNIST).
    #[serde(default)]
    pub class_names: Option<Vec<String>>,
    /// The files cannot be downloaded (licence); `download` needs `local_dir`.
    #[serde(default)]
    pub local_only: bool,
    /// Shown when `local_only` files are missing.
    #[serde(default)]
    pub licence_note: Option<String>,
    pub files: Vec<FileSpec>,
}

/// One path component that stays where it is joined: not empty, `.`, `..`, and without `/`
/// or NUL.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// Images per class, per split, as found by `preprocess`.
pub type Counts = BTreeMap<String, Vec<usize>>;

impl Recipe {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading dataset recipe {}", path.display()))?;
        let r: Recipe = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("parsing dataset recipe {}", path.display()))?;
        if r.files.is_empty() {
            bail!("dataset recipe {}: `files` is empty", path.display());
        }
        for f in &r.files {
            // A name is placed inside the stage's output directory (and looked up in
            // `local_dir`): one plain file name, never a path that could leave it.
            if !is_plain_file_name(&f.name) {
                bail!(
                    "dataset recipe {}: file name '{}' must be a plain file name (no '/', not '.' \
                     or '..', not empty); files are placed inside the download's `out`",
                    path.display(),
                    f.name.escape_debug()
                );
            }
        }
        for s in r.splits.keys().chain(r.per_class.keys()) {
            if s != "train" && s != "test" {
                bail!(
                    "dataset recipe {}: unknown split '{s}' (use train, test)",
                    path.display()
                );
            }
        }
        if let Some(n) = &r.class_names
            && n.len() != r.classes
        {
            bail!(
                "dataset recipe {}: {} class_names for {} classes",
                path.display(),
                n.len(),
                r.classes
            );
        }
        Ok(r)
    }

    /// Compare what was found with what the recipe promises; the error lists every difference.
    pub fn check_counts(&self, found: &Counts) -> Result<()> {
        let mut problems = Vec::new();
        for (split, &want) in &self.splits {
            let Some(per) = found.get(split) else {
                problems.push(format!(
                    "split '{split}' is missing (expected {want} images)"
                ));
                continue;
            };
            let total: usize = per.iter().sum();
            if total != want {
                problems.push(format!(
                    "split '{split}' has {total} images, expected {want}"
                ));
            }
            if per.len() != self.classes {
                problems.push(format!(
                    "split '{split}' has {} classes, expected {}",
                    per.len(),
                    self.classes
                ));
            }
            let empty: Vec<_> = per
                .iter()
                .enumerate()
                .filter(|(_, n)| **n == 0)
                .map(|(c, _)| c)
                .collect();
            if !empty.is_empty() && split == "train" {
                problems.push(format!("split '{split}': classes {empty:?} have no images"));
            }
            if let Some(rule) = self.per_class.get(split) {
                let (lo, hi) = match rule {
                    PerClass::Exact(n) => (*n, *n),
                    PerClass::Range([a, b]) => (*a, *b),
                };
                let bad: Vec<_> = per
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| **n < lo || **n > hi)
                    .map(|(c, n)| format!("class {c}: {n}"))
                    .take(10)
                    .collect();
                if !bad.is_empty() {
                    problems.push(format!(
                        "split '{split}': images per class must be in [{lo}, {hi}]; {}",
                        bad.join(", ")
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!(
                "dataset '{}' does not match its recipe (the archive is incomplete, a different \
                 version, or mis-read):\n  {}",
                self.name,
                problems.join("\n  ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe() -> Recipe {
        serde_yaml_ng::from_str(
            "name: t\nlayout: cub\nclasses: 2\nsplits: {train: 3, test: 2}\n\
             per_class: {train: [1, 2]}\nfiles: [{name: a, sources: [x], md5: null}]\n",
        )
        .unwrap()
    }

    #[test]
    fn file_names_that_leave_the_output_are_refused() {
        let d = tempfile::tempdir().unwrap();
        for bad in ["../../x", "/etc/passwd", "a/b", "..", ""] {
            let p = d.path().join("r.yaml");
            std::fs::write(
                &p,
                format!(
                    "name: t\nlayout: idx\nclasses: 1\nsplits: {{train: 1}}\nfiles: [{{name: '{bad}', sources: [x], md5: null}}]\n"
                ),
            )
            .unwrap();
            let e = Recipe::load(&p).unwrap_err().to_string();
            assert!(e.contains("must be a plain file name"), "{bad}: {e}");
        }
        assert!(is_plain_file_name("train-images.gz"));
    }

    #[test]
    fn counts_are_checked_per_split_and_class() {
        let r = recipe();
        let mut c = Counts::new();
        c.insert("train".into(), vec![1, 2]);
        c.insert("test".into(), vec![1, 1]);
        r.check_counts(&c).unwrap();
        c.insert("train".into(), vec![3, 0]);
        let e = r.check_counts(&c).unwrap_err().to_string();
        assert!(
            e.contains("class 0: 3") && e.contains("have no images"),
            "{e}"
        );
        c.insert("test".into(), vec![1]);
        let e = r.check_counts(&c).unwrap_err().to_string();
        assert!(e.contains("'test' has 1 images, expected 2"), "{e}");
    }
}
