"""Write a synthetic two-class data set (two Gaussian blobs in 2-D) as train.csv and test.csv."""
import argparse
import os
import random

ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, required=True, help="samples per split")
ap.add_argument("--seed", type=int, required=True)
ap.add_argument("--out", required=True)
args = ap.parse_args()

rng = random.Random(args.seed)
os.makedirs(args.out, exist_ok=True)
for split in ("train", "test"):
    with open(os.path.join(args.out, f"{split}.csv"), "w") as f:
        f.write("x1,x2,label\n")
        for i in range(args.n):
            label = i % 2
            centre = 1.0 if label else -1.0
            f.write(f"{rng.gauss(centre, 1.2):.6f},{rng.gauss(centre, 1.2):.6f},{label}\n")
