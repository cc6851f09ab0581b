"""Which graph node a condition names, and which nodes lie downstream of it.

A condition names a node as `lrpfn.relevances` reports it (the fx node name, e.g.
"layer4_1_conv2"), or by the name of the module it came from: a leaf module
("layer4.1.conv2"), a BatchNorm folded into the layer before it ("layer4.1.bn2"), or a
container whose output is one node ("layer4", "layer4.1").
"""

from __future__ import annotations

from torch import fx

from .._canonical import FOLDED, SOURCE
from .._plan import Plan
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
    sourced = [node for node in nodes if _source_name(node) == name]
    if len(sourced) == 1:
        return sourced[0]
    inside = [node for node in nodes if name in _modules_of(node)] or sourced
    outputs = [node for node in inside if any(user not in inside for user in node.users)]
    if len(outputs) == 1:
        return outputs[0]
    if len(outputs) > 1:
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


def _source_name(node: fx.Node) -> str | None:
    source = node.meta.get(SOURCE)
    if source is not None:
        return source.name
    return node.target if node.op == "call_module" else None


def _modules_of(node: fx.Node) -> set[str]:
    """The names of the modules whose forward created `node` (fx's `nn_module_stack`)."""
    stack = node.meta.get("nn_module_stack") or {}
    return {key.split("@")[0] for key in stack}


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
