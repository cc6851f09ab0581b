"""Region perturbation: lrpfn.evaluate against Quantus 0.6 on the same work.

    python benchmarks/bench_evaluate.py                 # resnet18, 16 images, 20 steps
    python benchmarks/bench_evaluate.py --device cuda
    python benchmarks/bench_evaluate.py --quick         # 4 images, 5 steps: seconds

The model is torchvision's resnet18 with random weights (no download), in eval mode,
float32; the inputs are 16 seeded normal images of 3 x 224 x 224 and their relevance is
lrpfn's `epsilon_plus` (computed once, outside the timing). Both libraries perturb 16 x 16
patches most relevant first, 20 steps, replacing them by the constant 0, and read the
logit of each image's predicted class (Quantus: `RegionPerturbation(patch_size=16,
regions_evaluation=20, perturb_baseline=0.0, abs=False, normalise=False)`, `softmax=False`,
its batch size the 16 images, so one forward pass per step; lrpfn: `region_perturbation`
with `batch_size` images per forward pass, several steps per pass, on the device).

Each method is called once per repetition in rotating order and the median is reported
(`common.interleaved_medians`); "ratio" = Quantus time / lrpfn time. The largest absolute
difference of the logit drops f(x^0) - f(x^k) of the two is printed too.
"""

from __future__ import annotations

import argparse
import shlex
import sys

import numpy as np
import torch
from common import configure_threads, interleaved_medians, machine_description, markdown_table

import lrpfn
from lrpfn import composites, evaluate

PATCH = 16


def measure(model, x, relevance, steps: int, batch_size: int, repeats: int, device: str):
    """Median seconds of lrpfn and Quantus on the same work, and their largest difference."""
    import quantus

    target = model(x).argmax(1)
    metric = quantus.RegionPerturbation(
        patch_size=PATCH, regions_evaluation=steps, order="morf", perturb_baseline=0.0,
        abs=False, normalise=False, disable_warnings=True,
    )  # fmt: skip
    x_numpy, target_numpy, relevance_numpy = (
        x.cpu().numpy(), target.cpu().numpy(), relevance.cpu().numpy()
    )  # fmt: skip

    def ours():
        return evaluate.region_perturbation(
            model, x, relevance, target, patch=PATCH, steps=steps, order="morf",
            perturbation=0.0, batch_size=batch_size,
        )  # fmt: skip

    def theirs():
        return metric(
            model=model, x_batch=x_numpy, y_batch=target_numpy, a_batch=relevance_numpy,
            softmax=False, channel_first=True, device=device, batch_size=len(x),
        )  # fmt: skip

    result = ours()
    drops = (result.curves[:, :1] - result.curves[:, 1:]).cpu().numpy()
    difference = float(np.abs(drops - np.array(theirs())).max())
    # the calls above were the warm-up
    seconds = interleaved_medians({"lrpfn": ours, "Quantus": theirs}, repeats, 0, device)
    return seconds, difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64, help="lrpfn's images per pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="4 images, 5 steps, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.images, args.steps, args.repeats = 4, 5, 1
    configure_threads(args.threads)
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval().to(args.device)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.images, 3, 224, 224, generator=generator).to(args.device)
    relevance = lrpfn.lrp(model, x, composites.epsilon_plus())
    with torch.no_grad():
        seconds, difference = measure(
            model, x, relevance, args.steps, args.batch_size, args.repeats, args.device
        )
    print(f"python {shlex.join(sys.argv)}")
    print(machine_description(args.device, args.threads))
    header = ["work", "lrpfn (s)", "Quantus (s)", "ratio Quantus / lrpfn", "max |difference|"]
    work = f"resnet18, {args.images} images, {args.steps} steps of {PATCH}x{PATCH} patches"
    row = [
        work, f"{seconds['lrpfn']:.3f}", f"{seconds['Quantus']:.3f}",
        f"{seconds['Quantus'] / seconds['lrpfn']:.2f}", f"{difference:.1e}",
    ]  # fmt: skip
    print(markdown_table(header, [row]))


if __name__ == "__main__":
    main()
