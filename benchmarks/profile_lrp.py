"""Where an lrpfn call spends its time: torch.profiler per op kind, and Python's profiler.

    python benchmarks/profile_lrp.py --models vgg16 resnet50 --batch 8
    python benchmarks/profile_lrp.py --models resnet50 --batch 1 --python

For each model, one call of the input gradient and of lrpfn (all-epsilon and
epsilon_gamma_box, on a prepared plan) is profiled after a warm-up call; the table lists
the aten ops by self CPU time, side by side. `--python` adds the top Python functions of
an lrpfn epsilon call by own time (cProfile), which shows the per-node interpreter cost
at batch 1. Random weights (seed 0); printed only.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
from collections import defaultdict
from contextlib import ExitStack

from bench_lrp import Setting, _gradient, _lrpfn, build
from common import configure_threads
from torch.profiler import ProfilerActivity, profile

from lrpfn import composites, rules

METHODS = {
    "gradient": _gradient,
    "epsilon": _lrpfn(lambda: rules.Epsilon(1e-6)),
    "epsilon_gamma_box": _lrpfn(lambda: composites.epsilon_gamma_box(low=-3.0, high=3.0)),
}


def op_seconds(method) -> dict[str, float]:
    """Self CPU seconds per aten op kind of one call (after a warm-up call)."""
    method()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        method()
    seconds: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        seconds[event.key] += event.self_cpu_time_total / 1e6
    return dict(seconds)


def python_profile(method, top: int) -> str:
    method()
    profiler = cProfile.Profile()
    profiler.enable()
    method()
    profiler.disable()
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(top)
    return stream.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["vgg16", "resnet50"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=14, help="op kinds (functions) listed")
    parser.add_argument("--python", action="store_true", help="also cProfile lrpfn epsilon")
    args = parser.parse_args()
    configure_threads(args.threads)
    for name in args.models:
        with ExitStack() as stack:
            case = build(Setting(name, args.batch, args.size, "cpu", args.threads), stack)
            per_method = {label: op_seconds(make(case)) for label, make in METHODS.items()}
            totals = {label: sum(ops.values()) for label, ops in per_method.items()}
            kinds = sorted(
                {kind for ops in per_method.values() for kind in ops},
                key=lambda kind: -max(ops.get(kind, 0.0) for ops in per_method.values()),
            )[: args.top]
            print(f"\n## {name}, batch {args.batch} x 3 x {args.size} x {args.size}\n")
            print("| op (self CPU s) | " + " | ".join(per_method) + " |")
            print("|---" * (len(per_method) + 1) + "|")
            for kind in kinds:
                cells = " | ".join(f"{ops.get(kind, 0.0):.3f}" for ops in per_method.values())
                print(f"| {kind} | {cells} |")
            print("| **total** | " + " | ".join(f"{t:.3f}" for t in totals.values()) + " |")
            if args.python:
                print(python_profile(METHODS["epsilon"](case), args.top))


if __name__ == "__main__":
    main()
