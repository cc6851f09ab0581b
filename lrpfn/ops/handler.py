"""How relevance moves back through each graph op: one dispatch table.

A handler maps the relevance at a node's output to its data inputs. Handlers are library
facts, separate from rules (the user's choice for linear nodes):

- `PASS`: elementwise activations, dropout, identity: $R_{\\text{in}} = R$;
- `ROUTE`: ops that move or select values (view, permute, cat, getitem, max-pooling):
  relevance is routed exactly by the op's vector-Jacobian product, so max-pooling is
  winner-take-all and a concatenation splits relevance back to its parts;
- `LINEAR`: affine ops, explained by the node's rule (`rules.*`) on a `layers.Layer`
  record; `required` for ops with parameters, `default` (`rules.Epsilon(1e-6)` unless a
  key matches) for parameter-free ones (pooling, sums);
- `SUM`: additions and subtractions of several tensors (residual connections), a linear
  node whose inputs are stacked on a trailing axis;
- `PRODUCT`: elementwise products (a constant scale passes relevance; a gate of two
  tensors is handled by the node's product rule);
- `NONE`: ops whose result is not a tensor (`x.size()`, `x.shape`): no relevance.

The handlers of the ops every CNN uses are keyed in `ops.core`; each further
op family (normalizations, attention, resampling, ...) keeps its handlers in its own module
of `lrpfn.ops`, and `ops.table` merges them all into the one table `lrpfn.HANDLERS`. A table is
keyed by module type (for `call_module` nodes), by function or its qualified name
`"module.function"` (for `call_function`) and by method name (for `call_method`).
`handler_for(node, gm, table)` looks a node up.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, fx
from torch.utils._pytree import tree_flatten, tree_unflatten

__all__ = [
    "CONCATENATE",
    "NONE",
    "PASS",
    "PASS_NONNEGATIVE",
    "PASS_PRESERVING",
    "PASS_RELU",
    "PASS_ZERO",
    "ROUTE",
    "Handler",
    "Step",
    "argument",
    "handler_for",
    "is_tensor_attribute",
]


@dataclass
class Step:
    """Everything a handler needs at one node during the backward walk."""

    node: fx.Node
    args: tuple  # the node's arguments with every Node replaced by its value
    kwargs: dict
    inputs: tuple  # values of the data inputs, in `data_inputs(node)` order
    output: Any
    relevance: Any
    rule: Any
    call: Callable[..., Any]  # recomputes the output from new data-input values
    input_nonnegative: tuple[bool, ...]
    data_positions: tuple[int, ...]  # the top-level argument index of each data input
    input_nodes: tuple  # the data input nodes
    zero_where_nonpositive: bool = False  # the graph guarantees R = 0 where output <= 0


@dataclass(frozen=True)
class Handler:
    """How relevance passes one kind of op.

    Attributes:
        kind: "pass", "route", "linear", "sum", "product" or "none".
        backward: `(step) -> tuple of relevances, one per data input`.
        rule: None, "required" (a rule must be assigned) or "default" (falls back to the
            default rule).
        nonnegative: "always" if the output is >= 0, "preserves" if it is >= 0 when all
            data inputs are, else None.
        keeps_inputs: the backward step needs the data inputs' values.
        zero_at_zero: (elementwise ops) the output is 0 where the input is 0.
        zero_below: (elementwise ops) the output is 0 wherever the input is <= 0 (ReLU).
    """

    kind: str
    backward: Callable[[Step], tuple]
    rule: str | None = None
    nonnegative: str | None = None
    keeps_inputs: bool = True
    zero_at_zero: bool = False
    zero_below: bool = False

    @property
    def needs_output(self) -> bool:
        """The backward step reads the node's own output (the forward's $z$)."""
        return self.kind in ("linear", "sum", "product")


def _pass(step: Step) -> tuple:
    return (step.relevance,) + (None,) * (len(step.inputs) - 1)


def _route(step: Step) -> tuple:
    if isinstance(step.relevance, Tensor) and all(map(_moves, step.inputs)):
        _, vjp = torch.func.vjp(step.call, *step.inputs)
        return vjp(step.relevance)
    return _route_parts(step)


def _moves(value: Any) -> bool:
    """A floating-point tensor: the part of a value relevance can flow through."""
    return isinstance(value, Tensor) and value.is_floating_point()


def _route_parts(step: Step) -> tuple:
    """A route whose inputs or output hold parts that carry no relevance: tuples with
    integer tensors, such as `max_pool2d(..., return_indices=True)`'s `(values, indices)`
    and the `getitem` that takes the values out. The integer parts are constants, relevance
    moves between the floating-point tensors by the same vector-Jacobian product, and a
    tuple's part that received no relevance (None) takes none."""
    leaves, spec = tree_flatten(step.inputs)
    moving = [index for index, leaf in enumerate(leaves) if _moves(leaf)]

    output_moves: list[bool] = []

    def call(*values: Tensor) -> tuple:
        full = list(leaves)
        for index, value in zip(moving, values, strict=True):
            full[index] = value
        parts = tree_flatten(step.call(*tree_unflatten(full, spec)))[0]
        output_moves[:] = map(_moves, parts)
        return tuple(filter(_moves, parts))

    outputs, vjp = torch.func.vjp(call, *(leaves[index] for index in moving))
    arriving = tree_flatten(step.relevance)[0]
    relevance = [value for value, moves in zip(arriving, output_moves, strict=True) if moves]
    relevance = [
        torch.zeros_like(output) if value is None else value
        for value, output in zip(relevance, outputs, strict=True)
    ]
    contributions: list[Any] = [None] * len(leaves)
    for index, value in zip(moving, vjp(tuple(relevance)), strict=True):
        contributions[index] = value
    return tuple(tree_unflatten(contributions, spec))


