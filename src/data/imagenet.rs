//! ImageNet-1K (ILSVRC2012) read straight from the official archives, without extracting
//! them: `ILSVRC2012_devkit_t12.tar.gz` (class list in `data/meta.mat`, validation labels in
//! `data/ILSVRC2012_validation_ground_truth.txt`), `ILSVRC2012_img_train.tar` (one inner tar
//! per class, `n01440764.tar`, …) and `ILSVRC2012_img_val.tar` (50,000 flat JPEGs).
//!
//! Classes are the 1,000 leaf synsets ordered by WNID (the usual torchvision order); the
//! validation set serves as the test split. Samples are visited in archive order.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::mat;

/// What the devkit says.
#[derive(Debug)]
pub struct Devkit {
    /// Leaf WNIDs, sorted; label i is `wnids[i]`.
    pub wnids: Vec<String>,
    /// Human-readable names, parallel to `wnids`.
    pub names: Vec<String>,
    /// Label (0-based, in `wnids` order) of validation image k+1.
    pub val_labels: Vec<usize>,
}

/// Read the class list and validation labels from the devkit archive.
pub fn read_devkit(path: &Path) -> Result<Devkit> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(f)));
    let (mut meta, mut truth) = (None, None);
    for e in ar
        .entries()
        .with_context(|| format!("reading {}", path.display()))?
    {
        let mut e = e?;
        let name = e.path()?.to_string_lossy().into_owned();
        if name.ends_with("data/meta.mat") {
            let mut b = Vec::new();
            e.read_to_end(&mut b)?;
            meta = Some(b);
        } else if name.ends_with("data/ILSVRC2012_validation_ground_truth.txt") {
            let mut s = String::new();
            e.read_to_string(&mut s)?;
            truth = Some(s);
        }
    }
    let meta = meta.with_context(|| format!("{}: no data/meta.mat", path.display()))?;
    let truth = truth.with_context(|| {
        format!(
            "{}: no data/ILSVRC2012_validation_ground_truth.txt",
            path.display()
        )
    })?;
    let vars = mat::parse(&meta).with_context(|| format!("{}: data/meta.mat", path.display()))?;
    let synsets = vars
        .get("synsets")
        .with_context(|| format!("{}: meta.mat has no 'synsets'", path.display()))?;
    let num =
        |v: &mat::Value| -> Result<f64> { v.nums()?.first().copied().context("empty number") };
    let ids = synsets.field("ILSVRC2012_ID")?;
    let wnids = synsets.field("WNID")?;
    let words = synsets.field("words")?;
    let children = synsets.field("num_children")?;
    // ILSVRC2012_ID -> (wnid, words) for the leaves.
    let mut leaves = Vec::new();
    for i in 0..ids.len() {
        if num(children[i])? == 0.0 {
            leaves.push((
                num(ids[i])? as usize,
                wnids[i].text()?.to_string(),
                words[i].text()?.to_string(),
            ));
        }
    }
    let mut sorted: Vec<_> = leaves
        .iter()
        .map(|(_, w, n)| (w.clone(), n.clone()))
        .collect();
    sorted.sort();
    let label_of_wnid: HashMap<&str, usize> = sorted
        .iter()
        .enumerate()
        .map(|(i, (w, _))| (w.as_str(), i))
        .collect();
    let label_of_id: HashMap<usize, usize> = leaves
        .iter()
        .map(|(id, w, _)| (*id, label_of_wnid[w.as_str()]))
        .collect();
    let val_labels = truth
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let id: usize = l
                .trim()
                .parse()
                .with_context(|| format!("bad ground-truth line '{l}'"))?;
            label_of_id
                .get(&id)
                .copied()
                .with_context(|| format!("ground truth names unknown class {id}"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Devkit {
        wnids: sorted.iter().map(|(w, _)| w.clone()).collect(),
        names: sorted.into_iter().map(|(_, n)| n).collect(),
        val_labels,
    })
}

/// Visit every training image: (name, label, bytes), class tar by class tar.
pub fn for_each_train(
    path: &Path,
    devkit: &Devkit,
    f: &mut dyn FnMut(String, usize, Vec<u8>) -> Result<()>,
) -> Result<()> {
    let label: HashMap<&str, usize> = devkit
        .wnids
        .iter()
        .enumerate()
        .map(|(i, w)| (w.as_str(), i))
        .collect();
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut outer = tar::Archive::new(BufReader::with_capacity(1 << 20, file));
    for e in outer
        .entries()
        .with_context(|| format!("reading {}", path.display()))?
    {
        let e = e?;
        let name = e.path()?.to_string_lossy().into_owned();
        let Some(wnid) = name.strip_suffix(".tar") else {
            continue;
        };
        let wnid = wnid.rsplit('/').next().unwrap_or(wnid);
        let Some(&l) = label.get(wnid) else {
            bail!(
                "{}: class archive '{name}' is not one of the devkit's 1,000 classes",
                path.display()
            );
        };
        let mut inner = tar::Archive::new(e);
        for img in inner
            .entries()
            .with_context(|| format!("reading {name} in {}", path.display()))?
        {
            let mut img = img?;
            if !img.header().entry_type().is_file() {
                continue;
            }
            let iname = img.path()?.to_string_lossy().into_owned();
            let mut bytes = Vec::with_capacity(img.size() as usize);
            img.read_to_end(&mut bytes)?;
            f(format!("{name}/{iname}"), l, bytes)?;
        }
    }
    Ok(())
}

/// Visit every validation image: (name, label, bytes).
pub fn for_each_val(
    path: &Path,
    devkit: &Devkit,
    f: &mut dyn FnMut(String, usize, Vec<u8>) -> Result<()>,
) -> Result<()> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut ar = tar::Archive::new(BufReader::with_capacity(1 << 20, file));
    for e in ar
        .entries()
        .with_context(|| format!("reading {}", path.display()))?
    {
        let mut e = e?;
        if !e.header().entry_type().is_file() {
            continue;
        }
        let name = e.path()?.to_string_lossy().into_owned();
        // ILSVRC2012_val_00000001.JPEG
        let k: usize = name
            .rsplit('_')
            .next()
            .and_then(|s| s.split('.').next())
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("{}: unexpected member '{name}'", path.display()))?;
        let l = *devkit.val_labels.get(k.wrapping_sub(1)).with_context(|| {
            format!(
                "{}: '{name}' has no ground-truth label in the devkit",
                path.display()
            )
        })?;
        let mut bytes = Vec::with_capacity(e.size() as usize);
        e.read_to_end(&mut bytes)?;
        f(name, l, bytes)?;
    }
    Ok(())
}
