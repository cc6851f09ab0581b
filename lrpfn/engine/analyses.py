"""Static analyses of a canonical graph that `prepare` records on the `Plan`.

- `data_flow`: the nodes that depend on the explained input, with their data inputs;
- `nonnegative_nodes`: nodes whose output the graph guarantees to be >= 0 (ReLU outputs,
  pooling of non-negative values, ...): there the sign-split rules skip their $a^-$ terms;
- `zero_where_nonpositive`: nodes whose relevance the graph guarantees to be 0 wherever
  their output is <= 0 (their output feeds only ReLUs whose relevance comes from rules
  that multiply by their input): there Gamma's negative-output group vanishes;
- `backward_uses`: how many backward steps read each node's value.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

import torch
from torch import fx

from ..ops import exported
from ..ops.handler import Handler, is_tensor_attribute
from ..ops.normalization import CONSTANT_STATISTIC_METHODS, CONSTANT_STATISTICS
from ..rules import is_signal_rule

__all__ = ["backward_uses", "data_flow", "nonnegative_nodes", "zero_where_nonpositive"]


def data_flow(gm: fx.GraphModule):
    """The nodes that depend on the input, with their data inputs in argument order.

    Flow stops at ops whose result is not a tensor (`x.size()`, `x.shape`).
    """
    data: set[fx.Node] = set()
    inputs: dict[fx.Node, tuple[fx.Node, ...]] = {}
    positions: dict[fx.Node, tuple[int, ...]] = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":  # the first is the explained input; any other one is a
            if not data:  # constant (a default, or a concrete_args value fixed by the trace)
                data.add(node)
            continue
        found, where = [], []
        for index, arg in enumerate((*node.args, *node.kwargs.values())):
            for item in _nodes_in(arg):
                if item in data:
                    found.append(item)
                    where.append(index)
        if found and node.op != "output":
            inputs[node] = tuple(found)
            positions[node] = tuple(where)
            if not _is_shape_query(node):
                data.add(node)
    return inputs, positions


def _nodes_in(arg: Any) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg(arg, found.append)
    return found


_SHAPE_QUERIES = {"size", "dim", "numel", "get_device", "stride", "__len__"}


_SHAPE_FUNCTIONS = frozenset(exported.SHAPE_QUERIES)


def _is_shape_query(node: fx.Node) -> bool:
    """A node whose result carries no relevance: a shape (`x.size()`, `x.shape`, export's
    `sym_size`) or a statistic held constant (a vector norm, see `ops.normalization`)."""
    if node.op == "call_method":
        return node.target in _SHAPE_QUERIES or node.target in CONSTANT_STATISTIC_METHODS
    if node.op != "call_function":
        return False
    if getattr(node.target, "__name__", "") in ("getattr", "len"):
        return not is_tensor_attribute(node)  # x.shape is a query, x.mT is data
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        target = target.overloadpacket  # aten.sym_size.int -> aten.sym_size
    try:
        return target in _SHAPE_FUNCTIONS or target in CONSTANT_STATISTICS
    except TypeError:  # unhashable target
        return False


def nonnegative_nodes(gm, handlers, data_inputs) -> frozenset:
    known: set[fx.Node] = set()
    for node, handler in handlers.items():
        if handler.nonnegative == "always":
            known.add(node)
        elif handler.nonnegative == "preserves" and all(i in known for i in data_inputs[node]):
            subtracts = node.target in (operator.sub, torch.sub, "sub")
            has_constant = len(node.args) > len(data_inputs[node]) and handler.kind == "sum"
            if not (subtracts or has_constant):
                known.add(node)
    return frozenset(known)


def zero_where_nonpositive(
    handlers: Mapping[fx.Node, Handler], rules: Mapping[str, Any]
) -> frozenset:
    """Nodes whose relevance is 0 wherever their value is <= 0, by static analysis.

    Walking in reverse, a node's relevance is 0 wherever its value is 0 (set `at_zero`) if
    every consumer sends nothing there: a rule that multiplies by its input (Epsilon,
    Gamma, AlphaBeta, ZPlus), or a selection (view, max-pool, cat) or an elementwise op
    with $g(0) = 0$ whose own output is in `at_zero`. It is 0 wherever its value is <= 0
    if every consumer is a ReLU in `at_zero`. The output node is never in the sets, since
    `output_relevance` may be anything. Signal rules (gradients) make no such promise.
    """
    if any(is_signal_rule(rule) for rule in rules.values()):
        return frozenset()
    at_zero: set[fx.Node] = set()
    below: set[fx.Node] = set()
    for node in reversed(list(handlers)):
        consumers = list(node.users)
        if not consumers or any(user not in handlers for user in consumers):
            continue
        if all(_sends_zero_at_zero(user, handlers[user], rules, at_zero) for user in consumers):
            at_zero.add(node)
        if all(handlers[user].zero_below and user in at_zero for user in consumers):
            below.add(node)
    return frozenset(below)


def _sends_zero_at_zero(user: fx.Node, handler: Handler, rules, at_zero: set) -> bool:
    if handler.kind in ("linear", "sum"):
        return bool(getattr(rules.get(user.name), "multiplies_input", False))
    if handler.kind == "pass":
        return handler.zero_at_zero and user in at_zero
    if handler.kind in ("route", "product"):
        return user in at_zero
    return handler.kind == "none"


def backward_uses(handlers: Mapping[fx.Node, Handler], data_inputs) -> dict[fx.Node, int]:
    """How many backward steps read each node. A shape query used as a constant argument
    (`x.view(x.size(0), -1)`, export's `sym_size`) is read by its consumer's step too: it
    is counted once more, so the forward keeps it (it is never released: a few ints)."""
    uses: dict[fx.Node, int] = {}
    for node, handler in handlers.items():
        reads = list(data_inputs[node]) if handler.keeps_inputs else []
        for item in [*reads, node] if handler.needs_output else reads:
            uses[item] = uses.get(item, 0) + 1
        if handler.keeps_inputs:
            for item in node.all_input_nodes:
                if item in data_inputs and _is_shape_query(item):
                    uses[item] = uses.get(item, 0) + 1
    return uses
