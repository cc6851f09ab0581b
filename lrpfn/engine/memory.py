r"""Which activations the forward pass drops and the backward walk recomputes.

An input gradient keeps one tensor per ReLU; LRP reads both a layer's output $z$ (the
denominator) and the next layer's input $a = g(z)$ after an elementwise activation $g$.
Nothing forces it to keep both: $z$ is kept for its own layer's rule anyway, so $a$ is
recomputed from it in one elementwise pass when the walk first needs it, and freed after
its last read. Results are identical (the same op on the same values); peak memory holds
about one tensor per layer instead of two.

The same holds for the scores of attention, $x = \mathrm{mask}(c \cdot q k^\top)$: the
walk reads the raw scores $q k^\top$ (the product rule's denominator), the scaled and the
masked scores (the rules of a product and a sum with a constant operand) and the softmax
input $x$, four tensors of shape (heads, tokens, tokens) where the gradient keeps one (the
softmax output). The product's operands $q$ and $k$ are kept for its own rule, so the
whole chain is recomputed from them (one more $q k^\top$ per attention layer) when the
softmax step first reads $x$; only the softmax output stays from the forward.

A node is recomputed when some backward step reads it, its non-data arguments are
constants (the forward never drops those) or dtype and shape queries (kept: `queries`), and it is

- an elementwise pass (kind "pass": ReLU, GELU, casts, dropout in eval, ...), a product or
  a sum with one data operand (a scale, a bias, an additive mask), or a `route` or
  product of activations on the chain from a softmax input back to the product that
  computes the scores (`attention_scores`);
- and each of its data inputs is held whenever the node is read: the input is recomputed
  itself, or its own step reads it (a linear, sum or product node reads its output $z$),
  or the node's own step reads it. Every read of the node comes from a step of the node or
  of a later node, which the walk reaches before any of those steps, so the input is still
  held (or can be recomputed in turn) whenever the node is recomputed.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping

from torch import fx

from ..ops.handler import Handler

__all__ = ["attention_scores", "queries", "recomputed_nodes"]

_SCALING = ("pass", "product", "sum", "route")  # kinds a scores chain passes through


def recomputed_nodes(
    handlers: Mapping[fx.Node, Handler],
    data_inputs: Mapping[fx.Node, tuple],
    backward_uses: Mapping[fx.Node, int],
) -> frozenset:
    """The nodes whose value the walk recomputes from kept values (see the module)."""
    scores = attention_scores(handlers, data_inputs)
    recomputed: set[fx.Node] = set()
    for node, handler in handlers.items():  # graph order: inputs are decided first
        inputs = data_inputs[node]
        if node not in backward_uses or not _constant_arguments(node, inputs, data_inputs):
            continue
        if not (node in scores or _cheap(handler, inputs)):
            continue
        if all(_held(item, handler, handlers, recomputed) for item in inputs):
            recomputed.add(node)
    return frozenset(recomputed)


def _cheap(handler: Handler, inputs: tuple) -> bool:
    """An elementwise pass, or a product or sum with one data operand (not a family's op:
    a softmax or a product with a constant matrix is not cheap to run again)."""
    if getattr(handler, "family", ""):
        return False
    return handler.kind == "pass" or (handler.kind in ("product", "sum") and len(inputs) == 1)


def _held(item: fx.Node, handler: Handler, handlers: Mapping, recomputed: set) -> bool:
    if handler.keeps_inputs or item in recomputed:
        return True
    return item in handlers and handlers[item].needs_output  # (the input x is freed too)


def _constant_arguments(node: fx.Node, inputs: tuple, data_inputs: Mapping) -> bool:
    """The node's arguments other than its data inputs are constants (the forward never
    drops those) or queries of a shape or dtype (`x.to(q.dtype)`: kept, see `queries`)."""
    data = set(inputs)
    return all(
        item in data or item not in data_inputs or _is_query(item) for item in node.all_input_nodes
    )


def _is_query(node: fx.Node) -> bool:
    """`x.dtype`, `x.shape`, `x.size()`, `x.dim()`: a few numbers, not a tensor."""
    if node.op == "call_method":
        return node.target in ("size", "dim")
    return (
        node.op == "call_function"
        and node.target is builtins.getattr
        and len(node.args) > 1
        and node.args[1] in ("dtype", "shape", "ndim", "device")
    )


def queries(recomputed: frozenset) -> frozenset:
    """The shape and dtype queries that recomputed nodes take as arguments: the forward
    keeps them (a few numbers each) for the walk."""
    return frozenset(
        item for node in recomputed for item in node.all_input_nodes if _is_query(item)
    )


def attention_scores(
    handlers: Mapping[fx.Node, Handler], data_inputs: Mapping[fx.Node, tuple]
) -> frozenset:
    """The nodes from each softmax input back to the product of two activations that
    computes the scores ($q k^\\top$), through ops with one data input (scale, mask, cast)."""
    chains: set[fx.Node] = set()
    for node, handler in handlers.items():
        if getattr(handler, "family", "") != "softmax" or len(data_inputs[node]) != 1:
            continue
        chain, item = [], data_inputs[node][0]
        while item in handlers:
            item_handler = handlers[item]
            if getattr(item_handler, "family", "") == "matmul":
                if len(data_inputs[item]) == 2 and item_handler.keeps_inputs:
                    chains.update([*chain, item])
                break
            if item_handler.kind not in _SCALING or len(data_inputs[item]) != 1:
                break
            chain.append(item)
            item = data_inputs[item][0]
    return frozenset(chains)
