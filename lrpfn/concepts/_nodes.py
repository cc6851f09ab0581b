"""Which graph node a condition names, and which nodes lie downstream of it.

A condition names a node as `lrpfn.relevances` reports it (the fx node name, e.g.
"layer4_1_conv2"), or by the name of the module it came from: a leaf module
("layer4.1.conv2"), a BatchNorm folded into the layer before it ("layer4.1.bn2"), or a
container whose output is one node ("layer4", "layer4.1").
"""

from __future__ import annotations

from torch import fx

from ..engine import FOLDED, SOURCE, Plan
from ..errors import LRPError

__all__ = ["InvalidConditionError", "downstream", "resolve_node"]


class InvalidConditionError(LRPError, ValueError):
    """A concept condition names no relevance-carrying node, or channels out of range."""


def resolve_node(plan: Plan, name: str) -> fx.Node:
    """The node that carries the relevance of `name` (fx node name or module name)."""
    if not isinstance(name, str):
        raise InvalidConditionError(
            f"a condition is keyed by a node or module name (str), got {name!r}."
        )
    nodes = [node for node in plan.module.graph.nodes if node in plan.handlers]
    for node in nodes:
        if node.name == name or node.meta.get(FOLDED) in (name, name.replace(".", "_")):
            return node
    calls = _calls(nodes, name)
    outputs = [
        node
        for inside in calls.values()
        for node in inside
        if any(user not in inside for user in node.users)
    ]
    if len(calls) == 1 and len(outputs) == 1:
        return outputs[0]
    if outputs:
        raise InvalidConditionError(
            f"module {name!r} is called more than once or has several outputs in the graph "
            f"(nodes {', '.join(node.name for node in outputs)}). Fix: name one of these "
            "nodes in the condition."
        )
    known = ", ".join(node.name for node in nodes[:12])
    raise InvalidConditionError(
        f"no relevance-carrying graph node or module is named {name!r}. Fix: use a node "
        f"name as lrpfn.relevances reports it (e.g. {known}, ...) or a module name from "
        "model.named_modules()."
    )


def _calls(nodes: list[fx.Node], name: str) -> dict[str, list[fx.Node]]:
    """The nodes created by each call of module `name`, keyed by call.

    fx records the modules whose forward created a node (`nn_module_stack`, keys such as
    "layer4.1" and "layer4.1.relu@1" for a second call; torch.export records the module's
    path in the value); without that record, each node
    lowered from a module of that name counts as one call.
    """
    calls: dict[str, list[fx.Node]] = {}
    for node in nodes:
        for key, value in (node.meta.get("nn_module_stack") or {}).items():
            # torch.export keys a call "L__self__<path>" and records (path, type) as value
            path = value[0] if isinstance(value, tuple) and value else key
            if key.split("@")[0] == name or path == name:
                calls.setdefault(key, []).append(node)
    if not calls:
        for node in nodes:
            source = node.meta.get(SOURCE)
            called = source.name if source is not None else None
            if called is None and node.op == "call_module":
                called = node.target
            if called == name:
                calls[node.name] = [node]
    return calls


def downstream(plan: Plan, node: fx.Node) -> frozenset[fx.Node]:
    """The nodes whose value depends on `node`'s (not `node` itself)."""
    found: set[fx.Node] = set()
    frontier = [node]
    while frontier:
        for user in frontier.pop().users:
            if user in plan.handlers and user not in found:
                found.add(user)
                frontier.append(user)
    return frozenset(found)
