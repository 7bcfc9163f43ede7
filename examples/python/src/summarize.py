"""Gather every configuration's metrics into one table (a `plots:` series) and the best one
into a YAML metrics file."""
import argparse
import json
import os

ap = argparse.ArgumentParser()
ap.add_argument("--models", required=True, help="directory of lr-*-epochs-*/metrics.json")
ap.add_argument("--table", required=True)
ap.add_argument("--best", required=True)
args = ap.parse_args()

rows = []
for name in sorted(os.listdir(args.models)):
    path = os.path.join(args.models, name, "metrics.json")
    if not os.path.isfile(path):
        continue
    _, lr, _, epochs = name.split("-")
    with open(path) as f:
        m = json.load(f)
    rows.append((float(lr), int(epochs), m["accuracy"], m["log_loss"]))
rows.sort()

os.makedirs(os.path.dirname(args.table), exist_ok=True)
with open(args.table, "w") as f:
    f.write("run,lr,epochs,accuracy,log_loss\n")
    for i, (lr, epochs, acc, loss) in enumerate(rows):
        f.write(f"{i},{lr},{epochs},{acc:.6f},{loss:.6f}\n")
lr, epochs, acc, loss = max(rows, key=lambda r: (r[2], -r[3]))
with open(args.best, "w") as f:
    f.write(f"best:\n  lr: {lr}\n  epochs: {epochs}\n  accuracy: {acc:.6f}\n  log_loss: {loss:.6f}\n")
    f.write(f"configurations: {len(rows)}\n")