def _concatenate(step: Step) -> tuple:
    """`torch.cat(tensors, dim)`: the relevance split back into the parts, the exact VJP
    of a concatenation, without re-running it (a DenseNet concatenates every earlier
    feature map at every layer). Other argument forms take the generic route."""
    parts = step.node.args[0] if step.node.args else step.node.kwargs.get("tensors")
    values = step.args[0] if step.args else step.kwargs.get("tensors")
    dim = argument(step, 1, "dim", step.kwargs.get("axis", 0))
    if not isinstance(parts, (list, tuple)) or any(value.ndim == 0 for value in values):
        return _route(step)
    if any(value.ndim != values[0].ndim for value in values):  # legacy empty 1-d parts
        return _route(step)
    pieces = step.relevance.split([value.shape[dim] for value in values], dim)
    pieces = [piece.contiguous() for piece in pieces]
    data = set(step.input_nodes)
    return tuple(piece for part, piece in zip(parts, pieces, strict=True) if part in data)


def argument(step: Step, index: int, name: str, default: Any = None) -> Any:
    if len(step.args) > index:
        return step.args[index]
    return step.kwargs.get(name, default)


def _none(step: Step) -> tuple:
    return (None,) * len(step.inputs)


PASS = Handler("pass", _pass, keeps_inputs=False)
PASS_ZERO = Handler("pass", _pass, keeps_inputs=False, zero_at_zero=True)
PASS_RELU = Handler(
    "pass", _pass, nonnegative="always", keeps_inputs=False, zero_at_zero=True, zero_below=True
)
PASS_NONNEGATIVE = Handler("pass", _pass, nonnegative="always", keeps_inputs=False)
PASS_PRESERVING = Handler(
    "pass", _pass, nonnegative="preserves", keeps_inputs=False, zero_at_zero=True
)
ROUTE = Handler("route", _route, nonnegative="preserves")
CONCATENATE = Handler("route", _concatenate, nonnegative="preserves")
NONE = Handler("none", _none, keeps_inputs=False)


TENSOR_ATTRIBUTES = frozenset({"T", "mT", "H", "mH"})
"""Attribute reads that give a tensor (transposes): data, not shape queries like `x.shape`."""


def is_tensor_attribute(node: fx.Node) -> bool:
    """`node` reads an attribute of a tensor that is itself a tensor (`x.mT`)."""
    return (
        node.op == "call_function"
        and node.target is builtins.getattr
        and len(node.args) > 1
        and node.args[1] in TENSOR_ATTRIBUTES
    )


def handler_for(node: fx.Node, gm: fx.GraphModule, table: Mapping[Any, Handler]) -> Handler | None:
    """The handler for `node`, or None if the table has none.

    An attribute read that gives a tensor (`x.T`, `x.mT`) is looked up by the attribute's
    name, like the method of that name; other attribute reads (`x.shape`) by `getattr`.
    """
    if is_tensor_attribute(node):
        return table.get(node.args[1])
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        for kind in type(module).__mro__:  # a subclass of a known layer shares its handler,
            if kind in table:  # unless it overrides forward
                if kind is not type(module) and type(module).forward is not kind.forward:
                    return None
                return table[kind]
        return None
    if node.op == "call_method":
        return table.get(node.target)
    if node.op == "call_function":
        try:
            handler = table.get(node.target)
        except TypeError:  # unhashable target
            return None
        if handler is None and isinstance(node.target, torch._ops.OpOverload):
            handler = table.get(node.target.overloadpacket)  # aten.x.overload -> aten.x
        if handler is None:
            name = (
                f"{getattr(node.target, '__module__', '')}.{getattr(node.target, '__name__', '')}"
            )
            handler = table.get(name)
        return handler
    return None
