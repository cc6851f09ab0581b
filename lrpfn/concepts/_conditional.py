"""`conditional` and `importance`: Concept Relevance Propagation over a Plan.

Both run one forward pass and one reverse walk, vmapped over the k conditions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, fx

from ..engine import (
    TRACE_LOCK,
    Handler,
    Plan,
    as_plan,
    check_input,
    forward,
    initial_relevance,
    power_of_two_scale,
    rescaled,
)
from ..errors import InvalidTargetError
from ._nodes import InvalidConditionError, downstream, resolve_node
from ._scores import Heads, Neurons
from ._walk import conditioned_walk, gate_tensors, parse_conditions

__all__ = ["conditional", "importance"]

Condition = Mapping[str, Any]


def conditional(
    model: torch.nn.Module | Plan,
    x: Tensor,
    rules: Any = None,
    conditions: Sequence[Condition] = (),
    target: int | Tensor | None = None,
    *,
    exclude_parallel: bool = True,
    handlers: Mapping[Any, Handler] | None = None,
    channel_axis: int = 1,
) -> Tensor:
    """The input relevance under each of k conditions, all in one call.

    A condition `{node: channels, ...}` keeps, at every node it names, the relevance of
    the listed channels (axis 1; the listed neurons of a dense output) and sets the rest
    to zero; the walk then goes on to the input. With `exclude_parallel` (the default,
    as in zennit-crp), relevance that bypasses a named node (a residual skip around it)
    is excluded too, so the heatmap is exactly the share of the explained logit that
    passes through the concept. A condition naming several nodes is the hierarchical
    case: concept $c$ at layer $l$ and sub-concepts at a layer $l'$ below it.

    For a layer $l$ with relevance $R^l$ and a concept $\\theta$ (a set of channels),

    $$ R^{0}(x \\mid \\theta) = \\mathrm{LRP}_{l \\to 0}\\big(R^l \\odot 1_{\\theta}\\big), \\qquad
    \\sum_i R^{0}_i(x \\mid \\theta) = \\sum_{c \\in \\theta} \\sum_{p} R^l_{c,p} $$

    (the sum holds for conservative rules). Achtibat et al. (2023), "From attribution
    maps to human-understandable explanations through Concept Relevance Propagation",
    Nature Machine Intelligence 5, 1006-1019.

    Arguments:
        model: an `nn.Module`, a `torch.fx.GraphModule` or a `Plan` (then rules=None).
        x: the input batch.
        rules: the rule mapping, as in `lrpfn.lrp`.
        conditions: k dicts `{name: channels}`; a name is an fx node name as
            `lrpfn.relevances` reports it or a module name (or `Neurons(name)`,
            `Heads(name, heads)`: the concepts of a transformer's last axis); channels an int, a list of
            ints, a LongTensor `(m,)` (the same for every sample) or `(batch, m)` (per
            sample, e.g. from `top(...).channels`).
        target: the class to explain (None: each sample's argmax; an int; `(batch,)`).
        exclude_parallel: drop relevance bypassing a named node (False keeps it).
        handlers: a dispatch table replacing `lrpfn.HANDLERS`.
        channel_axis: the axis of the named nodes' values that holds the channels (1 for
            convolutions; -1 for a transformer's MLP neurons `(batch, tokens, neurons)`;
            attention heads are axis 1 of the attention output `(batch, heads, tokens,
            head dim)`, see `lrpfn.text.concept_nodes`).

    Returns:
        The input relevance of shape `(k, *x.shape)`.
    """
    if isinstance(conditions, Mapping) or not len(conditions):
        raise InvalidConditionError(
            "conditions must be a non-empty sequence of dicts {node name: channels}, e.g. "
            "[{'layer4': [3]}, {'layer4': [7, 9]}]."
        )
    return _run(model, x, rules, handlers, target, conditions, exclude_parallel, None, channel_axis)


def importance(
    model: torch.nn.Module | Plan,
    x: Tensor,
    rules: Any = None,
    node: str = "",
    target: int | Tensor | None = None,
    *,
    conditions: Sequence[Condition] | None = None,
    exclude_parallel: bool = True,
    handlers: Mapping[Any, Handler] | None = None,
    channel_axis: int = 1,
) -> Tensor:
    """The relevance of every channel of `node`: $\\sum_p R^l_{c,p}$ per sample.

    The walk stops at `node` (nothing below it is computed). With `conditions`, the
    relevance of `node`'s channels under each condition on nodes above it (the
    hierarchical case: which channels of layer3 make up channel 5 of layer4).

    The other arguments are those of `conditional`. With a prepared plan, which has its
    rules, the node follows `x` directly: `importance(plan, x, "layer4")` (or
    `importance(plan, x, node="layer4")`).

    Arguments:
        node: an fx node name or a module name (see `conditional`).
        conditions: None, or k conditions as in `conditional`.
        channel_axis: the axis of `node`'s value (and of the conditioned nodes') that
            holds the channels (see `conditional`).

    Returns:
        `(batch, channels)`: `node`'s relevance summed over every axis but the batch and
        the channel axis; with conditions `(k, batch, channels)`.
    """
    if isinstance(model, Plan) and isinstance(rules, str) and not isinstance(node, str | None):
        rules, node, target = None, rules, node  # importance(plan, x, "layer4", 3)
    elif isinstance(model, Plan) and isinstance(rules, str) and not node:
        rules, node = None, rules  # importance(plan, x, "layer4"): a plan has its rules
    if conditions is not None and (isinstance(conditions, Mapping) or not len(conditions)):
        raise InvalidConditionError("conditions must be None or a non-empty sequence of dicts.")
    relevance = _run(
        model, x, rules, handlers, target, conditions, exclude_parallel, node, channel_axis
    )
    first = 3 if conditions is not None else 2
    axis = channel_axis + first - 2 if channel_axis >= 0 else channel_axis
    if relevance.ndim < first or not first - 1 <= axis % relevance.ndim < relevance.ndim:
        raise InvalidConditionError(
            f"node {node!r} has relevance of shape {tuple(relevance.shape)}, without a "
            f"channel axis {channel_axis}."
        )
    relevance = relevance.movedim(axis, first - 1)
    return (
        relevance.sum(dim=tuple(range(first, relevance.ndim)))
        if relevance.ndim > first
        else relevance
    )


def _run(model, x, rules, handlers, target, conditions, exclude_parallel, stop, channel_axis):
    plan = as_plan(model, rules, handlers, None)
    check_input(x)
    stop_node = resolve_node(plan, stop) if stop is not None else None
    batched = conditions is not None
    named, axes = _named(plan, conditions or [{}], x.shape[0])
    axes = _with_channel_axis(named, axes, channel_axis)
    _check_chains(named, exclude_parallel, plan)
    parsed = parse_conditions(plan, named, exclude_parallel, stop_node, x.device, axes)
    with torch.no_grad(), TRACE_LOCK.running():
        env, output_node = forward(plan, x)
        env[_placeholder(plan)] = x  # the walk's zero result, when no relevance reaches x
        output = env[output_node]
        if output.ndim != 2:
            raise InvalidTargetError(
                f"concepts explain a model output of shape (batch, classes), got "
                f"{tuple(output.shape)}."
            )
        if isinstance(target, Tensor) and target.ndim == 2:
            raise InvalidTargetError(
                "concepts explain one target per sample (an int or shape (batch,)); for "
                "several classes call once per class."
            )
        initial = initial_relevance(output, target, None)
        scale = power_of_two_scale(initial, output.ndim)
        start = rescaled(initial, scale.reciprocal())
        walk = conditioned_walk(plan, env, output_node, start, parsed, stop_node)
        gates = gate_tensors(parsed)
        if batched:
            result = torch.func.vmap(walk)(dict(parsed.index), dict(parsed.free), gates)
        else:
            first = {name: value[0] for name, value in parsed.index.items()}
            result = walk(first, {name: value[0] for name, value in parsed.free.items()}, {})
    if scale.ndim == 0:
        return result
    axis = 1 if batched else 0
    return result * scale.reshape(scale.shape + (1,) * (result.ndim - axis - 1))


def _placeholder(plan: Plan) -> fx.Node:
    return next(node for node in plan.module.graph.nodes if node.op == "placeholder")


def _named(plan: Plan, conditions, batch: int) -> tuple[list[dict[fx.Node, Tensor]], dict]:
    """Each condition keyed by node; and the nodes conditioned on `Neurons`/`Heads`."""
    named, axes = [], {}
    for position, condition in enumerate(conditions):
        if not isinstance(condition, Mapping):
            raise InvalidConditionError(
                f"condition {position} is {condition!r}; each condition is a dict "
                "{node name: channels}."
            )
        resolved: dict[fx.Node, Tensor] = {}
        for key, channels in condition.items():
            name = key.name if isinstance(key, (Neurons, Heads)) else key
            node = resolve_node(plan, name)
            if isinstance(key, (Neurons, Heads)):
                axes[node.name] = key
            if node in resolved:
                raise InvalidConditionError(
                    f"condition {position} names node {node.name!r} twice (as {name!r})."
                )
            resolved[node] = _channel_index(channels, batch, f"condition {position}, {name!r}")
        named.append(resolved)
    return named, axes


def _channel_index(channels: Any, batch: int, where: str) -> Tensor:
    """Channels as a LongTensor `(1, m)` (every sample) or `(batch, m)` (per sample)."""
    if isinstance(channels, (bool, float)):
        raise InvalidConditionError(f"{where}: channels must be integers, got {channels!r}.")
    if isinstance(channels, Tensor):
        index = channels.detach()
    else:
        try:
            index = torch.as_tensor(channels if not isinstance(channels, int) else [channels])
        except (TypeError, ValueError, RuntimeError) as error:
            raise InvalidConditionError(
                f"{where}: channels must be an int, a list of ints or a LongTensor, got "
                f"{channels!r}."
            ) from error
        if index.numel() == 0:
            index = index.long()
    if index.is_floating_point() or index.dtype in (torch.bool, torch.complex64, torch.complex128):
        raise InvalidConditionError(f"{where}: channels must be integers, got dtype {index.dtype}.")
    if index.ndim == 0:
        index = index.reshape(1, 1)
    elif index.ndim == 1:
        index = index[None]
    elif index.ndim != 2 or index.shape[0] != batch:
        raise InvalidConditionError(
            f"{where}: channels of shape {tuple(index.shape)}; use (m,) for every sample or "
            f"(batch, m) = ({batch}, m) per sample."
        )
    if index.numel() and bool((index < 0).any()):
        raise InvalidConditionError(f"{where}: channel indices must be >= 0, got {index.tolist()}.")
    return index.long()


def _check_chains(named, exclude_parallel: bool, plan: Plan) -> None:
    """With `exclude_parallel`, the nodes of one condition must lie on one path."""
    if not exclude_parallel:
        return
    for position, condition in enumerate(named):
        nodes = list(condition)
        for first, node in enumerate(nodes):
            below = downstream(plan, node)
            for other in nodes[first + 1 :]:
                if other not in below and node not in downstream(plan, other):
                    raise InvalidConditionError(
                        f"condition {position} names {node.name!r} and {other.name!r}, which lie "
                        "on parallel paths: no relevance passes through both, so with "
                        "exclude_parallel=True the heatmap would be zero. Fix: condition on "
                        "nodes of one path, or pass exclude_parallel=False."
                    )


def _with_channel_axis(named, axes: dict, channel_axis: int) -> dict:
    """`channel_axis=-1` conditions every named node on its last axis (its `Neurons`),
    unless a `Neurons`/`Heads` key says otherwise; 1 (the default) keeps axis 1."""
    if channel_axis == 1:
        return axes
    if channel_axis != -1:
        raise InvalidConditionError(
            f"channel_axis must be 1 (channels, as in a convolution's output) or -1 (the last "
            f"axis, e.g. a transformer's MLP neurons), got {channel_axis}. Fix: key a condition "
            "by concepts.Neurons(name) or concepts.Heads(name, heads) for other layouts."
        )
    widened = dict(axes)
    for condition in named:
        for node in condition:
            widened.setdefault(node.name, Neurons(node.name))
    return widened
