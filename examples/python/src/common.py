"""Shared by train.py and evaluate.py: reading the CSV and the model's prediction."""
import csv
import math


def read(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return [((float(r["x1"]), float(r["x2"])), int(r["label"])) for r in rows]


def predict(model, x):
    z = model["b"] + sum(w * xi for w, xi in zip(model["w"], x))
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))
