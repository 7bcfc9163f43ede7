"""NumPy baseline for the metrics benchmark (scripts/bench_metrics.sh).

  bench_metrics.py gen FILE N_SAMPLES N_CLASSES   write a synthetic logits file
  bench_metrics.py bench FILE [REPS]              time a NumPy evaluation of the same file

The NumPy evaluation implements the same definitions as src/metrics (Eqs. 7, 11-22 and the
SoftMax variant of Supplement S.IV), vectorised the usual NumPy way: per-sample positive and
maximum negative metrics, then the uniform threshold by sorting interval endpoints and a
cumulative sum, and the class-wise thresholds class by class. It prints the same counts as the
Rust benchmark so the two can be checked against each other.
"""

import sys
import time

import numpy as np
from safetensors.numpy import load_file, save_file


def gen(path, n, classes, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n, dtype=np.int64)
    # Logits like a trained classifier's: noise, a per-sample offset, and a boost of the true
    # class so that roughly three quarters of the samples are classified correctly.
    logits = rng.standard_normal((n, classes), dtype=np.float32)
    logits += rng.standard_normal((n, 1), dtype=np.float32) * 2.0
    logits[np.arange(n), labels] += np.float32(4.0) + rng.standard_normal(n).astype(np.float32)
    save_file({"logits": logits, "labels": labels}, path)


def best_threshold(q, p):
    """Max over t of #{i: q_i <= t < p_i}, and the first maximising interval [lo, hi)."""
    keep = q < p
    q, p = q[keep], p[keep]
    if q.size == 0:
        return 0, None
    vals = np.concatenate([q, p])
    delta = np.concatenate([np.ones(q.size), -np.ones(p.size)])
    uniq, inv = np.unique(vals, return_inverse=True)
    count = np.cumsum(np.bincount(inv, weights=delta))
    k = int(np.argmax(count))
    best = int(round(count[k]))
    after = np.nonzero(count[k:] < best - 0.5)[0]
    hi = uniq[k + after[0]]
    return best, (uniq[k], hi)


def t_star(interval):
    if interval is None or not np.isfinite(interval[0]):
        return None
    lo, hi = interval
    return lo + (hi - lo) / 2


def evaluate(logits, labels):
    n, classes = logits.shape
    rows = np.arange(n)
    finite = np.isfinite(logits).all(axis=1)
    pos = logits[rows, labels].astype(np.float64)
    masked = logits.copy()
    masked[rows, labels] = -np.inf
    neg = masked.max(axis=1).astype(np.float64)
    pos[~finite] = np.nan
    neg[~finite] = np.nan
    m = np.maximum(pos, neg)
    with np.errstate(over="ignore", invalid="ignore"):
        ln_sum = np.log(np.exp(logits - logits.max(axis=1, keepdims=True)).sum(axis=1, dtype=np.float64))
    out = {}
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(classes + 1))
    for name, (q, p) in {
        "raw": (neg, pos),
        "softmax": ((neg - m) - ln_sum, (pos - m) - ln_sum),
    }.items():
        with np.errstate(invalid="ignore"):
            sw = int(np.count_nonzero(q < p))
        uni, interval = best_threshold(q, p)
        cw = 0
        for c in range(classes):
            idx = order[bounds[c]:bounds[c + 1]]
            cw += best_threshold(q[idx], p[idx])[0]
        t = t_star(interval)
        if name == "softmax" and interval is not None:
            t = t_star((np.exp(interval[0]), np.exp(interval[1])))
        out[name] = (sw, cw, uni, t)
    return out


def main():
    if sys.argv[1] == "gen":
        gen(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    path = sys.argv[2]
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    t0 = time.perf_counter()
    d = load_file(path)
    logits, labels = d["logits"], d["labels"]
    print(f"BENCH numpy load {1e3 * (time.perf_counter() - t0):.1f} ms")
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = evaluate(logits, labels)
        times.append(1e3 * (time.perf_counter() - t0))
    t0 = time.perf_counter()
    s = logits.sum(dtype=np.float64)
    sum_ms = 1e3 * (time.perf_counter() - t0)
    print(f"BENCH numpy eval {sorted(times)[len(times) // 2]:.2f} ms")
    print(f"BENCH numpy sum {sum_ms:.2f} ms (checksum {s:.3f})")
    r, x = out["raw"], out["softmax"]
    print(f"RESULT raw {r[0]} {r[1]} {r[2]} {r[3]} softmax {x[0]} {x[1]} {x[2]} {x[3]}")


if __name__ == "__main__":
    main()
