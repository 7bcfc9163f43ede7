"""Train a logistic regression by full-batch gradient descent; write the weights as JSON and
the training loss of every epoch as CSV (a `plots:` series)."""
import argparse
import json
import math
import os

from common import predict, read

ap = argparse.ArgumentParser()
ap.add_argument("--data", required=True)
ap.add_argument("--lr", type=float, required=True)
ap.add_argument("--epochs", type=int, required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--log", required=True, help="CSV of epoch,loss")
args = ap.parse_args()

data = read(args.data)
model = {"w": [0.0, 0.0], "b": 0.0}
os.makedirs(os.path.dirname(args.log), exist_ok=True)
log = open(args.log, "w")
log.write("epoch,loss\n")
for epoch in range(1, args.epochs + 1):
    gw, gb = [0.0, 0.0], 0.0
    for x, y in data:
        err = predict(model, x) - y
        gw = [g + err * xi for g, xi in zip(gw, x)]
        gb += err
    model["w"] = [w - args.lr * g / len(data) for w, g in zip(model["w"], gw)]
    model["b"] -= args.lr * gb / len(data)
    loss = 0.0
    for x, y in data:
        p = min(max(predict(model, x), 1e-12), 1 - 1e-12)
        loss -= math.log(p if y else 1 - p)
    log.write(f"{epoch},{loss / len(data):.6f}\n")
    # repro shows this line on the stage's progress line instead of logging it.
    msg = json.dumps({"msg": f"epoch {epoch}/{args.epochs}", "frac": epoch / args.epochs})
    print(f"##repro-progress {msg}", flush=True)

log.close()
with open(args.out, "w") as f:
    json.dump(model, f)
print(f"trained lr={args.lr}: w={model['w']} b={model['b']:.4f}")
