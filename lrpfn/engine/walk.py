"""Run a `Plan`: one forward pass, then an explicit reverse walk over the graph.

The forward pass interprets the canonical graph node by node, keeping only the values a
later forward op or a backward handler needs. The reverse walk mirrors a transpose pass
in automatic differentiation: it visits nodes in reverse order, pops each node's
relevance, applies the node's handler, adds the results into its data inputs (summing
where a value feeds several consumers), and frees each activation after its last use.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import torch
from torch import Tensor, fx

from ..capture import attribute
from ..errors import InvalidInputError, LRPError, NodeFailedError
from ..ops.handler import Step
from .likely_fix import likely_fix
from .plan import Plan

__all__ = ["backward", "forward"]


def _node_function(plan: Plan, node: fx.Node) -> Callable[..., Any]:
    if node.op == "call_module":
        return plan.module.get_submodule(node.target)
    if node.op == "call_method":
        name = node.target
        return lambda self, *args, **kwargs: getattr(self, name)(*args, **kwargs)
    return node.target


def _op_name(plan: Plan, node: fx.Node) -> str:
    """The op of `node` as a user knows it: `Conv2d 'features.0'`, `torch.add`, `.view`."""
    if node.op == "call_module":
        module = plan.module.get_submodule(node.target)
        return f"{type(module).__name__} {node.target!r}"
    if node.op == "call_method":
        return f"method .{node.target}"
    name = getattr(node.target, "__name__", str(node.target))
    return f"{getattr(node.target, '__module__', None) or 'op'}.{name}"


def _one_line(error: BaseException) -> str:
    """The error's message on one line, ending in a full stop."""
    text = " ".join(str(error).split())
    return text if text.endswith(".") else f"{text}."


def forward(
    plan: Plan,
    x: Tensor,
    *,
    keep: Collection[fx.Node] | None = None,
    before: Callable[[fx.Node, dict], bool] | None = None,
    after: Callable[[fx.Node, dict], None] | None = None,
) -> tuple[dict[fx.Node, Any], fx.Node]:
    """Run the model; return the values the backward walk needs and the output node.

    `keep` overrides the values kept (the plain walk's by default); `before(node, env)`,
    if given, may compute a node's value into `env` itself (returning True), and
    `after(node, env)` sees each value before the forward drops what it no longer needs
    (`engine.folded_walk`).
    """
    graph = plan.module.graph
    nodes = list(graph.nodes)
    if keep is None:
        keep = {node for node in plan.backward_uses if node not in plan.recomputed}
    last_use = {}
    for index, node in enumerate(nodes):
        for item in node.all_input_nodes:
            last_use[item] = index
    env: dict[fx.Node, Any] = {}
    placeholders = 0
    output_node = None
    for index, node in enumerate(nodes):
        if node.op == "placeholder":
            env[node] = x if placeholders == 0 else _default(node)
            placeholders += 1
        elif node.op == "get_attr":
            env[node] = attribute(plan.module, node.target)
        elif node.op == "output":
            output_node = node.args[0]
        elif before is not None and before(node, env):
            pass
        else:
            args = fx.node.map_arg(node.args, env.__getitem__)
            kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
            try:
                env[node] = _node_function(plan, node)(*args, **kwargs)
            except LRPError:
                raise
            except Exception as error:
                raise NodeFailedError(
                    f"the forward pass failed at node {node.format_node()} "
                    f"({_op_name(plan, node)}): {type(error).__name__}: {_one_line(error)} "
                    f"Check that the input fits the model (input shape {tuple(x.shape)}, "
                    f"dtype {x.dtype}, device {x.device}); likely fix: {likely_fix(error)}."
                ) from error
        if after is not None:
            after(node, env)
        if node.op != "output":  # the output stays: it starts the backward walk
            for item in node.all_input_nodes:
                if last_use[item] == index and item not in keep and item in plan.data_inputs:
                    del env[item]
    if not isinstance(output_node, fx.Node) or not isinstance(env.get(output_node), Tensor):
        raise InvalidInputError(
            "the model must return one tensor (the logits) to be explained; it returns "
            f"{output_node!r}. Fix: pass output=KEY or output=INDEX to lrpfn.lrp / "
            "lrpfn.prepare (--output on the command line) to choose the entry to explain."
        )
    return env, output_node


def _default(node: fx.Node) -> Any:
    if node.args:
        return node.args[0]
    raise InvalidInputError(
        f"the model takes more than one input ({node.name!r} has no default); lrpfn explains "
        "models of one input tensor. Fix: trace with concrete_args for the other inputs."
    )


