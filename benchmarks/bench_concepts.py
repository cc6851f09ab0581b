"""Cost of k concept-conditional heatmaps in one call (`lrpfn.concepts.conditional`).

    python benchmarks/bench_concepts.py                 # resnet18, batch 8 at 224, k = 8
    python benchmarks/bench_concepts.py --quick         # batch 2 at 112
    python benchmarks/bench_concepts.py --device cuda

resnet18 (torchvision, random weights, seed 0, float32), EpsilonPlusFlat, the explained
class each sample's argmax. The k concepts are k channels of one node (`--node`, default
"layer4", the last stage's output), the same for every sample. Methods, each called once
per repetition in rotating order (`common.interleaved_medians`), median seconds:

- `lrpfn conditional, k concepts`: one call of `concepts.conditional` (the forward shared,
  the k walks vmapped; parallel paths excluded, the default);
- `reference: 1 forward + k walks`: lrpfn's forward pass once, then k plain backward walks
  (`lrpfn.engine.backward` on the same Plan) one after the other: the budget the issue
  sets (goal: conditional <= 1.1 x reference);
- `zennit-crp loop over k concepts`: zennit-crp 0.6's `CondAttribution` called once per
  concept with the batch (each call one forward and one backward with mask hooks;
  `exclude_parallel=True`), with zennit's EpsilonPlusFlat and ResNetCanonizer;
- `lrpfn lrp, 1 walk`: `lrpfn.lrp` (one forward + one walk), for scale.

Before timing, the script checks that lrpfn and zennit-crp give the same heatmaps
(relative error of the channel-summed heatmaps printed).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable

import torch
import torchvision
from common import (
    configure_threads,
    interleaved_medians,
    machine_description,
    markdown_table,
    today,
)

import lrpfn
from lrpfn import composites, concepts
from lrpfn.engine import (
    TRACE_LOCK,
    backward,
    forward,
    initial_relevance,
    power_of_two_scale,
    rescaled,
)

CHANNELS = (3, 17, 64, 100, 200, 301, 402, 511)


def build(device: str) -> torch.nn.Module:
    """resnet18 with random weights; BatchNorm eps = 0, since zennit's MergeBatchNorm keeps
    eps after merging (see tests/test_zennit_oracle.py), so both libraries fold alike."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps = 0.0
    return model.to(device)


def reference(plan: lrpfn.Plan, x: torch.Tensor, k: int) -> list[torch.Tensor]:
    """One forward pass, then k backward walks from each sample's argmax logit (each walk
    the one `lrpfn.lrp` makes, from the same power-of-two scaled start)."""
    with torch.no_grad(), TRACE_LOCK.running():
        env, output_node = forward(plan, x)
        output = env[output_node]
        initial = initial_relevance(output, None, None)
        scale = power_of_two_scale(initial, output.ndim)
        start = rescaled(initial, scale.reciprocal())
        walks = [backward(plan, env, output_node, start, False)[0] for _ in range(k)]
        return [rescaled(walk, scale) for walk in walks]


def crp_method(model: torch.nn.Module, x: torch.Tensor, node: str, k: int) -> Callable[[], list]:
    import zennit.composites as zc
    from crp.attribution import CondAttribution
    from zennit.torchvision import ResNetCanonizer

    frozen = build(str(x.device))
    frozen.load_state_dict(model.state_dict())
    attribution = CondAttribution(frozen)  # freezes the copy's parameters
    composite = zc.EpsilonPlusFlat(canonizers=[ResNetCanonizer()])
    with torch.no_grad():
        targets = model(x).argmax(1).tolist()

    def loop() -> list[torch.Tensor]:
        heatmaps = []
        for channel in CHANNELS[:k]:
            data = x.clone().requires_grad_(True)
            conditions = [{node: [channel], "y": [target]} for target in targets]
            heatmaps.append(attribution(data, conditions, composite).heatmap)
        return heatmaps

    return loop


def measure(device: str, batch: int, size: int, k: int, node: str, repeats: int) -> dict:
    model = build(device)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    plan = lrpfn.prepare(model, composites.epsilon_plus_flat())
    conditions = [{node: [channel]} for channel in CHANNELS[:k]]
    ours = concepts.conditional(plan, x, None, conditions)
    crp = crp_method(model, x, node, k)
    theirs = torch.stack(crp())
    error = float((ours.sum(2) - theirs).norm() / theirs.norm())
    methods = {
        f"lrpfn conditional, {k} concepts": lambda: concepts.conditional(plan, x, None, conditions),
        f"reference: 1 forward + {k} walks": lambda: reference(plan, x, k),
        f"zennit-crp loop over {k} concepts": crp,
        "lrpfn lrp, 1 walk": lambda: lrpfn.lrp(plan, x),
    }
    seconds = interleaved_medians(methods, repeats=repeats, warmup=1, device=device)
    return {"seconds": seconds, "error": error}


def report(results: dict, command: str, device: str, threads: int, setting: str) -> str:
    seconds = results["seconds"]
    names = list(seconds)
    ours, budget, crp = (seconds[name] for name in names[:3])
    rows = [[name, f"{value:.3f}", f"{value / budget:.2f}"] for name, value in seconds.items()]
    verdict = "met" if ours <= 1.1 * budget else "NOT met"
    return "\n".join(
        [
            f"# lrpfn.concepts.conditional ({today()})",
            "",
            f"`{command}`",
            "",
            machine_description(device, threads),
            "",
            setting,
            "",
            markdown_table(["method", "median s", "x reference"], rows),
            "",
            f"- conditional / (1 forward + k walks) = {ours / budget:.2f} (goal <= 1.1: {verdict})",
            f"- zennit-crp loop / conditional = {crp / ours:.2f}",
            f"- agreement with zennit-crp (channel-summed heatmaps, float32): relative error "
            f"{results['error']:.1e}",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 2 at 112")
    parser.add_argument("--k", type=int, default=8, help="concepts (at most 8)")
    parser.add_argument("--node", default="layer4", help="the conditioned node or module")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    parser.add_argument("--repeats", type=int, help="timed repetitions (default 5, quick 3)")
    arguments = parser.parse_args(argv)
    configure_threads(arguments.threads)
    batch, size = (2, 112) if arguments.quick else (8, 224)
    repeats = arguments.repeats or (3 if arguments.quick else 5)
    k = min(arguments.k, len(CHANNELS))
    results = measure(arguments.device, batch, size, k, arguments.node, repeats)
    command = shlex.join(["python", "benchmarks/bench_concepts.py", *(argv or sys.argv[1:])])
    setting = (
        f"resnet18 (random weights), batch {batch} x 3 x {size} x {size}, float32, "
        f"EpsilonPlusFlat; {k} concepts = channels {list(CHANNELS[:k])} of {arguments.node!r}; "
        f"median of {repeats} interleaved repetitions after one warm-up round."
    )
    print(report(results, command, arguments.device, arguments.threads, setting))


if __name__ == "__main__":
    main()
