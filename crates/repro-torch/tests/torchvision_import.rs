//! torchvision checkpoints imported with `repro weights import` give the same network as
//! torchvision: for ResNet50, ResNet101 and DenseNet161 with random weights (batch norms with
//! random scale, shift, running mean and variance, so a swap of any two fails), PyTorch writes the state dict with `torch.save` and its outputs on
//! one batch; our import of that file, loaded into our models, gives the same eval-mode logits
//! (1e-4 relative), and one training step gives the same loss and gradients. The DenseNet file
//! uses the legacy names and the legacy (pre-zip) format of torchvision's 2017 weights.
//!
//! Needs the test environment's Python with torchvision 0.26 (`scripts/setup.sh --tests`).

use std::path::{Path, PathBuf};

use repro_torch::ml::loss::{BiasInit, Head, LossKind};
use repro_torch::ml::models::{self, ModelName};
use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor, nn};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Reference outputs from PyTorch: for each architecture, `<arch>.pth` (torch.save of the
/// state dict) and `<arch>-ref.safetensors` (input, labels, eval logits, train-step loss and
/// gradients).
const REFERENCE: &str = r#"
import sys, subprocess, torch, torch.nn.functional as F, torchvision.models as tvm
from safetensors.torch import save_file
out = sys.argv[1]
torch.set_num_threads(2)
probes = {
    "resnet50": ["conv1.weight", "layer4.2.bn3.weight", "layer2.0.downsample.0.weight", "fc.weight", "fc.bias"],
    "resnet101": ["conv1.weight", "layer3.22.conv2.weight", "fc.weight"],
    "densenet161": ["features.conv0.weight", "features.denseblock2.denselayer3.conv1.weight", "features.norm5.weight", "classifier.weight"],
}
for arch in ["resnet50", "resnet101", "densenet161"]:
    flags = ["--legacy-names", "--legacy-format"] if arch == "densenet161" else []
    subprocess.run([sys.executable, sys.argv[2], arch, "7", f"{out}/{arch}.pth"] + flags, check=True)
    m = getattr(tvm, arch)(weights=None, num_classes=7)
    sd = torch.load(f"{out}/{arch}.pth")
    import re
    sd = {re.sub(r"(denselayer\d+\.)(norm|relu|conv)\.([12])\.", r"\1\2\3.", k): v for k, v in sd.items()}
    m.load_state_dict(sd)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 64, 64, generator=g)
    y = torch.tensor([1, 4])
    m.eval()
    with torch.no_grad():
        logits = m(x)
    m.train()
    loss = F.cross_entropy(m(x), y)
    loss.backward()
    params = dict(m.named_parameters())
    ref = {"x": x, "y": y, "logits": logits, "loss": loss.detach().reshape(1)}
    for p in probes[arch]:
        ref["grad:" + p] = params[p].grad
    save_file({k: v.contiguous() for k, v in ref.items()}, f"{out}/{arch}-ref.safetensors")
"#;

fn python() -> PathBuf {
    repo().join(".venv/bin/python")
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let diff = (a - b).abs().max().double_value(&[]);
    diff / b.abs().max().double_value(&[]).max(1e-12)
}

#[test]
fn imported_torchvision_models_match_pytorch_in_eval_and_one_training_step() {
    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(python())
        .args(["-c", REFERENCE])
        .arg(dir.path())
        .arg(repo().join("scripts/make_random_weights.py"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the PyTorch reference failed (scripts/setup.sh --tests installs torchvision):\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    tch::set_num_threads(2);
    for (arch, name) in [
        ("resnet50", ModelName::Resnet50),
        ("resnet101", ModelName::Resnet101),
        ("densenet161", ModelName::Densenet161),
    ] {
        let pth = dir.path().join(format!("{arch}.pth"));
        let st = dir.path().join(format!("{arch}.safetensors"));
        let done = repro::weights::import(arch, &pth, &st, None).unwrap();
        assert_eq!(done.classes, 7, "{arch}");
        let r: std::collections::HashMap<String, Tensor> =
            Tensor::read_safetensors(dir.path().join(format!("{arch}-ref.safetensors")))
                .unwrap()
                .into_iter()
                .collect();

        let mut vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let backbone = models::build(&root, name, 3, 64, 64).unwrap();
        let kind: LossKind = "soft-d".parse().unwrap();
        let head = Head::new(
            &(&root / "head"),
            backbone.dim,
            7,
            kind,
            96.0,
            &BiasInit::default(),
        )
        .unwrap();
        // Every variable of our model comes from the file (load fails on any missing name).
        vs.load(&st).unwrap();

        let x = &r["x"];
        let logits = tch::no_grad(|| head.metrics(&backbone.net.forward_t(x, false)).0);
        let e = rel_err(&logits, &r["logits"]);
        assert!(e < 1e-4, "{arch}: eval logits differ by {e:e} (relative)");
        assert_eq!(
            Vec::<i64>::try_from(logits.argmax(1, false)).unwrap(),
            Vec::<i64>::try_from(r["logits"].argmax(1, false)).unwrap()
        );

        let loss = head.loss(&backbone.net.forward_t(x, true), &r["y"]);
        loss.backward();
        let e = rel_err(&loss.reshape([1]), &r["loss"]);
        assert!(
            e < 1e-4,
            "{arch}: training loss {} vs {} ({e:e})",
            loss.double_value(&[]),
            r["loss"].double_value(&[0])
        );
        let vars = vs.variables();
        for (key, want) in r.iter().filter(|(k, _)| k.starts_with("grad:")) {
            let tv = &key["grad:".len()..];
            let ours = tv.replace("fc.", "head.").replace("classifier.", "head.");
            let got = vars[&ours].grad();
            let e = rel_err(&got, want);
            assert!(
                e < 1e-3,
                "{arch}: gradient of {tv} differs by {e:e} (relative)"
            );
        }
        let _ = Kind::Float;
    }

    // Clear errors: another architecture's file, a truncated file, a wrong checksum, an
    // unknown architecture.
    let r50 = dir.path().join("resnet50.pth");
    let out = dir.path().join("x.safetensors");
    let e = format!(
        "{:#}",
        repro::weights::import("resnet101", &r50, &out, None).unwrap_err()
    );
    assert!(
        e.contains("not a torchvision resnet101 checkpoint") && e.contains("layer3."),
        "{e}"
    );
    let bytes = std::fs::read(&r50).unwrap();
    let cut = dir.path().join("cut.pth");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = format!(
        "{:#}",
        repro::weights::import("resnet50", &cut, &out, None).unwrap_err()
    );
    assert!(e.contains("truncated"), "{e}");
    let e = format!(
        "{:#}",
        repro::weights::import("resnet50", &r50, &out, Some("0676ba61")).unwrap_err()
    );
    assert!(e.contains("does not start with 0676ba61"), "{e}");
    let e = format!(
        "{:#}",
        repro::weights::import("vgg16", &r50, &out, None).unwrap_err()
    );
    assert!(e.contains("unknown architecture 'vgg16'"), "{e}");
    assert!(!out.exists(), "nothing is written on error");
}
