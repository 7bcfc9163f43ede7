//! Pre-trained weights: torchvision's checkpoints (`torch.save` files) converted to
//! safetensors with the variable names of repro's models, without Python and without
//! libtorch (`repro weights import ARCH IN.pth OUT.safetensors`, and the `import_weights`
//! stage kind).
//!
//! The feature extractors of `repro-torch` use torchvision's names, so the conversion is
//! mostly a format change; on top of it: the ImageNet classifier (`fc.*` of a ResNet,
//! `classifier.*` of a DenseNet) becomes the head (`head.weight`, `head.bias`), which a
//! 0-epoch `train` stage evaluates as it is; DenseNet's legacy names from 2017 (`norm.1`,
//! `conv.2`, …) become the current ones (`norm1`, `conv2`); batch norm's
//! `num_batches_tracked` counters, which nothing reads in evaluation or training with a fixed
//! momentum, are dropped. The checkpoint must hold exactly the architecture's variables, so a
//! file of the wrong architecture is refused with the names that differ.

pub mod checkpoint;
pub mod pickle;

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// The architectures with torchvision checkpoints.
pub const ARCHS: [&str; 3] = ["resnet50", "resnet101", "densenet161"];

/// torchvision's variable names of `arch` (its classifier included).
pub fn expected_names(arch: &str) -> Result<Vec<String>> {
    let bn =
        |p: &str| ["weight", "bias", "running_mean", "running_var"].map(|s| format!("{p}.{s}"));
    let mut names = Vec::new();
    match arch {
        "resnet50" | "resnet101" => {
            let blocks = if arch == "resnet50" {
                [3, 4, 6, 3]
            } else {
                [3, 4, 23, 3]
            };
            names.push("conv1.weight".to_string());
            names.extend(bn("bn1"));
            for (i, n) in blocks.iter().enumerate() {
                for k in 0..*n {
                    let p = format!("layer{}.{k}", i + 1);
                    for c in 1..=3 {
                        names.push(format!("{p}.conv{c}.weight"));
                        names.extend(bn(&format!("{p}.bn{c}")));
                    }
                    if k == 0 {
                        names.push(format!("{p}.downsample.0.weight"));
                        names.extend(bn(&format!("{p}.downsample.1")));
                    }
                }
            }
            names.extend(["fc.weight".to_string(), "fc.bias".to_string()]);
        }
        "densenet161" => {
            names.push("features.conv0.weight".to_string());
            names.extend(bn("features.norm0"));
            for (b, n) in [6, 12, 36, 24].iter().enumerate() {
                for l in 1..=*n {
                    let p = format!("features.denseblock{}.denselayer{l}", b + 1);
                    names.extend(bn(&format!("{p}.norm1")));
                    names.push(format!("{p}.conv1.weight"));
                    names.extend(bn(&format!("{p}.norm2")));
                    names.push(format!("{p}.conv2.weight"));
                }
                if b < 3 {
                    let p = format!("features.transition{}", b + 1);
                    names.extend(bn(&format!("{p}.norm")));
                    names.push(format!("{p}.conv.weight"));
                }
            }
            names.extend(bn("features.norm5"));
            names.extend([
                "classifier.weight".to_string(),
                "classifier.bias".to_string(),
            ]);
        }
        other => bail!(
            "unknown architecture '{other}' (known: {})",
            ARCHS.join(", ")
        ),
    }
    Ok(names)
}

/// A checkpoint name in current torchvision spelling: DenseNet's `…denselayerN.norm.1.weight`
/// → `…denselayerN.norm1.weight` (likewise `relu.1`, `conv.1`, `norm.2`, `conv.2`).
pub fn modern_name(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    let mut out: Vec<String> = Vec::with_capacity(parts.len());
    let mut i = 0;
    while i < parts.len() {
        let legacy = i > 0
            && parts[i - 1].starts_with("denselayer")
            && matches!(parts[i], "norm" | "relu" | "conv")
            && matches!(parts.get(i + 1), Some(&"1") | Some(&"2"))
            && i + 2 < parts.len();
        if legacy {
            out.push(format!("{}{}", parts[i], parts[i + 1]));
            i += 2;
        } else {
            out.push(parts[i].to_string());
            i += 1;
        }
    }
    out.join(".")
}

/// repro's name for a torchvision variable: the classifier is the head.
fn repro_name(arch: &str, name: &str) -> String {
    let classifier = if arch.starts_with("densenet") {
        "classifier."
    } else {
        "fc."
    };
    match name.strip_prefix(classifier) {
        Some(rest) => format!("head.{rest}"),
        None => name.to_string(),
    }
}

/// Check a file's sha256 against a full digest or a prefix of one (torchvision names its
/// files `<arch>-<first 8 hex digits of the sha256>.pth`).
pub fn verify_sha256(path: &Path, want: &str) -> Result<()> {
    let want = want.to_ascii_lowercase();
    if want.len() < 8 || want.len() > 64 || !want.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("sha256 '{want}' must be 8 to 64 hex digits");
    }
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    let got = hex::encode(h.finalize());
    if !got.starts_with(&want) {
        bail!(
            "{}: sha256 is {got}, which does not start with {want}: the file is damaged or not the one pinned",
            path.display()
        );
    }
    Ok(())
}

