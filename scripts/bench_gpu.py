#!/usr/bin/env python3
"""PyTorch-eager baseline for scripts/gpu-check.sh: ResNet50 fine-tuning steps on one fixed
synthetic batch, as `repro-torch bench-train` runs them (same model, batch, image size, SGD
with momentum 0.9 and weight decay 5e-4, cross-entropy on a 1000-class linear head, one device
sync per step to read the loss and check it is finite).

  bench_gpu.py [--batch 64] [--size 224] [--steps 30] [--warmup 5] [--amp]

--amp: the forward pass under torch.autocast("cuda", float16), no gradient scaler (neither
side has one; a step with a non-finite loss is skipped on both). torchvision's resnet50 is used
when installed, else the same architecture written out below (torchvision's layout: bottleneck
blocks striding on the 3x3 convolution). Prints one JSON object with images_per_s.
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Bottleneck(nn.Module):
    def __init__(self, c_in, width, stride):
        super().__init__()
        c_out = width * 4
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, c = [], 64
        for i, (n, w) in enumerate(zip([3, 4, 6, 3], [64, 128, 256, 512])):
            blocks = []
            for k in range(n):
                blocks.append(Bottleneck(c, w, 2 if k == 0 and i > 0 else 1))
                c = w * 4
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(2048, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--amp", action="store_true")
    a = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    try:
        import torchvision.models as tvm
        model, source = tvm.resnet50(weights=None, num_classes=a.classes), "torchvision"
    except ImportError:
        model, source = ResNet50(a.classes), "scripts/bench_gpu.py"
    model = model.to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(a.batch, 3, a.size, a.size, device=dev)
    y = torch.randint(0, a.classes, (a.batch,), device=dev)
    amp = a.amp and dev.type == "cuda"

    def step():
        opt.zero_grad(set_to_none=False)
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        loss.backward()
        ok = torch.isfinite(loss)
        finite = bool(ok.item())
        if finite:
            opt.step()
        return finite

    for _ in range(a.warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    skipped = sum(0 if step() else 1 for _ in range(a.steps))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    print(json.dumps({
        "impl": "pytorch-eager", "model_source": source, "batch": a.batch, "size": a.size,
        "steps": a.steps, "amp": amp, "device": str(dev), "torch": torch.__version__,
        "seconds": secs, "skipped_steps": skipped, "images_per_s": a.steps * a.batch / secs,
    }))


if __name__ == "__main__":
    main()
