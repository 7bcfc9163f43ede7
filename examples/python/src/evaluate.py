"""Evaluate a model on the test split: accuracy and log loss, written as metrics JSON."""
import argparse
import json
import math

from common import predict, read

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--data", required=True)
ap.add_argument("--out", required=True)
args = ap.parse_args()

with open(args.model) as f:
    model = json.load(f)
data = read(args.data)
correct, loss = 0, 0.0
for x, y in data:
    p = min(max(predict(model, x), 1e-12), 1 - 1e-12)
    correct += int((p >= 0.5) == bool(y))
    loss -= math.log(p if y else 1 - p)
metrics = {"accuracy": correct / len(data), "log_loss": loss / len(data)}
with open(args.out, "w") as f:
    json.dump(metrics, f, indent=2)
print(json.dumps(metrics))