def backward(
    plan: Plan,
    env: dict[fx.Node, Any],
    output_node: fx.Node,
    initial: Tensor,
    keep_all: bool,
    *,
    owned: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """Walk the graph in reverse from `initial` (the output relevance).

    Returns the input relevance and, with `keep_all`, the relevance of every node reached.
    With `owned` the caller hands `env` over: the walk deletes each value from it after its
    last use, so the memory is freed (otherwise the walk works on a copy of the dict, and
    the caller's dict holds every forward value until the walk ends).
    """
    if not owned:
        env = dict(env)
    uses = dict(plan.backward_uses)
    relevance: dict[fx.Node, Any] = {output_node: initial}
    recorded: dict[str, Any] = {}
    nodes = list(plan.module.graph.nodes)
    placeholder = next(node for node in nodes if node.op == "placeholder")
    x = env[placeholder]  # held by the caller anyway; shapes the zero result (the walk frees env's)
    for node in reversed(nodes):
        if node.op == "placeholder" and node in relevance:
            recorded[node.name] = relevance[node]
        if node not in plan.handlers:
            continue
        incoming = relevance.pop(node, None)
        if incoming is not None:
            if keep_all:
                recorded[node.name] = incoming
            _step(plan, env, uses, node, incoming, relevance)
        _release(plan, env, uses, node)
    result = recorded.get(placeholder.name, relevance.get(placeholder))
    if result is None:  # no relevance reached the input
        result = torch.zeros_like(x)
    if keep_all:
        recorded = {node.name: recorded[node.name] for node in nodes if node.name in recorded}
    return result, recorded


def _step(plan: Plan, env: dict, uses: dict, node: fx.Node, incoming: Any, relevance: dict) -> None:
    handler = plan.handlers[node]
    inputs = plan.data_inputs[node]
    step = (
        _make_step(plan, env, uses, node, incoming)
        if handler.keeps_inputs
        else Step(node, (), {}, (None,) * len(inputs), None, incoming, None, None, (), (), inputs)
    )
    try:
        contributions = handler.backward(step)
    except LRPError:
        raise
    except Exception as error:
        raise NodeFailedError(
            f"the relevance step failed at node {node.format_node()} (handler "
            f"{handler.kind!r}, rule {plan.rules.get(node.name)!r}): {type(error).__name__}: {error}"
        ) from error
    for item, contribution in zip(inputs, contributions, strict=True):
        if contribution is not None:
            relevance[item] = _accumulate(relevance.get(item), contribution)


def _value(plan: Plan, env: dict, uses: dict, node: fx.Node) -> Any:
    """`env[node]`; a value the forward dropped (`plan.recomputed`) is recomputed from its
    inputs (kept, or recomputed in turn) and held in `env` until its last backward read."""
    if node in env or node not in plan.recomputed:
        return env[node]

    def value(item: fx.Node) -> Any:
        return _value(plan, env, uses, item)

    args = fx.node.map_arg(node.args, value)
    kwargs = fx.node.map_arg(node.kwargs, value)
    result = _node_function(plan, node)(*args, **kwargs)
    if uses.get(node, 0) > 0:  # a later step reads it again
        env[node] = result
    return result


def _make_step(plan: Plan, env: dict, uses: dict, node: fx.Node, incoming: Any) -> Step:
    inputs = plan.data_inputs[node]
    function = _node_function(plan, node)
    data = set(inputs)

    def value(item: fx.Node) -> Any:
        return _value(plan, env, uses, item)

    def call(*values: Any) -> Any:
        supply = iter(values)
        args = fx.node.map_arg(node.args, lambda n: next(supply) if n in data else env[n])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: next(supply) if n in data else env[n])
        return function(*args, **kwargs)

    return Step(
        node=node,
        args=fx.node.map_arg(node.args, value),
        kwargs=fx.node.map_arg(node.kwargs, value),
        inputs=tuple(value(item) for item in inputs),
        output=value(node) if plan.handlers[node].needs_output else env.get(node),
        relevance=incoming,
        rule=plan.rules.get(node.name),
        call=call,
        input_nonnegative=tuple(item in plan.nonnegative for item in inputs),
        data_positions=plan.data_positions[node],
        input_nodes=inputs,
        zero_where_nonpositive=node in plan.zero_where_nonpositive,
    )


def _accumulate(total: Any, contribution: Any) -> Any:
    if total is None:
        return contribution
    if contribution is None:  # a part of a tuple that took no relevance
        return total
    if isinstance(total, Tensor):
        return total + contribution
    return type(total)(_accumulate(a, b) for a, b in zip(total, contribution, strict=True))


def _release(plan: Plan, env: dict, uses: dict, node: fx.Node) -> None:
    """Free the values whose last backward use was `node`'s step."""
    released = list(plan.data_inputs[node]) if plan.handlers[node].keeps_inputs else []
    if plan.handlers[node].needs_output:
        released.append(node)
    for item in released:
        uses[item] -= 1
        if uses[item] == 0:
            env.pop(item, None)
