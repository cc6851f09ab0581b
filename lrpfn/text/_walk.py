"""One forward pass of a plan and the walks from starts built from its output.

The explained logits are read off the forward (no second forward), the start relevance
is built from them (`logit_starts`), and the walk goes back through the engine: one walk
for `(batch, ...)` starts, k walks through the engine's several-targets walk for starts
`(k, batch, ...)` (vmapped or in turn, as `lrpfn.engine.several_targets` decides).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..engine import (
    TRACE_LOCK,
    Plan,
    backward,
    check_input,
    forward,
    power_of_two_scale,
    rescaled,
    walk_each_target,
)

__all__ = ["logit_starts", "walk_from_output"]


def logit_starts(logits: Tensor, target: Tensor, contrast: Tensor | None) -> Tensor:
    """The start relevance for the logit of `target` (minus that of `contrast`).

    With logits $z$ of shape `(batch, [k,] vocab)` and token indices $a$ (`target`) and
    $b$ (`contrast`) of shape `(batch, [k])`: $R = z_a e_a - z_b e_b$, whose sum is the
    explained quantity $z_a - z_b$ (for $a = b$ both cancel to 0). Without a contrast
    $R = z_a e_a$ (one-hot times the output, as `lrpfn.lrp` starts).
    """
    index = target[..., None]
    start = torch.zeros_like(logits).scatter(-1, index, logits.gather(-1, index))
    if contrast is not None:
        other = contrast[..., None]
        start = start.scatter_add(-1, other, -logits.gather(-1, other))
    return start


def walk_from_output(
    plan: Plan,
    x: Tensor,
    starts_of: Callable[[Tensor], Tensor],
    keep_all: bool = False,
) -> tuple[Tensor, Any, dict[str, Any]]:
    """Run `plan` at `x`; walk back from `starts_of(output)`.

    Returns the output, the input relevance (with a leading axis k where the starts
    have one) and, with `keep_all`, every node's relevance `{node name: relevance}`.
    """
    check_input(x)
    with torch.no_grad(), TRACE_LOCK.running():
        env, output_node = forward(plan, x)
        output = env[output_node]
        initial = starts_of(output)
        scale = power_of_two_scale(initial, output.ndim)
        start = rescaled(initial, scale.reciprocal())  # exact: scale is a power of two
        if initial.ndim == output.ndim + 1:
            result, recorded = walk_each_target(plan, env, output_node, start, keep_all)
        else:
            result, recorded = backward(plan, env, output_node, start, keep_all, owned=True)
        result = rescaled(result, scale)
        recorded = {name: rescaled(value, scale) for name, value in recorded.items()}
    return output, result, recorded
