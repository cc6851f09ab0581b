"""Several targets per sample: k backward walks over one shared forward pass.

Every rule is linear in the relevance and the walk reads the forward values only, so the
k explanations of a batch share the forward values `env` and differ in the starting
relevance. The results are stacked on a leading axis of size k.

The k walks run either as one `torch.func.vmap` over the starting relevance, which folds
k into the batch axis of every step and launches each op once for all k, or one after
another. Both give the same values (`tests/test_several_targets.py`). Which is faster
depends on the size of the temporaries, measured with `benchmarks/bench_lrp.py` (batch
8 x 3 x 224 x 224, k = 4, one thread for the CPU-time ratios):

- On the CPU, a vmapped step's temporaries are k times larger. glibc's malloc serves
  blocks above its mmap threshold (which grows to at most 32 MiB) with fresh pages on
  every allocation, and touching them costs more than the arithmetic: one
  `convolution_backward` of a 1x1 convolution (256 -> 64 channels, 56 x 56) at batch 32
  took 3x as long as four at batch 8 (0.38 s against 0.12 s), and as long as the four
  once malloc kept its memory (`MALLOC_MMAP_THRESHOLD_` raised). The vmapped walk cost
  1.43 (resnet50) and 1.31 (densenet121) times the forward plus four single walks in CPU
  time; walks in turn cost 1.10 and 1.05, keeping each temporary at one walk's size.
- Below that threshold a vmapped step pays no such cost and saves k - 1 launches of every
  op. Side by side on resnet50 (four targets, CPU seconds of one thread, median of 3):
  at batch 1 (k x the largest activation = 12 MiB) vmapped 0.63 s, in turn 0.76 s; at
  batch 8 (98 MiB) vmapped 7.31 s, in turn 5.90 s.
- CUDA's caching allocator reuses its blocks, so there the vmapped walk is kept at every
  size (not measured against walks in turn: no GPU was lent to the sessions so far).

So on the CPU the walks are vmapped while k times the largest activation of the forward
stays within 32 MiB, and run in turn above it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, fx

from .plan import Plan
from .walk import backward

__all__ = ["walk_each_target"]

MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's largest dynamic mmap threshold on 64-bit


def walk_each_target(
    plan: Plan, env: dict, output_node: fx.Node, starts: Tensor, keep_all: bool
) -> tuple[Any, dict[str, Any]]:
    """k backward walks from `starts` (shape `(k, *output)`), results stacked on axis 0."""
    if (
        starts.device.type == "cpu"
        and len(starts) * _largest_activation(env) > MMAP_THRESHOLD_BYTES
    ):
        return _walks_in_turn(plan, env, output_node, starts, keep_all)
    return _walks_vmapped(plan, env, output_node, starts, keep_all)


def _largest_activation(env: dict) -> int:
    """The bytes of the largest tensor the forward computed (parameters excluded)."""
    sizes = (
        value.numel() * value.element_size()
        for node, value in env.items()
        if node.op not in ("get_attr", "placeholder") and isinstance(value, Tensor)
    )
    return max(sizes, default=0)


def _walks_in_turn(
    plan: Plan, env: dict, output_node: fx.Node, starts: Tensor, keep_all: bool
) -> tuple[Any, dict[str, Any]]:
    """The k walks one after another, their results stacked."""
    walks = [backward(plan, env, output_node, start, keep_all) for start in starts]
    result = _stacked([walk_result for walk_result, _ in walks])
    names = walks[0][1]
    recorded = {name: _stacked([walk[1][name] for walk in walks]) for name in names}
    return result, recorded


def _walks_vmapped(
    plan: Plan, env: dict, output_node: fx.Node, starts: Tensor, keep_all: bool
) -> tuple[Any, dict[str, Any]]:
    """The k walks as one walk vmapped over the starting relevance."""

    def walk(start: Tensor):
        return backward(plan, env, output_node, start, keep_all)

    return torch.func.vmap(walk)(starts)


def _stacked(values: list[Any]) -> Any:
    """Stack k walks' values on a new leading axis (tuples elementwise, None stays)."""
    first = values[0]
    if isinstance(first, (tuple, list)):
        return type(first)(_stacked(list(items)) for items in zip(*values, strict=True))
    if first is None:
        return None
    return torch.stack(values)
