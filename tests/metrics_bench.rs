//! Benchmark (ignored by default; run by scripts/bench_metrics.sh): evaluation of a logits file
//! against one plain parallel read pass (a sum) over the same mapped matrix, in the same
//! process. Prints `BENCH` lines with median times; no timing is asserted.
//!
//! BENCH_FILE=/path/logits.safetensors BENCH_REPS=7 \
//!   cargo test --release --test metrics_bench -- --ignored --nocapture
//!
//! BENCH_ONLY=rowpass or BENCH_ONLY=sweeps times just that phase (for a profiler).

use std::time::Instant;

// The allocator of the `repro` binary, so that allocation costs are the product's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use rayon::prelude::*;
use repro::metrics::{self, LogitsFile};

fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// The baseline: one parallel read of every metric (row-chunked like the evaluation, with
/// independent lane accumulators so that it runs at memory speed, not add latency).
fn plain_sum(data: &[f32], cols: usize) -> f64 {
    data.par_chunks(cols * 64)
        .map(|c| {
            let mut acc = [0f32; 16];
            let chunks = c.chunks_exact(16);
            let rest: f32 = chunks.remainder().iter().sum();
            for ch in chunks {
                for k in 0..16 {
                    acc[k] += ch[k];
                }
            }
            acc.iter().map(|&a| a as f64).sum::<f64>() + rest as f64
        })
        .sum()
}

#[test]
#[ignore = "benchmark; run via scripts/bench_metrics.sh"]
fn bench_metrics() {
    let Ok(path) = std::env::var("BENCH_FILE") else {
        eprintln!("set BENCH_FILE to a logits safetensors file");
        return;
    };
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let t0 = Instant::now();
    let file = LogitsFile::open(std::path::Path::new(&path)).unwrap();
    let input = file.read().unwrap();
    let open_ms = t0.elapsed().as_secs_f64() * 1e3;
    let m = &input.logits;
    let borrowed = matches!(m.data, std::borrow::Cow::Borrowed(_));
    println!(
        "BENCH shape {} x {} threads {} zero-copy {borrowed} open+validate {open_ms:.1} ms",
        m.rows,
        m.cols,
        rayon::current_num_threads()
    );
    let pass_ms = || {
        median_ms(reps, || {
            std::hint::black_box(metrics::rows::row_stats(m, &input.labels, true));
        })
    };
    let stats = metrics::rows::row_stats(m, &input.labels, true);
    let sweep_ms = |domain| {
        median_ms(reps, || {
            std::hint::black_box(metrics::accuracy::accuracies(
                &stats,
                &input.labels,
                m.cols,
                domain,
            ));
        })
    };
    // One phase alone, for a profiler.
    match std::env::var("BENCH_ONLY").as_deref() {
        Ok("rowpass") => return println!("BENCH rowpass {:.2} ms", pass_ms()),
        Ok("sweeps") => {
            let (raw, soft) = (
                sweep_ms(metrics::Domain::Raw),
                sweep_ms(metrics::Domain::Softmax),
            );
            return println!("BENCH sweeps raw {raw:.2} ms, softmax {soft:.2} ms");
        }
        _ => {}
    }
    // Warm up: fault in the mapping and the caches once.
    let s = plain_sum(&m.data, m.cols);
    let ev = metrics::evaluate(m, &input.labels);
    let sum_ms = median_ms(reps, || {
        std::hint::black_box(plain_sum(&m.data, m.cols));
    });
    let eval_ms = median_ms(reps, || {
        std::hint::black_box(metrics::evaluate(m, &input.labels));
    });
    let full_ms = median_ms(reps.min(3), || {
        std::hint::black_box(metrics::evaluate_full(&input, metrics::DEFAULT_BINS));
    });
    let pass_raw_ms = median_ms(reps, || {
        std::hint::black_box(metrics::rows::row_stats(m, &input.labels, false));
    });
    let (sweep_raw_ms, sweep_soft_ms) = (
        sweep_ms(metrics::Domain::Raw),
        sweep_ms(metrics::Domain::Softmax),
    );
    println!("BENCH sum {sum_ms:.2} ms (checksum {s:.3})");
    println!(
        "BENCH sweeps raw {sweep_raw_ms:.2} ms, softmax {sweep_soft_ms:.2} ms (each on the whole pool)"
    );
    println!("BENCH rowpass {:.2} ms", pass_ms());
    println!(
        "BENCH rowpass-without-softmax {pass_raw_ms:.2} ms (ratio to sum {:.2})",
        pass_raw_ms / sum_ms
    );
    println!("BENCH eval {eval_ms:.2} ms");
    println!("BENCH full {full_ms:.2} ms");
    println!("BENCH ratio eval/sum {:.2}", eval_ms / sum_ms);
    let (r, s) = (&ev.raw, &ev.softmax);
    println!(
        "RESULT raw {} {} {} {:?} softmax {} {} {} {:?}",
        r.count_sw,
        r.count_cw,
        r.count_uni,
        r.uni.t_star(),
        s.count_sw,
        s.count_cw,
        s.count_uni,
        s.uni.t_star()
    );
}
