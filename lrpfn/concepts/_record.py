"""One forward pass and one reverse walk that record several nodes' activation and relevance.

The atlas needs, per batch, the value (activation) and the relevance of every listed
layer. `lrpfn.relevances` would walk down to the input and keep every node's relevance;
this walk keeps only the listed nodes' and stops below the lowest of them: a contribution
to an input that is neither a listed node nor downstream of one can never reach a listed
node, so it is not computed. The relevance recorded at a node is what arrives there from
all of its users (zennit-crp's gradient hook on the layer's output sees the same).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, fx

from ..engine import (
    TRACE_LOCK,
    Handler,
    Plan,
    Step,
    backward,
    check_input,
    forward,
    initial_relevance,
    power_of_two_scale,
    rescaled,
)
from ..errors import InvalidTargetError
from ._nodes import InvalidConditionError, downstream

__all__ = ["Recorded", "fitted", "record"]


@dataclass(frozen=True)
class Recorded:
    """One batch's forward and walk, at the listed nodes.

    Attributes:
        logits: `(batch, classes)` the model's output.
        target: `(batch,)` the explained class of each sample.
        activation: `{node name: value}` each listed node's output.
        relevance: `{node name: relevance}` the relevance arriving at each listed node.
    """

    logits: Tensor
    target: Tensor
    activation: dict[str, Tensor]
    relevance: dict[str, Tensor]


def fitted(plan: Plan, x: Tensor) -> Tensor:
    """`x` padded to the batch a `torch.export` plan was captured at (repeating its last
    sample; the caller keeps the first `len(x)` rows of every result)."""
    if plan.input_shape is None or tuple(x.shape) == plan.input_shape:
        return x
    if tuple(x.shape[1:]) != plan.input_shape[1:] or len(x) > plan.input_shape[0]:
        raise InvalidConditionError(
            f"this Plan was captured by torch.export at input shape {plan.input_shape}; the "
            f"batch has shape {tuple(x.shape)}. Fix: prepare the plan with example_input of "
            "the atlas's batch size, or pass the model instead of a Plan."
        )
    padding = x[-1:].expand(plan.input_shape[0] - len(x), *x.shape[1:])
    return torch.cat([x, padding])


def record(plan: Plan, x: Tensor, nodes: Sequence[fx.Node], target: Any) -> Recorded:
    """Run `plan` on `x`, explain `target` (None, an int or `(batch,)`), and record the
    activation and relevance of `nodes`."""
    check_input(x)
    rows = len(x)
    x = fitted(plan, x)
    if isinstance(target, Tensor) and target.ndim == 1 and len(target) < len(x):
        target = torch.cat([target, target[-1:].expand(len(x) - len(target))])
    listed = frozenset(nodes)
    needed = listed.union(*(downstream(plan, node) for node in nodes))
    recorded: dict[fx.Node, Tensor] = {}
    handlers = dict(plan.handlers)
    for node in needed:
        handlers[node] = _recording(
            plan.handlers[node], node in listed, plan.data_inputs[node], needed, recorded
        )
    uses = dict(plan.backward_uses)
    for node in listed:  # the forward keeps the listed values (read after the walk)
        uses[node] = uses.get(node, 0) + 1
    walked = replace(
        plan,
        handlers=MappingProxyType(handlers),
        backward_uses=MappingProxyType(uses),
        recomputed=frozenset(plan.recomputed - listed),
    )
    with torch.no_grad(), TRACE_LOCK.running():
        env, output_node = forward(walked, x)
        activation = {node.name: env[node] for node in nodes}
        output = env[output_node]
        if output.ndim != 2:
            raise InvalidTargetError(
                f"the atlas explains a model output of shape (batch, classes), got "
                f"{tuple(output.shape)}."
            )
        initial = initial_relevance(output, target, None)
        explained = output.argmax(dim=1) if target is None else _as_index(target, output)
        scale = power_of_two_scale(initial, output.ndim)
        start = rescaled(initial, scale.reciprocal())
        backward(walked, env, output_node, start, False, owned=True)
    missing = [node.name for node in nodes if node not in recorded]
    if missing:
        raise InvalidConditionError(
            f"no relevance reaches node(s) {missing} from the explained output. Fix: list "
            "layers that lie between the input and the output."
        )
    relevance = {node.name: rescaled(recorded[node], scale)[:rows] for node in nodes}
    activation = {name: value[:rows] for name, value in activation.items()}
    return Recorded(output[:rows], explained[:rows], activation, relevance)


def _as_index(target: Any, output: Tensor) -> Tensor:
    index = torch.as_tensor(target, device=output.device).long()
    return index.expand(output.shape[0]) if index.ndim == 0 else index


def _recording(
    handler: Handler,
    keep: bool,
    inputs: tuple[fx.Node, ...],
    needed: frozenset,
    recorded: dict[fx.Node, Tensor],
) -> Handler:
    """`handler`, recording the relevance arriving at its node (if `keep`) and sending
    none to inputs from which no listed node can be reached."""
    inner = handler.backward
    passes = tuple(item in needed for item in inputs)

    def step(step: Step) -> tuple:
        if keep:
            if not isinstance(step.relevance, Tensor):
                raise InvalidConditionError(
                    f"node {step.node.name!r} carries relevance of type "
                    f"{type(step.relevance).__name__}, not one tensor: list a node with one "
                    "tensor output."
                )
            recorded[step.node] = step.relevance
        if not any(passes):
            return (None,) * len(inputs)
        contributions = inner(step)
        return tuple(
            contribution if kept else None
            for contribution, kept in zip(contributions, passes, strict=True)
        )

    return replace(handler, backward=step)