/// The hash prefix in a torchvision file name (`resnet50-0676ba61.pth` → `0676ba61`).
pub fn name_hash_prefix(path: &Path) -> Option<String> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".pth")?;
    let (_, hex) = stem.rsplit_once('-')?;
    (hex.len() >= 8 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| hex.to_ascii_lowercase())
}

/// What an import wrote.
#[derive(Debug)]
pub struct Imported {
    pub tensors: usize,
    pub classes: usize,
    pub dropped: Vec<String>,
}

/// Convert torchvision checkpoint `input` of `arch` to safetensors `out` with repro's names.
/// `sha256`: a full digest or a prefix; by default the prefix in a torchvision file name.
pub fn import(arch: &str, input: &Path, out: &Path, sha256: Option<&str>) -> Result<Imported> {
    let expected = expected_names(arch)?;
    if let Some(want) = sha256.map(String::from).or_else(|| name_hash_prefix(input)) {
        verify_sha256(input, &want)?;
    }
    let tensors = checkpoint::read(input)?;
    let mut dropped = Vec::new();
    let mut kept = Vec::new();
    for (name, t) in tensors {
        let name = modern_name(&name);
        if name.ends_with(".num_batches_tracked") {
            dropped.push(name);
        } else {
            kept.push((name, t));
        }
    }
    let have: BTreeSet<&str> = kept.iter().map(|(n, _)| n.as_str()).collect();
    let want: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
    let missing: Vec<&str> = want.difference(&have).copied().collect();
    let extra: Vec<&str> = have.difference(&want).copied().collect();
    if !missing.is_empty() || !extra.is_empty() {
        let show = |v: &[&str]| v.iter().take(4).copied().collect::<Vec<_>>().join(", ");
        bail!(
            "{}: not a torchvision {arch} checkpoint: {} of its variables are missing{}{}",
            input.display(),
            missing.len(),
            if missing.is_empty() {
                String::new()
            } else {
                format!(" (e.g. {})", show(&missing))
            },
            if extra.is_empty() {
                String::new()
            } else {
                format!(
                    ", and it has {} others (e.g. {})",
                    extra.len(),
                    show(&extra)
                )
            }
        );
    }
    let classes = kept
        .iter()
        .find(|(n, _)| n.ends_with("classifier.bias") || n == "fc.bias")
        .map(|(_, t)| t.shape.iter().product())
        .unwrap_or(0);
    let mut named: Vec<(String, checkpoint::RawTensor)> = kept
        .into_iter()
        .map(|(n, t)| (repro_name(arch, &n), t))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let views = named
        .iter()
        .map(|(n, t)| {
            let dtype = match t.dtype.as_str() {
                "Float" => safetensors::Dtype::F32,
                "Half" => safetensors::Dtype::F16,
                "BFloat16" => safetensors::Dtype::BF16,
                "Double" => safetensors::Dtype::F64,
                "Long" => safetensors::Dtype::I64,
                "Int" => safetensors::Dtype::I32,
                other => bail!("`{n}` has dtype {other}; expected floating-point weights"),
            };
            let v = safetensors::tensor::TensorView::new(dtype, t.shape.clone(), &t.data)
                .map_err(|e| anyhow::anyhow!("`{n}`: {e:?}"))?;
            Ok((n.clone(), v))
        })
        .collect::<Result<Vec<_>>>()?;
    let n = views.len();
    let bytes = safetensors::tensor::serialize(views, &None)
        .map_err(|e| anyhow::anyhow!("serialising: {e:?}"))?;
    repro_engine::write_atomic(out, &bytes)?;
    Ok(Imported {
        tensors: n,
        classes,
        dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_densenet_names_are_modernised() {
        assert_eq!(
            modern_name("features.denseblock1.denselayer1.norm.1.weight"),
            "features.denseblock1.denselayer1.norm1.weight"
        );
        assert_eq!(
            modern_name("features.denseblock4.denselayer24.conv.2.weight"),
            "features.denseblock4.denselayer24.conv2.weight"
        );
        assert_eq!(
            modern_name("features.transition1.conv.weight"),
            "features.transition1.conv.weight"
        );
        assert_eq!(
            modern_name("layer1.0.downsample.1.running_var"),
            "layer1.0.downsample.1.running_var"
        );
    }

    #[test]
    fn architectures_have_torchvision_variable_counts() {
        // state_dict() sizes of torchvision 0.26 without num_batches_tracked.
        assert_eq!(expected_names("resnet50").unwrap().len(), 267);
        assert_eq!(expected_names("resnet101").unwrap().len(), 522);
        assert_eq!(expected_names("densenet161").unwrap().len(), 806);
        let e = expected_names("vgg16").unwrap_err().to_string();
        assert!(
            e.contains("unknown architecture 'vgg16'") && e.contains("resnet50"),
            "{e}"
        );
    }

    #[test]
    fn hash_prefix_comes_from_torchvision_file_names() {
        assert_eq!(
            name_hash_prefix(Path::new("w/resnet50-0676ba61.pth")).as_deref(),
            Some("0676ba61")
        );
        assert_eq!(name_hash_prefix(Path::new("w/resnet50-random.pth")), None);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x-00000000.pth");
        std::fs::write(&f, b"abc").unwrap();
        // sha256("abc") = ba7816bf…
        verify_sha256(&f, "ba7816bf").unwrap();
        let e = verify_sha256(&f, "0676ba61").unwrap_err().to_string();
        assert!(e.contains("does not start with 0676ba61"), "{e}");
    }
}
