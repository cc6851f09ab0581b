"""Is the float32 difference between the compiled and the plain plan rounding? Both to float64.

    python benchmarks/compile_precision.py resnet18 64 inductor

Prints, relative to the largest float64 relevance: |compiled32 - plain32|,
|plain32 - plain64| and |compiled32 - plain64| (epsilon 1e-6, batch 2, random weights,
seed 0, the float32 argmax as target in all three). When the compiled float32 relevance
is as far from float64 as the plain float32 one, their difference is float32 rounding.
"""

from __future__ import annotations

import sys

import torch
import torchvision

import lrpfn
from lrpfn import rules


def main(name: str, size: int, backend: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        target = model(x).argmax(1)
    plain = lrpfn.prepare(model, rules.Epsilon(1e-6), example_input=x)
    compiled = lrpfn.prepare(model, rules.Epsilon(1e-6), example_input=x, compile=backend)
    compiled32 = lrpfn.lrp(compiled, x, target=target)
    plain32 = lrpfn.lrp(plain, x, target=target)
    plain64 = lrpfn.lrp(model.double(), x.double(), rules.Epsilon(1e-6), target=target)
    largest = plain64.abs().max()

    def distance(a, b):
        return float((a.double() - b.double()).abs().max() / largest)

    print(
        f"{name} {size}x{size} {backend}: |c32 - p32| {distance(compiled32, plain32):.2e}, "
        f"|p32 - p64| {distance(plain32, plain64):.2e}, "
        f"|c32 - p64| {distance(compiled32, plain64):.2e} (of max |p64|)"
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
