#!/usr/bin/env python3
"""torchvision baseline for the loader benchmark (scripts/bench_loader.sh).

Reads the same preprocessed shards as repro's loader (index.safetensors + shard-*.bin, see
src/data/shards.rs), decodes with PIL and applies the same transforms through torchvision
(RandomResizedCrop(224) + RandomHorizontalFlip, or Resize(256) + CenterCrop(224); ToTensor;
Normalize), with a DataLoader of N workers. Prints images/s after one warm-up epoch.
"""
import io
import os
import sys
import time

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import load_file
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class Shards(Dataset):
    def __init__(self, root, split, transform):
        idx = load_file(os.path.join(root, split, "index.safetensors"))
        self.shard, self.offset = idx["shard"], idx["offset"]
        self.length, self.labels = idx["length"], idx["labels"]
        self.dir = os.path.join(root, split)
        self.transform = transform
        self.files = {}

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        s = int(self.shard[i])
        f = self.files.get(s)
        if f is None:  # opened lazily, per worker process
            f = self.files[s] = open(os.path.join(self.dir, f"shard-{s:05}.bin"), "rb")
        data = os.pread(f.fileno(), int(self.length[i]), int(self.offset[i]))
        img = Image.open(io.BytesIO(data)).convert("RGB")
        return self.transform(img), int(self.labels[i])


def main():
    root = sys.argv[1]
    workers = int(os.environ.get("BENCH_WORKERS", "2"))
    epochs = int(os.environ.get("BENCH_EPOCHS", "3"))
    torch.set_num_threads(1)
    for name, tf in [
        ("train (random resized crop + flip)",
         T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])),
        ("test (resize + centre crop)",
         T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(MEAN, STD)])),
    ]:
        ds = Shards(root, "train", tf)
        dl = DataLoader(ds, batch_size=64, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, prefetch_factor=2 if workers > 0 else None)
        for _ in dl:  # warm-up epoch (starts the workers)
            pass
        t = time.perf_counter()
        n = 0
        for _ in range(epochs):
            for x, y in dl:
                n += x.shape[0]
        secs = time.perf_counter() - t
        print(f"BENCH torchvision {name}: {n} images in {secs:.2f} s = {n / secs:.1f} images/s", flush=True)


if __name__ == "__main__":
    main()
