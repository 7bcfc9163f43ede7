#!/usr/bin/env python3
"""PyTorch baseline for scripts/bench_train.sh: the same model, batch, threads, optimiser and
data as `repro`'s `train` stage, timed the same way (training steps only, batches assembled from
the u8 images each step).

  bench_train.py make-data DIR                 Fashion-MNIST (Debian package) in the train input form
  bench_train.py cnn DIR N BATCH THREADS       one epoch of the small CNN on the first N images

Prints one JSON object with images_per_s.
"""
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def make_data(d):
    from safetensors.numpy import save_file
    src = "/usr/share/datasets/fashion-mnist"
    os.makedirs(d, exist_ok=True)
    for split, prefix in [("train", "train"), ("test", "t10k")]:
        im = np.frombuffer(gzip.open(f"{src}/{prefix}-images-idx3-ubyte.gz").read(), np.uint8, offset=16)
        lb = np.frombuffer(gzip.open(f"{src}/{prefix}-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
        save_file({"images": np.ascontiguousarray(im.reshape(-1, 28, 28)), "labels": lb.astype(np.int64)},
                  f"{d}/{split}.safetensors")
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    json.dump(names, open(f"{d}/classes.json", "w"))


class Cnn(nn.Module):
    """src/ml/models/small.rs `cnn`, layer for layer."""

    def __init__(self, c=1, side=28):
        super().__init__()
        def block(i, o, s):
            return nn.Sequential(nn.Conv2d(i, o, 3, stride=s, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU())
        self.b1, self.b2, self.b3 = block(c, 16, 1), block(16, 32, 2), block(32, 64, 2)
        s = ((side // 2 + 1) // 2 + 1) // 2
        self.fc = nn.Linear(64 * s * s, 128)

    def forward(self, x):
        x = F.max_pool2d(self.b1(x), 2)
        return F.relu(self.fc(torch.flatten(self.b3(self.b2(x)), 1)))


def cosine(lr0, t, total):
    return lr0 * 0.5 * (1 + math.cos(math.pi * min(t, total) / total))


def bench_cnn(d, n, bs, threads):
    from safetensors.numpy import load_file
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    data = load_file(f"{d}/train.safetensors")
    images = torch.from_numpy(data["images"][:n].copy())
    labels = torch.from_numpy(data["labels"][:n].copy())
    mean, std = images.float().div(255).mean().item(), images.float().div(255).std().item()
    model = Cnn()
    head = nn.Linear(128, 10)  # soft-d: linear classifier with diverse bias
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.SGD([{"params": list(model.parameters()) + [head.weight]},
                           {"params": [head.bias], "weight_decay": 0.0}],
                          lr=0.01, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(n, generator=g)
    steps = n // bs + (1 if n % bs >= 2 else 0)
    t0 = time.perf_counter()
    seen = 0
    for b in range(steps):
        idx = order[b * bs:(b + 1) * bs]
        x = (images[idx].unsqueeze(1).float() / 255 - mean) / std
        y = labels[idx]
        for grp in opt.param_groups:
            grp["lr"] = cosine(0.01, b, steps)
        opt.zero_grad()
        loss = F.cross_entropy(head(model(x)), y)
        loss.backward()
        # Same per-step work as repro: read the loss (and check finiteness).
        ok = bool(torch.isfinite(loss)) and all(bool(torch.isfinite(p.grad).all()) for p in params)
        if ok:
            opt.step()
        seen += len(idx)
    dt = time.perf_counter() - t0
    print(json.dumps({"images_per_s": seen / dt, "seconds": dt, "images": seen, "torch": torch.__version__}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make-data":
        make_data(sys.argv[2])
    elif cmd == "cnn":
        bench_cnn(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        sys.exit(__doc__)
