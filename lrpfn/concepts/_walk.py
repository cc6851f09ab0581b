"""The conditioned reverse walk: masks at conditioned nodes, gates on bypassing edges.

A condition keeps, at each node it names, the relevance of the listed channels (axis 1)
and zeroes the rest. With `exclude_parallel`, relevance must also *pass through* every
named node: an edge from a node $v$ downstream of a named node $n$ to an input $u$ that is
neither $n$ nor downstream of $n$ is a path that bypasses $n$ (a residual skip around
it), and its contribution is dropped. Every rule is linear in the relevance, so this is
the sum over the paths through the named nodes only, which is what zennit-crp computes
by starting a second backward pass at the layer's output.

The walk itself is `engine.walk.backward` over a `Plan` whose handlers are wrapped at
the affected nodes; the k conditions are one `torch.func.vmap` over the masks and gates,
so the forward pass is shared and the part of the walk above the first conditioned node
(where nothing depends on the condition) runs once, unbatched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, fx

from ..engine import Handler, Plan, Step, backward
from ._nodes import InvalidConditionError, downstream
from ._scores import Heads, Neurons

__all__ = ["Conditions", "conditioned_walk", "parse_conditions"]

DROP = "drop"  # a gate that is 0 for every condition: the contribution is not computed


@dataclass(frozen=True)
class Conditions:
    """k conditions as tensors a vmapped walk can take, plus what is static about them.

    Attributes:
        nodes: the conditioned nodes.
        index: per node name, the kept channels `(k, batch or 1, m)`, padded with -1.
        free: per node name, `(k,)`: 1 where the condition does not name the node.
        largest: per node name, the largest channel index any condition lists.
        gates: per `(node, input position)` whose contribution bypasses a conditioned node:
            `DROP`, or a `(k,)` tensor of 0 (drop) and 1 (keep) per condition.
        axes: per node name conditioned on transformer concepts, its `Neurons` or `Heads`
            (the concepts on the last axis); absent: the channels of axis 1.
    """

    nodes: tuple[fx.Node, ...]
    index: Mapping[str, Tensor]
    free: Mapping[str, Tensor]
    largest: Mapping[str, int]
    gates: Mapping[tuple[fx.Node, int], Any]
    axes: Mapping[str, Neurons | Heads] = field(default_factory=dict)


def parse_conditions(
    plan: Plan,
    named: Sequence[Mapping[fx.Node, Tensor]],
    exclude_parallel: bool,
    stop: fx.Node | None,
    device: torch.device,
    axes: Mapping[str, Neurons | Heads] | None = None,
) -> Conditions:
    """Pad each node's channel lists into one tensor and work out the edge gates.

    `named` holds one `{node: channel index (batch or 1, m)}` per condition. `stop` (for
    `importance`) is a node where the walk ends: edges bypassing it are dropped for all.
    """
    count = len(named)
    nodes = tuple(dict.fromkeys(node for condition in named for node in condition))
    index, free, largest = {}, {}, {}
    for node in nodes:
        lists = [condition.get(node) for condition in named]
        rows = max((item.shape[0] for item in lists if item is not None), default=1)
        width = max((item.shape[1] for item in lists if item is not None), default=1)
        padded = torch.full((count, rows, max(width, 1)), -1, dtype=torch.long, device=device)
        for position, item in enumerate(lists):
            if item is not None:
                padded[position, :, : item.shape[1]] = item.to(device)
        index[node.name] = padded
        free[node.name] = torch.tensor([float(item is None) for item in lists], device=device)
        largest[node.name] = max(
            (int(item.max()) for item in lists if item is not None and item.numel()), default=-1
        )
    active = [
        {node: exclude_parallel and node in condition for node in nodes} for condition in named
    ]
    if stop is not None:
        for row in active:
            row[stop] = True
    bypassed: dict[tuple[fx.Node, int], list[fx.Node]] = {}
    for node in (*nodes, stop) if stop is not None else nodes:
        below = downstream(plan, node)
        for user in below:
            for position, item in enumerate(plan.data_inputs[user]):
                if item is not node and item not in below:
                    bypassed.setdefault((user, position), []).append(node)
    gates = {}
    for edge, around in bypassed.items():
        keep = [float(not any(row[node] for node in around)) for row in active]
        if not any(keep):
            gates[edge] = DROP
        elif not all(keep):
            gates[edge] = torch.tensor(keep, device=device)
    return Conditions(nodes, index, free, largest, gates, MappingProxyType(dict(axes or {})))


def conditioned_walk(
    plan: Plan,
    env: dict,
    output_node: fx.Node,
    start: Tensor,
    conditions: Conditions,
    stop: fx.Node | None,
) -> Callable[..., Tensor]:
    """`walk(index, free, gates) -> relevance` for one condition (vmap it over k).

    Returns the input relevance, or with `stop` the relevance at `stop`.
    """
    nodes = set(conditions.nodes)
    gated: dict[fx.Node, dict[int, Any]] = {}
    for (node, position), gate in conditions.gates.items():
        gated.setdefault(node, {})[position] = gate
    touched = nodes | set(gated) | ({stop} if stop is not None else set())
    # the input is never released, so a walk that sends it no relevance returns zeros
    placeholder = next(node for node in plan.module.graph.nodes if node.op == "placeholder")
    uses = MappingProxyType(
        {**plan.backward_uses, placeholder: plan.backward_uses.get(placeholder, 0) + 1}
    )

    def walk(index: Mapping[str, Tensor], free: Mapping[str, Tensor], gates: Mapping) -> Tensor:
        captured: dict[str, Tensor] = {}
        handlers = dict(plan.handlers)
        for node in touched:
            mask = None
            if node in nodes:
                mask = _Mask(
                    node,
                    index[node.name],
                    free[node.name],
                    conditions.largest[node.name],
                    conditions.axes.get(node.name),
                )
            node_gates = {
                position: gates[f"{node.name}/{position}"] if gate is not DROP else DROP
                for position, gate in gated.get(node, {}).items()
            }
            handlers[node] = _wrap(
                plan.handlers[node], mask, node_gates, captured if node is stop else None
            )
        walked = replace(plan, handlers=MappingProxyType(handlers), backward_uses=uses)
        result, _ = backward(walked, env, output_node, start, False)
        if stop is None:
            return result
        if stop.name not in captured:
            raise InvalidConditionError(
                f"no relevance reaches node {stop.name!r} from the output under these "
                "conditions (they name nodes that do not lie downstream of it). Fix: condition "
                f"on nodes between {stop.name!r} and the output, or pass exclude_parallel=False."
            )
        return captured[stop.name]

    return walk


def gate_tensors(conditions: Conditions) -> dict[str, Tensor]:
    """The per-condition gates keyed for vmap (`"node/position"`)."""
    return {
        f"{node.name}/{position}": gate
        for (node, position), gate in conditions.gates.items()
        if gate is not DROP
    }


@dataclass(frozen=True)
class _Mask:
    """Keeps the relevance of the listed concepts of `node`'s output: channels of axis 1,
    or with `axis` (`Neurons`, `Heads`) neurons or heads of the last axis."""

    node: fx.Node
    index: Tensor  # (batch or 1, m), -1 pads
    free: Tensor  # 0-d: 1 keeps every channel (the condition does not name the node)
    largest: int
    axis: Neurons | Heads | None = None

    def __call__(self, relevance: Any) -> Tensor:
        if not isinstance(relevance, Tensor) or relevance.ndim < 2:
            shape = getattr(relevance, "shape", type(relevance).__name__)
            raise InvalidConditionError(
                f"node {self.node.name!r} carries relevance of shape {shape}, without a channel "
                "axis 1 to condition on. Fix: condition on a node with output (batch, "
                "channels, ...)."
            )
        channels = relevance.shape[1] if self.axis is None else relevance.shape[-1]
        if isinstance(self.axis, Heads):
            if channels % self.axis.heads:
                raise InvalidConditionError(
                    f"node {self.node.name!r} has {channels} features, not a multiple of "
                    f"heads={self.axis.heads}."
                )
            channels = self.axis.heads
        if self.largest >= channels:
            what = "channel" if self.axis is None else self.axis.kind
            raise InvalidConditionError(
                f"a condition lists {what} {self.largest} of node {self.node.name!r}, which has "
                f"{channels} {what}s (valid: 0..{channels - 1})."
            )
        every = torch.arange(channels, device=self.index.device)
        member = (self.index.unsqueeze(-1) == every).any(dim=-2).to(relevance.dtype)
        mask = torch.maximum(member, self.free.to(relevance.dtype))
        if self.axis is None:
            return relevance * mask.reshape(mask.shape + (1,) * (relevance.ndim - 2))
        if isinstance(self.axis, Heads):  # each head's mask over its features
            mask = mask.repeat_interleave(relevance.shape[-1] // channels, dim=-1)
        return relevance * mask.reshape(
            mask.shape[:1] + (1,) * (relevance.ndim - 2) + mask.shape[1:]
        )


def _wrap(handler: Handler, mask: _Mask | None, gates: Mapping[int, Any], captured) -> Handler:
    inner = handler.backward

    def conditioned(step: Step) -> tuple:
        if mask is not None:
            step = replace(step, relevance=mask(step.relevance))
        if captured is not None:
            captured[step.node.name] = step.relevance
            return (None,) * len(step.inputs)
        contributions = inner(step)
        return tuple(
            _gated(contribution, gates.get(position))
            for position, contribution in enumerate(contributions)
        )

    return replace(handler, backward=conditioned)


def _gated(contribution: Any, gate: Any) -> Any:
    if gate is None or contribution is None:
        return contribution
    if gate is DROP:
        return None
    if isinstance(contribution, (tuple, list)):
        return type(contribution)(_gated(item, gate) for item in contribution)
    return contribution * gate.to(contribution.dtype)
