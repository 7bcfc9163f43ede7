//! End-to-end tests of `repro eval` and the `evaluate` stage kind on real safetensors files,
//! run through the real binary in temporary directories.

use std::path::Path;
use std::process::{Command, Output};

use safetensors::tensor::{Dtype, TensorView};
use serde_json::Value;

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn i64_bytes(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A tensor to write: (name, dtype, shape, bytes).
type T<'a> = (&'a str, Dtype, Vec<usize>, Vec<u8>);

fn write_st(path: &Path, tensors: &[T<'_>]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, &None, path).unwrap();
}

fn repro(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repro"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The hand-worked example of tests/metrics_props.rs (A_SW 5/6, A_CW = A_Uni = 4/6, t* 2.5).
const LOGITS: [f32; 18] = [
    5., 1., 2., 3., 0., 4., 0., 6., 1., 2., 3., 2., -1., 0., 1., 1., 1., 7.,
];
const LABELS: [i64; 6] = [0, 0, 1, 1, 2, 2];

fn example(path: &Path, extra: bool) {
    let mut t = vec![
        ("logits", Dtype::F32, vec![6, 3], f32_bytes(&LOGITS)),
        ("labels", Dtype::I64, vec![6], i64_bytes(&LABELS)),
    ];
    if extra {
        // Without bias: the same metrics minus a bias of 1 for every class.
        let nobias: Vec<f32> = LOGITS.iter().map(|v| v - 1.0).collect();
        t.push(("logits_nobias", Dtype::F32, vec![6, 3], f32_bytes(&nobias)));
        t.push(("bias", Dtype::F32, vec![1], f32_bytes(&[1.0])));
        t.push(("bias_init", Dtype::F32, vec![1], f32_bytes(&[0.0])));
    }
    write_st(path, &t);
}

#[test]
fn eval_json_has_the_contract_fields() {
    let dir = tempfile::tempdir().unwrap();
    example(&dir.path().join("l.safetensors"), false);
    let o = repro(dir.path(), &["eval", "--logits", "l.safetensors", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["n"], 6);
    assert_eq!(v["classes"], 3);
    assert_eq!(
        (
            v["count_sw"].as_u64(),
            v["count_cw"].as_u64(),
            v["count_uni"].as_u64()
        ),
        (Some(5), Some(4), Some(4))
    );
    assert!((v["a_sw"].as_f64().unwrap() - 500.0 / 6.0).abs() < 1e-9);
    assert!((v["a_uni"].as_f64().unwrap() - 400.0 / 6.0).abs() < 1e-9);
    assert_eq!(v["t_star"], 2.5);
    assert_eq!(v["t_star_interval"], serde_json::json!([2.0, 3.0]));
    assert_eq!(v["t_class"], serde_json::json!([3.5, 2.5, 3.5]));
    assert_eq!(v["ordering_holds"], true);
    assert_eq!(v["non_finite_samples"], 0);
    assert_eq!(v["softmax"]["count_sw"], 5);
    for k in [
        "a_sw",
        "a_cw",
        "a_uni",
        "t_star",
        "t_class",
        "ordering_holds",
    ] {
        assert!(v["softmax"].get(k).is_some(), "softmax.{k} missing");
    }
    assert_eq!(v["run"], serde_json::json!({}));
    assert_eq!(v["bias"], Value::Null);

    let o = repro(dir.path(), &["eval", "--logits", "l.safetensors"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("A_Uni") && t.contains("83.33") && t.contains("66.67") && t.contains("2.500000"),
        "{t}"
    );
}

#[test]
fn eval_rejects_bad_input_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: Vec<(&str, Vec<T<'_>>, &str)> = vec![
        (
            "nolabels",
            vec![(
                "logits",
                Dtype::F32,
                vec![2, 2],
                f32_bytes(&[0., 1., 2., 3.]),
            )],
            "no tensor named `labels`",
        ),
        (
            "i32labels",
            vec![
                (
                    "logits",
                    Dtype::F32,
                    vec![2, 2],
                    f32_bytes(&[0., 1., 2., 3.]),
                ),
                ("labels", Dtype::I32, vec![2], vec![0; 8]),
            ],
            "must be i64",
        ),
        (
            "range",
            vec![
                (
                    "logits",
                    Dtype::F32,
                    vec![2, 2],
                    f32_bytes(&[0., 1., 2., 3.]),
                ),
                ("labels", Dtype::I64, vec![2], i64_bytes(&[0, 2])),
            ],
            "labels[1] = 2 is outside 0..1",
        ),
        (
            "rows",
            vec![
                (
                    "logits",
                    Dtype::F32,
                    vec![2, 2],
                    f32_bytes(&[0., 1., 2., 3.]),
                ),
                ("labels", Dtype::I64, vec![3], i64_bytes(&[0, 1, 1])),
            ],
            "`logits` has 2 rows",
        ),
        (
            "f64",
            vec![
                ("logits", Dtype::F64, vec![1, 1], vec![0; 8]),
                ("labels", Dtype::I64, vec![1], i64_bytes(&[0])),
            ],
            "must be f32",
        ),
        (
            "nobias",
            vec![
                (
                    "logits",
                    Dtype::F32,
                    vec![2, 2],
                    f32_bytes(&[0., 1., 2., 3.]),
                ),
                (
                    "logits_nobias",
                    Dtype::F32,
                    vec![1, 2],
                    f32_bytes(&[0., 1.]),
                ),
                ("labels", Dtype::I64, vec![2], i64_bytes(&[0, 1])),
            ],
            "they must match",
        ),
        (
            "bias",
            vec![
                (
                    "logits",
                    Dtype::F32,
                    vec![2, 2],
                    f32_bytes(&[0., 1., 2., 3.]),
                ),
                ("labels", Dtype::I64, vec![2], i64_bytes(&[0, 1])),
                ("bias", Dtype::F32, vec![3], f32_bytes(&[0., 1., 2.])),
            ],
            "must be [2]",
        ),
    ];
    for (name, tensors, want) in cases {
        let file = format!("{name}.safetensors");
        write_st(&d.join(&file), &tensors);
        let o = repro(d, &["eval", "--logits", &file]);
        let t = text(&o);
        assert!(!o.status.success(), "{name}: should fail:\n{t}");
        assert!(
            t.contains(&file) && t.contains(want),
            "{name}: message should name the file and say `{want}`:\n{t}"
        );
    }
    std::fs::write(d.join("junk.safetensors"), b"not a tensor file").unwrap();
    let t = text(&repro(d, &["eval", "--logits", "junk.safetensors"]));
    assert!(
        t.contains("junk.safetensors") && t.contains("not a valid safetensors file"),
        "{t}"
    );
    let t = text(&repro(d, &["eval", "--logits", "missing.safetensors"]));
    assert!(
        t.contains("missing.safetensors") && t.contains("cannot open"),
        "{t}"
    );
}

fn run_kind(dir: &Path, params: Value) -> Output {
    let spec = serde_json::json!({"stage": "evaluate@test", "kind": "evaluate", "params": params, "threads": 2});
    std::fs::write(dir.join("spec.json"), spec.to_string()).unwrap();
    repro(dir, &["internal", "run-kind", "spec.json"])
}

#[test]
fn evaluate_kind_writes_metrics_json_with_distributions() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("runs/a")).unwrap();
    example(&d.join("runs/a/logits.safetensors"), true);
    let meta = serde_json::json!({"dataset": "toy", "loss": "bce-u", "gamma": 1.5});
    let o = run_kind(
        d,
        serde_json::json!({"logits": "runs/a/logits.safetensors", "meta": meta, "bins": 8}),
    );
    assert!(o.status.success(), "{}", text(&o));
    // Only metrics.json next to the input: no temporary file left behind.
    let mut names: Vec<String> = std::fs::read_dir(d.join("runs/a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["logits.safetensors", "metrics.json"]);
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("runs/a/metrics.json")).unwrap())
            .unwrap();
    assert_eq!(v["run"], meta);
    assert_eq!(v["bias"], serde_json::json!([1.0]));
    assert_eq!(v["bias_init"], serde_json::json!([0.0]));
    assert_eq!(v["count_uni"], 4);

    // Distributions over the 5 correct samples (sample 1 is wrong):
    // class 0: sample 0 [5,1,2]; class 1: [0,6,1], [2,3,2]; class 2: [-1,0,1], [1,1,7].
    let w = &v["distribution"]["with_bias"];
    assert_eq!(w["samples"], 5);
    assert_eq!(w["min_pos"], serde_json::json!([5.0, 3.0, 1.0]));
    assert_eq!(w["max_neg_type1"], serde_json::json!([2.0, 2.0, 1.0]));
    // Type II: class 0 column over classes 1, 2 → max(0, 2, -1, 1) = 2; class 1 column over
    // classes 0, 2 → max(1, 0, 1) = 1; class 2 column over classes 0, 1 → max(2, 1, 2) = 2.
    assert_eq!(w["max_neg_type2"], serde_json::json!([2.0, 1.0, 2.0]));
    assert_eq!(w["mean_min_pos"], 3.0);
    assert!((w["std_min_pos"].as_f64().unwrap() - (8.0f64 / 3.0).sqrt()).abs() < 1e-12);
    assert!((w["mean_max_neg"].as_f64().unwrap() - 5.0 / 3.0).abs() < 1e-12);
    assert_eq!(w["overlap"], serde_json::json!([1.0, 2.0]));
    assert_eq!(w["overlap_width"], 1.0);
    let h = &w["hist"];
    assert_eq!(
        (h["lo"].as_f64(), h["hi"].as_f64(), h["bins"].as_u64()),
        (Some(-1.0), Some(7.0), Some(8))
    );
    // Bins of width 1 on [-1, 7]; 7 falls in the last bin.
    assert_eq!(h["pos"], serde_json::json!([0, 0, 1, 0, 1, 0, 1, 2]));
    assert_eq!(h["neg"], serde_json::json!([1, 2, 4, 3, 0, 0, 0, 0]));
    let nb = &v["distribution"]["without_bias"];
    assert_eq!(nb["min_pos"], serde_json::json!([4.0, 2.0, 0.0]));
    assert_eq!(nb["overlap"], serde_json::json!([0.0, 1.0]));

    // An explicit `out`, and unknown parameters are rejected.
    let o = run_kind(
        d,
        serde_json::json!({"logits": "runs/a/logits.safetensors", "out": "m/x.json"}),
    );
    assert!(o.status.success(), "{}", text(&o));
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("m/x.json")).unwrap()).unwrap();
    assert_eq!(v["run"], serde_json::json!({}));
    assert_eq!(v["distribution"]["without_bias"]["hist"]["bins"], 100);
    let o = run_kind(
        d,
        serde_json::json!({"logits": "runs/a/logits.safetensors", "colour": 1}),
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("colour"), "{}", text(&o));
}

#[test]
fn evaluate_kind_reports_diverged_models() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_st(
        &d.join("l.safetensors"),
        &[
            (
                "logits",
                Dtype::F32,
                vec![2, 2],
                f32_bytes(&[f32::NAN, 0., 1., 0.]),
            ),
            ("labels", Dtype::I64, vec![2], i64_bytes(&[0, 0])),
        ],
    );
    let o = run_kind(d, serde_json::json!({"logits": "l.safetensors"}));
    assert!(o.status.success(), "{}", text(&o));
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(v["non_finite_samples"], 1);
    assert_eq!(v["count_sw"], 1);
    assert_eq!(v["a_sw"], 50.0);
    let t = text(&repro(d, &["eval", "--logits", "l.safetensors"]));
    assert!(t.contains("non-finite"), "{t}");
}
