#!/usr/bin/env python3
"""Write a torchvision-format checkpoint with random weights, as torchvision's own
`torch.save(model.state_dict())` files are laid out (for tests and scripts/gpu-check.sh).

  make_random_weights.py ARCH CLASSES OUT.pth [--legacy-names] [--legacy-format]

ARCH: resnet50 | resnet101 | densenet161. With torchvision installed the state dict is that of
`torchvision.models.ARCH(num_classes=CLASSES)` (seeded); without it, it is built from the
variable names and shapes recorded from torchvision 0.26 in
tests/fixtures/torchvision-shapes.json (same names, shapes and dtypes; He-normal convolutions,
random batch norms: scale, shift, running mean and variance), so that a GPU machine without torchvision can still make one.
--legacy-names writes DenseNet's 2017 names (`norm.1` for `norm1`, ...), as in
densenet161-8d451a50.pth; --legacy-format writes the pre-1.6 stream format instead of zip.
"""
import json
import math
import os
import re
import sys
from collections import OrderedDict

import torch


def from_torchvision(arch, classes):
    import torchvision.models as tvm
    torch.manual_seed(0)
    m = getattr(tvm, arch)(weights=None, num_classes=classes)
    # Non-trivial batch norms — scale, shift, running mean and variance all random and
    # different — so that an import which swaps or drops any of them fails the tests.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                randomise_bn(mod.weight, mod.bias, mod.running_mean, mod.running_var, g)
    return m.state_dict()


def randomise_bn(weight, bias, mean, var, g):
    weight.copy_(torch.rand(weight.shape, generator=g) * 0.5 + 0.75)
    bias.copy_(torch.randn(bias.shape, generator=g) * 0.1)
    mean.copy_(torch.randn(mean.shape, generator=g) * 0.1)
    var.copy_(torch.rand(var.shape, generator=g) * 0.5 + 0.75)


def from_shapes(arch, classes):
    here = os.path.dirname(os.path.abspath(__file__))
    spec = json.load(open(os.path.join(here, "..", "tests", "fixtures", "torchvision-shapes.json")))[arch]
    g = torch.Generator().manual_seed(0)
    sd = OrderedDict()
    for name, shape, dtype in spec:
        if name.startswith(("fc.", "classifier.")):
            shape = [classes] + shape[1:]
        if dtype == "int64":
            sd[name] = torch.zeros(shape, dtype=torch.int64)
        elif name.endswith("running_var") or (name.endswith(".weight") and len(shape) == 1):
            sd[name] = torch.rand(shape, generator=g) * 0.5 + 0.75
        elif name.endswith(("running_mean", ".bias")):
            sd[name] = torch.randn(shape, generator=g) * 0.1
        else:
            fan = math.prod(shape[1:])
            sd[name] = torch.randn(shape, generator=g) * math.sqrt(2.0 / fan)
    return sd


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) != 3:
        sys.exit(__doc__)
    arch, classes, out = args[0], int(args[1]), args[2]
    try:
        sd = from_torchvision(arch, classes)
    except ImportError:
        sd = from_shapes(arch, classes)
    if "--legacy-names" in sys.argv:
        sd = OrderedDict((re.sub(r"(denselayer\d+\.)(norm|relu|conv)([12])\.", r"\1\2.\3.", k), v) for k, v in sd.items())
    torch.save(sd, out, _use_new_zipfile_serialization="--legacy-format" not in sys.argv)


if __name__ == "__main__":
    main()
