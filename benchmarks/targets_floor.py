"""A k-target call against its floor in one function: one forward, then k single walks.

`bench_lrp.py` composes the floor from two separately timed rows (the forward, and one
walk times k); this script times the 4-target call `lrpfn.lrp(plan, x, target=(batch, 4))`
against one function that runs the forward once and the four single-target walks over it,
interleaved (median of 3), and lists the self CPU seconds per aten op of each (after a
warm-up call): resnet50, batch 8 x 3 x 224 x 224, epsilon, 2 threads.

    python benchmarks/targets_floor.py
"""

import time

import torch
import torchvision
from profile_lrp import op_seconds

import lrpfn
from lrpfn import rules
from lrpfn.engine import backward, forward

TARGETS = 4


def main() -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    x = torch.randn(8, 3, 224, 224)
    plan = lrpfn.prepare(model, rules.Epsilon(1e-6))
    with torch.no_grad():
        targets = model(x).topk(TARGETS, dim=1).indices

    def several_targets():
        return lrpfn.lrp(plan, x, target=targets)

    def floor():
        with torch.no_grad():
            env, output_node = forward(plan, x)
            output = env[output_node]
            for k in range(TARGETS):
                start = torch.zeros_like(output).scatter_(1, targets[:, k : k + 1], 1.0) * output
                backward(plan, env, output_node, start, False)

    calls = {"k-target call": several_targets, "forward + k walks": floor}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(3):
        for name, call in calls.items():
            began = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - began)
    print({name: round(sorted(values)[1], 3) for name, values in times.items()})
    profiles = {name: op_seconds(call) for name, call in calls.items()}
    call_ops, floor_ops = profiles.values()
    keys = sorted(
        set(call_ops) | set(floor_ops), key=lambda k: -max(call_ops.get(k, 0), floor_ops.get(k, 0))
    )
    print("| op (self CPU s) | k-target call | forward + k walks |\n|---|---|---|")
    for key in keys[:12]:
        print(f"| {key} | {call_ops.get(key, 0):.3f} | {floor_ops.get(key, 0):.3f} |")
    print(f"| total | {sum(call_ops.values()):.3f} | {sum(floor_ops.values()):.3f} |")


if __name__ == "__main__":
    main()
