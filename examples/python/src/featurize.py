"""Standardise the features with the training split's mean and spread (both splits alike)."""
import argparse
import csv
import os
import statistics

ap = argparse.ArgumentParser()
ap.add_argument("--data", required=True, help="directory with train.csv and test.csv")
ap.add_argument("--out", required=True)
args = ap.parse_args()


def load(split):
    with open(os.path.join(args.data, f"{split}.csv")) as f:
        return list(csv.DictReader(f))


train = load("train")
stats = {}
for col in ("x1", "x2"):
    values = [float(r[col]) for r in train]
    stats[col] = (statistics.fmean(values), statistics.pstdev(values) or 1.0)

os.makedirs(args.out, exist_ok=True)
for split in ("train", "test"):
    with open(os.path.join(args.out, f"{split}.csv"), "w") as f:
        f.write("x1,x2,label\n")
        for r in load(split):
            x = [(float(r[c]) - m) / s for c, (m, s) in stats.items()]
            f.write(f"{x[0]:.6f},{x[1]:.6f},{r['label']}\n")
