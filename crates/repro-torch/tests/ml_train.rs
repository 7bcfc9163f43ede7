//! End-to-end `train` stage runs through the real binary (`repro internal run-kind`):
//! accuracy on a Fashion-MNIST subset, bit-identical determinism, resume after a kill,
//! non-finite steps, fine-tuning from a checkpoint, and parameter errors.

mod ml_common;

use std::path::Path;
use std::time::{Duration, Instant};

use ml_common::{f32s, fashion_mnist, i64s, read_raw, run_train, synthetic};
use serde_json::{Value, json};

fn train_json(ws: &Path, out: &str) -> Value {
    let text = std::fs::read_to_string(ws.join(out).join("train.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A_SW: the share of test samples whose positive metric (with bias) is the largest.
fn a_sw(ws: &Path, out: &str) -> f64 {
    let t = read_raw(&ws.join(out).join("logits.safetensors"));
    let (_, shape, logits) = &t["logits"];
    let logits = f32s(logits);
    let labels = i64s(&t["labels"].2);
    let n = shape[1];
    let correct = labels
        .iter()
        .enumerate()
        .filter(|(i, y)| {
            let row = &logits[i * n..(i + 1) * n];
            let best = (0..n).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            best == **y as usize
        })
        .count();
    100.0 * correct as f64 / labels.len() as f64
}

/// Section V's protocol on a Fashion-MNIST subset: pre-train with soft-d, then fine-tune with
/// bce-nu from that model (feature extractor loaded, new head with the unified bias).
#[test]
fn fashion_mnist_subset_reaches_80_percent_with_soft_d_and_bce_nu() {
    let ws = tempfile::tempdir().unwrap();
    let Some(_) = fashion_mnist(&ws.path().join("fm"), 10000, 2000) else {
        return;
    };
    let runs = [
        ("soft-d", json!({"lr": 0.05, "epochs": 2})),
        // Normalized losses scale the gradient by γ = 96; their learning rate is smaller.
        (
            "bce-nu",
            json!({"lr": 0.001, "epochs": 1, "init_from": "out-soft-d/model.safetensors"}),
        ),
    ];
    for (loss, extra) in runs {
        let out = format!("out-{loss}");
        let mut params = json!({"data": "fm", "out": out, "model": "mlp", "loss": loss, "seed": 1});
        for (k, v) in extra.as_object().unwrap() {
            params[k] = v.clone();
        }
        let (ok, stdout, stderr) = run_train(ws.path(), params, 2, None);
        assert!(ok, "{loss}: {stdout}\n{stderr}");
        let acc = a_sw(ws.path(), &out);
        assert!(acc > 80.0, "{loss}: A_SW {acc:.2}% ≤ 80%");
        let tj = train_json(ws.path(), &out);
        assert_eq!(tj["loss"], loss);
        assert_eq!(tj["diverged"], false);
        assert!((tj["test_accuracy"].as_f64().unwrap() - acc).abs() < 1e-9);
        for key in [
            "bias_init",
            "bias_final",
            "libtorch",
            "train_seconds",
            "params",
            "seed",
            "device",
            "skipped_steps",
        ] {
            assert!(tj.get(key).is_some(), "train.json lacks {key}");
        }
        // The progress relay markers are on stdout for the engine.
        assert!(stdout.contains("##repro-progress "), "no progress lines");
    }
}

#[test]
fn same_seed_gives_bit_identical_logits_on_cpu() {
    let ws = tempfile::tempdir().unwrap();
    synthetic(&ws.path().join("d"), 600, 200, 4, 12, 12, 1);
    let params = |out: &str, seed: u64| {
        json!({"data": "d", "out": out, "model": "cnn", "loss": "bce-nu", "lr": 0.01, "epochs": 2,
               "batch_size": 32, "seed": seed})
    };
    for (out, seed) in [("a", 3), ("b", 3), ("c", 4)] {
        let (ok, so, se) = run_train(ws.path(), params(out, seed), 2, None);
        assert!(ok, "{so}\n{se}");
    }
    let a = read_raw(&ws.path().join("a/logits.safetensors"));
    let b = read_raw(&ws.path().join("b/logits.safetensors"));
    let c = read_raw(&ws.path().join("c/logits.safetensors"));
    assert_eq!(a["logits"], b["logits"], "same seed, different logits");
    assert_eq!(a["logits_nobias"], b["logits_nobias"]);
    assert_ne!(
        a["logits"], c["logits"],
        "a different seed should change the logits"
    );
    let ma = std::fs::read(ws.path().join("a/model.safetensors")).unwrap();
    let mb = std::fs::read(ws.path().join("b/model.safetensors")).unwrap();
    assert!(ma == mb, "model files differ");
}

#[test]
fn logits_file_has_the_evaluate_contract() {
    let ws = tempfile::tempdir().unwrap();
    synthetic(&ws.path().join("d"), 200, 50, 5, 8, 8, 3);
    for (loss, blen) in [("soft-d", 5), ("bce-nu", 1), ("bce-0", 5)] {
        let (ok, so, se) = run_train(
            ws.path(),
            json!({"data": "d", "out": loss, "model": "mlp", "loss": loss, "epochs": 1, "lr": 0.01}),
            1,
            None,
        );
        assert!(ok, "{so}\n{se}");
        let t = read_raw(&ws.path().join(loss).join("logits.safetensors"));
        use safetensors::Dtype;
        assert_eq!(
            (t["logits"].0, t["logits"].1.clone()),
            (Dtype::F32, vec![50, 5])
        );
        assert_eq!(
            (t["logits_nobias"].0, t["logits_nobias"].1.clone()),
            (Dtype::F32, vec![50, 5])
        );
        assert_eq!(
            (t["labels"].0, t["labels"].1.clone()),
            (Dtype::I64, vec![50])
        );
        assert_eq!(t["bias"].1, vec![blen]);
        assert_eq!(t["bias_init"].1, vec![blen]);
        // logits = logits_nobias ± bias, per Table I.
        let (l, r, b) = (
            f32s(&t["logits"].2),
            f32s(&t["logits_nobias"].2),
            f32s(&t["bias"].2),
        );
        let sign = if loss.contains("-n") { -1.0 } else { 1.0 };
        for i in 0..50 {
            for j in 0..5 {
                let bj = if blen == 1 { b[0] } else { b[j] };
                assert!((l[i * 5 + j] - (r[i * 5 + j] + sign * bj)).abs() < 1e-4);
            }
        }
        let tj = train_json(ws.path(), loss);
        assert_eq!(tj["bias_final"].as_array().unwrap().len(), blen);
    }
    // The unified BCE bias starts at log(N−1) (normalized sign).
    let tj = train_json(ws.path(), "bce-nu");
    assert!((tj["bias_init"][0].as_f64().unwrap() - 4f64.ln()).abs() < 1e-6);
}

#[test]
fn non_finite_steps_are_skipped_or_stop_and_outputs_are_still_written() {
    let ws = tempfile::tempdir().unwrap();
    synthetic(&ws.path().join("d"), 256, 64, 4, 8, 8, 1);
    // An absurd learning rate overflows the linear BCE metrics within a few steps.
    for mode in ["skip", "stop"] {
        let (ok, so, se) = run_train(
            ws.path(),
            json!({"data": "d", "out": mode, "model": "mlp", "loss": "bce-d", "lr": 1e30, "epochs": 2,
                   "batch_size": 32, "on_nonfinite": mode}),
            1,
            None,
        );
        assert!(ok, "a diverging run must not fail the stage: {so}\n{se}");
        let tj = train_json(ws.path(), mode);
        assert_eq!(tj["diverged"], true, "{mode}: {tj}");
        let skipped = tj["skipped_steps"].as_u64().unwrap();
        assert!(skipped >= 1, "{mode}: no skipped steps recorded");
        if mode == "stop" {
            assert_eq!(skipped, 1);
            assert_eq!(tj["stopped_on_nonfinite"], true);
        } else {
            // Training went on after the first bad step.
            let steps: u64 = tj["epochs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["steps"].as_u64().unwrap())
                .sum();
            assert_eq!(steps, 16);
        }
        assert!(ws.path().join(mode).join("logits.safetensors").exists());
        assert!(ws.path().join(mode).join("model.safetensors").exists());
    }
}

#[test]
fn resumes_from_checkpoint_after_a_kill_with_identical_results() {
    let ws = tempfile::tempdir().unwrap();
    synthetic(&ws.path().join("d"), 3000, 100, 4, 16, 16, 1);
    let params = |out: &str| {
        json!({"data": "d", "out": out, "model": "cnn", "loss": "soft-d", "epochs": 3, "batch_size": 16,
               "lr": 0.01, "seed": 5})
    };
    // Uninterrupted reference.
    let (ok, so, se) = run_train(ws.path(), params("ref"), 1, None);
    assert!(ok, "{so}\n{se}");

    // Start, kill once the first epoch's checkpoint is written, restart.
    let key = ml_common::stage_key(&params("resumed"));
    let spec = json!({"stage": "t", "kind": "train", "key": key, "params": params("resumed"), "checkpoint": "ckpt", "threads": 1});
    std::fs::write(ws.path().join("spec.json"), spec.to_string()).unwrap();
    let mut child = std::process::Command::new(ml_common::repro())
        .args(["internal", "run-kind", "spec.json"])
        .current_dir(ws.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let meta = ws.path().join("ckpt/train-state.json");
    let t0 = Instant::now();
    while !meta.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no checkpoint after 120 s"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "training ended ({status}) before it could be interrupted; make the test data bigger"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !ws.path().join("resumed/logits.safetensors").exists(),
        "killed too late"
    );
    let (ok, stdout, se) = run_train(ws.path(), params("resumed"), 1, Some("ckpt"));
    assert!(ok, "{stdout}\n{se}");
    assert!(
        stdout.contains("resuming from epoch "),
        "no resume message: {stdout}"
    );
    let a = read_raw(&ws.path().join("ref/logits.safetensors"));
    let b = read_raw(&ws.path().join("resumed/logits.safetensors"));
    assert_eq!(
        a["logits"], b["logits"],
        "resumed run differs from the uninterrupted one"
    );
    assert_eq!(
        train_json(ws.path(), "resumed")["epochs"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // Other parameters: the checkpoint is not used.
    let mut p = params("other");
    p["lr"] = json!(0.02);
    let (ok, stdout, _) = run_train(ws.path(), p, 1, Some("ckpt"));
    assert!(ok);
    assert!(!stdout.contains("resuming from epoch"), "{stdout}");
}

#[test]
fn fine_tunes_from_a_checkpoint_with_a_new_head() {
    let ws = tempfile::tempdir().unwrap();
    synthetic(&ws.path().join("d"), 300, 60, 3, 8, 8, 1);
    let base = json!({"data": "d", "out": "pre", "model": "cnn", "loss": "soft-d", "epochs": 1, "lr": 0.01});
    let (ok, so, se) = run_train(ws.path(), base, 1, None);
    assert!(ok, "{so}\n{se}");
    let (ok, so, se) = run_train(
        ws.path(),
        json!({"data": "d", "out": "ft", "model": "cnn", "loss": "bce-nu", "epochs": 1, "lr": 0.001,
               "init_from": "pre/model.safetensors"}),
        1,
        None,
    );
    assert!(ok, "{so}\n{se}");
    // A model of another architecture is refused with a message naming the file.
    let (ok, _, stderr) = run_train(
        ws.path(),
        json!({"data": "d", "out": "bad", "model": "resnet-small", "loss": "bce-nu", "epochs": 1,
               "init_from": "pre/model.safetensors"}),
        1,
        None,
    );
    assert!(!ok);
    assert!(
        stderr.contains("pre/model.safetensors") && stderr.contains("missing"),
        "{stderr}"
    );
}

#[test]
fn bad_parameters_are_reported_by_name() {
    let ws = tempfile::tempdir().unwrap();
    synthetic(&ws.path().join("d"), 20, 10, 2, 4, 4, 1);
    for (params, needle) in [
        (
            json!({"data": "d", "out": "o", "loss": "bce-x"}),
            "unknown loss",
        ),
        (
            json!({"data": "d", "out": "o", "loss": "bce-u", "bias_mode": 3}),
            "bias_mode",
        ),
        (
            json!({"data": "d", "out": "o", "loss": "bce-d", "bias_mode": 9}),
            "bias_mode",
        ),
        (
            json!({"data": "d", "out": "o", "loss": "soft-d", "epochz": 3}),
            "epochz",
        ),
        (
            json!({"data": "d", "out": "o", "loss": "soft-d", "model": "vgg"}),
            "unknown model",
        ),
        (
            json!({"data": "nope", "out": "o", "loss": "soft-d"}),
            "nope/classes.json",
        ),
    ] {
        let (ok, _, stderr) = run_train(ws.path(), params.clone(), 1, None);
        assert!(!ok, "{params} should fail");
        assert!(
            stderr.contains(needle),
            "{params}: message lacks '{needle}': {stderr}"
        );
    }
}

#[test]
fn trains_on_a_sharded_jpeg_set() {
    use repro::data::shards::ShardWriter;
    let ws = tempfile::tempdir().unwrap();
    let dir = ws.path().join("jpeg");
    // Two classes: dark and bright 40×40 images with noise, JPEG-encoded.
    for (split, n) in [("train", 48), ("test", 20)] {
        let mut w = ShardWriter::new(&dir.join(split), 4096).unwrap();
        for i in 0..n {
            let y = (i % 2) as i64;
            let img = image::RgbImage::from_fn(40, 40, |x, yy| {
                let v = if y == 0 { 40 } else { 200 } + ((x * 7 + yy * 13 + i as u32) % 30) as u8;
                image::Rgb([v, v / 2, 255 - v])
            });
            let mut bytes = std::io::Cursor::new(Vec::new());
            img.write_to(&mut bytes, image::ImageFormat::Jpeg).unwrap();
            w.push(bytes.get_ref(), y).unwrap();
        }
        w.finish().unwrap();
    }
    std::fs::write(dir.join("classes.json"), r#"["dark", "bright"]"#).unwrap();
    let (ok, so, se) = run_train(
        ws.path(),
        json!({"data": "jpeg", "out": "o", "model": "cnn", "loss": "bce-u", "epochs": 2, "batch_size": 8,
               "image_size": 32, "augment": true, "lr": 0.05}),
        2,
        None,
    );
    assert!(ok, "{so}\n{se}");
    let t = read_raw(&ws.path().join("o/logits.safetensors"));
    assert_eq!(t["logits"].1, vec![20, 2]);
    assert_eq!(
        i64s(&t["labels"].2),
        (0..20).map(|i| i % 2).collect::<Vec<i64>>()
    );
    let tj = train_json(ws.path(), "o");
    assert_eq!(tj["image_size"], json!([32, 32, 3]));
    assert_eq!(tj["epochs"][0]["steps"], 6);
    assert!(
        a_sw(ws.path(), "o") > 90.0,
        "two trivially separable classes"
    );
}

/// Issue 28 item 3: the gradient scaler (AMP's `GradScaler`). On the CPU in fp32 its
/// power-of-two scaling is exact, so a run with it ends bit for bit where the run without it
/// does; where the loss overflows (γ far beyond fp32's e^88.7, the loss as written), every
/// step is skipped and the scale halved each time: the model keeps its start, as Table III's
/// γ = 256/512 rows do — while `apply` lets the non-finite step reach the weights.
#[test]
fn grad_scaler_is_exact_in_fp32_and_skips_overflowing_steps() {
    let ws = tempfile::tempdir().unwrap();
    synthetic(&ws.path().join("d"), 256, 64, 4, 8, 8, 1);
    let base = json!({"data": "d", "model": "mlp", "loss": "bce-nu", "lr": 0.01, "epochs": 2,
                      "batch_size": 32, "seed": 3});
    let with = |out: &str, extra: Value| {
        let mut p = base.clone();
        p["out"] = out.into();
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        let (ok, so, se) = run_train(ws.path(), p, 1, None);
        assert!(ok, "{out}: {so}\n{se}");
        train_json(ws.path(), out)
    };
    let plain = with("plain", json!({}));
    let scaled = with("scaled", json!({"grad_scaler": true}));
    assert_eq!(plain["skipped_steps"], 0);
    assert_eq!(scaled["skipped_steps"], 0);
    assert_eq!(scaled["grad_scaler"]["backoffs"], 0);
    assert_eq!(scaled["grad_scaler"]["final_scale"], 65536.0);
    assert!(plain["grad_scaler"].is_null());
    let logits = |out: &str| std::fs::read(ws.path().join(out).join("logits.safetensors")).unwrap();
    assert!(
        logits("plain") == logits("scaled"),
        "the scaled fp32 run differs from the unscaled one"
    );

    // γ = 20000, the loss as written: e^x overflows on the first batch whatever the weights.
    let big = json!({"gamma": 20000, "numerics": "direct", "grad_scaler": true});
    let skipped = with("overflow-scaled", big);
    let steps = 2 * 256 / 32;
    assert_eq!(skipped["skipped_steps"], steps);
    assert_eq!(skipped["grad_scaler"]["backoffs"], steps);
    assert_eq!(
        skipped["grad_scaler"]["final_scale"].as_f64().unwrap(),
        65536.0 / 2f64.powi(steps)
    );
    // No update: the head's weights are where they started (the same seed's fresh head).
    with(
        "untrained",
        json!({"gamma": 20000, "lr": 1e-30, "epochs": 1}),
    );
    let w = |out: &str| {
        let t = read_raw(&ws.path().join(out).join("model.safetensors"));
        f32s(&t["head.weight"].2)
    };
    let (ws_, wu) = (w("overflow-scaled"), w("untrained"));
    assert!(
        ws_.iter()
            .zip(&wu)
            .all(|(a, b)| (a - b).abs() <= 1e-6 * b.abs().max(1.0)),
        "a skipped step changed the head"
    );
    let applied = with(
        "overflow-applied",
        json!({"gamma": 20000, "numerics": "direct", "on_nonfinite": "apply"}),
    );
    assert_eq!(applied["skipped_steps"], steps);
    assert!(
        w("overflow-applied").iter().any(|v| !v.is_finite()),
        "applied non-finite steps should reach the weights"
    );
    // The scaler always skips: combining it with `apply` is refused.
    let mut p = base.clone();
    p["out"] = "bad".into();
    p["grad_scaler"] = true.into();
    p["on_nonfinite"] = "apply".into();
    let (ok, so, se) = run_train(ws.path(), p, 1, None);
    assert!(!ok, "{so}");
    assert!(
        se.contains("grad_scaler") && se.contains("on_nonfinite: skip"),
        "{se}"
    );
}
