//! The metrics.json object and the human-readable table.
//!
//! JSON has no infinities or NaN: every non-finite number is written as `null` (an unbounded
//! end of a threshold interval, an undefined threshold, a class without correct samples).
//! The field names are a contract with the report templates and the README; see
//! docs/metrics.md for the schema.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::Evaluation;
use super::accuracy::Accuracies;
use super::distribution::Dist;
use super::input::EvalInput;
use super::sweep::Best;

/// A number, or null when not finite.
fn num(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

fn opt(x: Option<f64>) -> Value {
    x.map_or(Value::Null, num)
}

fn opt32(x: Option<f32>) -> Value {
    x.map_or(Value::Null, |v| num(v as f64))
}

fn interval(b: &Best) -> Value {
    match b.interval {
        Some((lo, hi)) => json!([num(lo), num(hi)]),
        None => json!([null, null]),
    }
}

fn accuracies(a: &Accuracies) -> Value {
    json!({
        "a_sw": a.pct(a.count_sw),
        "a_cw": a.pct(a.count_cw),
        "a_uni": a.pct(a.count_uni),
        "count_sw": a.count_sw,
        "count_cw": a.count_cw,
        "count_uni": a.count_uni,
        "t_star": opt(a.uni.t_star()),
        "t_star_interval": interval(&a.uni),
        "t_class": a.class.iter().map(|b| opt(b.t_star())).collect::<Vec<_>>(),
        "t_class_interval": a.class.iter().map(interval).collect::<Vec<_>>(),
        "count_class": a.class.iter().map(|b| b.count).collect::<Vec<_>>(),
        "ordering_holds": a.ordering_holds(),
    })
}

fn dist(d: &Dist) -> Value {
    let list = |v: &[Option<f32>]| v.iter().map(|&x| opt32(x)).collect::<Vec<_>>();
    json!({
        "samples": d.samples,
        "min_pos": list(&d.min_pos),
        "max_neg_type1": list(&d.max_neg_type1),
        "max_neg_type2": list(&d.max_neg_type2),
        "mean_min_pos": opt(d.mean_min_pos),
        "std_min_pos": opt(d.std_min_pos),
        "mean_max_neg": opt(d.mean_max_neg),
        "std_max_neg": opt(d.std_max_neg),
        "overlap": d.overlap.map_or(Value::Null, |(a, b)| json!([num(a as f64), num(b as f64)])),
        "overlap_width": num(d.overlap_width),
        "hist": {
            "lo": num(d.hist.lo as f64),
            "hi": num(d.hist.hi as f64),
            "bins": d.hist.bins,
            "pos": d.hist.pos,
            "neg": d.hist.neg,
        },
    })
}

fn floats(v: &Option<Vec<f32>>) -> Value {
    v.as_ref()
        .map_or(Value::Null, |v| v.iter().map(|&x| num(x as f64)).collect())
}

/// The metrics.json object. `run` is copied verbatim (the evaluate stage's `meta`).
pub fn to_json(ev: &Evaluation, input: &EvalInput<'_>, run: &Value) -> Value {
    let mut v = accuracies(&ev.raw);
    let o = v.as_object_mut().expect("object");
    o.insert("n".into(), json!(ev.n));
    o.insert("classes".into(), json!(ev.classes));
    o.insert("non_finite_samples".into(), json!(ev.non_finite_samples));
    o.insert("softmax".into(), accuracies(&ev.softmax));
    let distribution = match &ev.with_bias {
        Some(d) => json!({
            "with_bias": dist(d),
            "without_bias": ev.without_bias.as_ref().map_or(Value::Null, dist),
        }),
        None => Value::Null,
    };
    o.insert("distribution".into(), distribution);
    o.insert("bias".into(), floats(&input.bias));
    o.insert("bias_init".into(), floats(&input.bias_init));
    o.insert("run".into(), run.clone());
    v
}

fn fmt_t(t: Option<f64>) -> String {
    t.map_or("undefined".into(), |t| format!("{t:.6}"))
}

fn fmt_end(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.6}")
    } else if x > 0.0 {
        "+inf".into()
    } else {
        "-inf".into()
    }
}

/// The table `repro eval` prints.
pub fn table(ev: &Evaluation, source: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{source}: {} samples, {} classes", ev.n, ev.classes);
    let _ = writeln!(
        s,
        "{:<10} {:>12} {:>12} {:>12} {:>14}  t* interval",
        "metrics", "A_SW %", "A_CW %", "A_Uni %", "t*"
    );
    for (name, a) in [("raw", &ev.raw), ("softmax", &ev.softmax)] {
        let iv = a.uni.interval.map_or("(any)".to_string(), |(lo, hi)| {
            format!("[{}, {})", fmt_end(lo), fmt_end(hi))
        });
        let _ = writeln!(
            s,
            "{name:<10} {:>12.2} {:>12.2} {:>12.2} {:>14}  {iv}",
            a.pct(a.count_sw),
            a.pct(a.count_cw),
            a.pct(a.count_uni),
            fmt_t(a.uni.t_star()),
        );
        let _ = writeln!(
            s,
            "{:<10} {:>12} {:>12} {:>12}",
            "  counts", a.count_sw, a.count_cw, a.count_uni
        );
    }
    for (name, a) in [("raw", &ev.raw), ("softmax", &ev.softmax)] {
        if !a.ordering_holds() {
            let _ = writeln!(
                s,
                "WARNING: A_Uni <= A_CW <= A_SW (Eq. 26) does not hold for {name} metrics"
            );
        }
    }
    if ev.non_finite_samples > 0 {
        let _ = writeln!(
            s,
            "WARNING: {} samples have non-finite metrics (diverged model?); counted as wrong",
            ev.non_finite_samples
        );
    }
    s
}
