"""Peak tensor memory of one call, from the allocator's events (torch.profiler).

`bench_lrp.py` measures peak resident memory (RSS) in a fresh process, which also counts
what the C allocator keeps or returns and what a process loads once (the first
`torch.func.vjp` imports some 900 modules); its figures move by 10-20 % with the protocol
(first or second call). This script counts only tensor allocations: it replays the
`[memory]` events of one profiled call (after a warm-up call) and reports the highest sum
of live bytes above the start, for the input gradient (forward and input-VJP on a frozen
copy) and for lrpfn on a prepared plan. It is deterministic and does not depend on the
machine's load.

    python benchmarks/memory_allocator.py --models vgg16 resnet50 --batches 8 1
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

import lrpfn
from lrpfn import composites, rules

MODELS = ("vgg16", "resnet50", "densenet121", "mobilenet_v2", "efficientnet_b0", "convnext_tiny")
RULES: dict[str, Callable[[], object]] = {
    "epsilon": lambda: rules.Epsilon(1e-6),
    "epsilon_gamma_box": lambda: composites.epsilon_gamma_box(low=-3.0, high=3.0),
    "epsilon_alpha2_beta1": composites.epsilon_alpha2_beta1,
}


def peak_mib(call: Callable[[], object]) -> float:
    """The highest sum of live tensor bytes (MiB) above the start during one call."""
    call()  # warm-up: one-time allocations are not the call's
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        result = call()
        del result
    events = [e for e in profiler.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = highest = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()  # negative for a release
        highest = max(highest, live)
    return highest / 2**20


def calls(name: str, batch: int, rule_names: list[str]) -> dict[str, Callable[[], object]]:
    """The gradient and one lrpfn call per rule set on the same seeded model and input."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(batch, 3, 224, 224)
    with torch.no_grad():
        target = model(x).argmax(1)
    frozen = copy.deepcopy(model).requires_grad_(False)
    seed = torch.zeros(batch, 1000).scatter_(1, target[:, None], 1.0)

    def gradient():
        leaf = x.detach().requires_grad_(True)
        return torch.autograd.grad(frozen(leaf), leaf, seed)[0] * x

    methods: dict[str, Callable[[], object]] = {"gradient": gradient}
    for rule_name in rule_names:
        plan = lrpfn.prepare(model, RULES[rule_name]())
        methods[f"lrpfn {rule_name}"] = lambda plan=plan: lrpfn.lrp(plan, x, target=target)
    return methods


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=[8, 1])
    parser.add_argument("--rules", nargs="+", choices=list(RULES), default=["epsilon"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    common.configure_threads(args.threads)
    print(common.machine_description("cpu", args.threads))
    print(f"revision {common.revision()}, {common.today()}\n")
    rows = []
    for batch in args.batches:
        for name in args.models:
            peaks = {
                method: peak_mib(call) for method, call in calls(name, batch, args.rules).items()
            }
            for method, mib in peaks.items():
                rows.append([name, batch, method, f"{mib:.0f}", f"{mib / peaks['gradient']:.2f}"])
            print(f"{name} batch {batch} done", file=sys.stderr, flush=True)
    header = ["model", "batch", "method", "peak tensor MiB", "x gradient"]
    print(common.markdown_table(header, rows))


if __name__ == "__main__":
    main()
