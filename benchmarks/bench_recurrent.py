"""Speed and peak memory of LRP on an LSTM (`composites.lstm_lrp()`) against the input gradient.

The model: a 2-layer `nn.LSTM` (64 input features, hidden 256, batch_first) and a linear
head on the last step, random weights, batch 8. Methods: the input gradient (forward +
backward + product with the input; PyTorch runs the LSTM as one fused op each way) and
lrpfn's `lstm_lrp()` on a plan prepared once (the LSTM unrolled into per-step ops). The
main row has 128 steps; the length table repeats it at 64, 256 and 1024 steps, where the
time should grow linearly with the length.

Times are medians of interleaved repetitions (`common.interleaved_medians`); ratios are to
the input gradient measured in the same run. Peak memory is measured in a fresh process per
method (`common.peak_memory_mib`, on a second call after a warm-up call).

    python benchmarks/bench_recurrent.py                 # 128 steps, then 64 / 256 / 1024
    python benchmarks/bench_recurrent.py --quick         # small sizes, seconds
    python benchmarks/bench_recurrent.py --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

import lrpfn
from lrpfn import composites

FULL = {"features": 64, "hidden": 256, "layers": 2, "batch": 8, "steps": 128}
QUICK = {"features": 8, "hidden": 16, "layers": 2, "batch": 2, "steps": 16}
LENGTHS = {"full": (64, 256, 1024), "quick": (8, 32)}


class Classifier(nn.Module):
    def __init__(self, features: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.rnn = nn.LSTM(features, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


def _model(config: dict, steps: int, device: str):
    torch.manual_seed(0)
    model = Classifier(config["features"], config["hidden"], config["layers"]).eval().to(device)
    x = torch.randn(config["batch"], steps, config["features"], device=device)
    return model, x


def setup(method: str, config: dict, steps: int, device: str):
    """The call to measure (a module-level function: `peak_memory_mib` pickles it)."""
    model, x = _model(config, steps, device)
    with torch.no_grad():
        target = model(x).argmax(-1)
    if method == "lrpfn lstm_lrp":
        plan = lrpfn.prepare(model, composites.lstm_lrp(), example_input=x)
        return lambda: lrpfn.lrp(plan, x, target=target)

    def gradient():
        leaf = x.detach().requires_grad_(True)
        output = model(leaf)
        output.gather(1, target[:, None]).sum().backward()
        return leaf * leaf.grad

    return gradient


METHODS = ("gradient", "lrpfn lstm_lrp")


def measure(config: dict, steps: int, device: str, repeats: int, memory: bool) -> list[list[Any]]:
    calls = {method: setup(method, config, steps, device) for method in METHODS}
    times = common.interleaved_medians(calls, repeats=repeats, warmup=1, device=device)
    peaks = {}
    if memory:
        peaks = {
            method: common.peak_memory_mib(setup, method, config, steps, device, device=device,
                                           warm=True)
            for method in METHODS
        }  # fmt: skip
    rows = []
    for method in METHODS:
        peak = peaks.get(method)
        rows.append(
            [
                steps,
                method,
                f"{times[method]:.3f}",
                f"{times[method] / times['gradient']:.2f}",
                "-" if peak is None else f"{peak:.0f}",
                "-" if peak is None else f"{peak / peaks['gradient']:.2f}",
            ]
        )
    return rows


def prepare_seconds(config: dict, steps: int, device: str) -> float:
    """Seconds of `lrpfn.prepare` (capture, canonicalize, unroll, check): paid once per length."""
    model, x = _model(config, steps, device)
    start = time.perf_counter()
    lrpfn.prepare(model, composites.lstm_lrp(), example_input=x)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    args = parser.parse_args(argv)
    common.configure_threads(args.threads)
    config = QUICK if args.quick else FULL
    header = ["steps", "method", "seconds", "x gradient", "peak MiB", "x gradient"]
    main_rows = measure(config, config["steps"], args.device, args.repeats, not args.no_memory)
    length_rows, prepared = [], []
    for steps in LENGTHS["quick" if args.quick else "full"]:
        length_rows += measure(config, steps, args.device, args.repeats, not args.no_memory)
        prepared.append([steps, f"{prepare_seconds(config, steps, args.device):.2f}"])
    print(common.machine_description(args.device, args.threads))
    print(f"revision {common.revision()}, {common.today()}; sizes {config}\n")
    print(common.markdown_table(header, main_rows))
    print("\nBy sequence length:\n")
    print(common.markdown_table(header, length_rows))
    print("\nlrpfn.prepare (once per length):\n")
    print(common.markdown_table(["steps", "seconds"], prepared))


if __name__ == "__main__":
    main()
