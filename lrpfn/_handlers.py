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

The handlers of the ops every CNN uses are keyed in `lrpfn._families.core`; each further
op family (normalizations, attention, resampling, ...) keeps its handlers in its own module
of `lrpfn._families`, which merges them all into the one table `lrpfn.HANDLERS`. A table is
keyed by module type (for `call_module` nodes), by function or its qualified name
`"module.function"` (for `call_function`) and by method name (for `call_method`).
`handler_for(node, gm, table)` looks a node up.
"""

from __future__ import annotations

import builtins
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from .layers import ChannelAffine, Convolution, Dense, Layer, LinearFunction, Normalization, Sum
from .rules._base import Activations, stabilized_divide
from .rules._lrp import Epsilon

__all__ = [
    "Handler",
    "Step",
    "convolution_handler",
    "handler_for",
    "linear_handler",
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
    dim = _arg(step, 1, "dim", step.kwargs.get("axis", 0))
    if not isinstance(parts, (list, tuple)) or any(value.ndim == 0 for value in values):
        return _route(step)
    if any(value.ndim != values[0].ndim for value in values):  # legacy empty 1-d parts
        return _route(step)
    pieces = step.relevance.split([value.shape[dim] for value in values], dim)
    pieces = [piece.contiguous() for piece in pieces]
    data = set(step.input_nodes)
    return tuple(piece for part, piece in zip(parts, pieces, strict=True) if part in data)


_LOW_PRECISION = (torch.float16, torch.bfloat16)


def apply_rule(rule: Any, layer: Layer, activations: Activations, relevance: Tensor) -> Tensor:
    """`rule(layer, activations, relevance)`; 16-bit inputs compute in float32.

    In float16 the stabilized ratio $R / (z \\pm \\epsilon)$ overflows (max 65504) where
    $z = 0$, and $\\infty \\cdot 0$ makes NaN; float32 keeps the step finite. The result
    is cast back to the input's dtype. (The traversal also scales each sample's initial
    relevance by a power of two, see `_api`, so float32 ratios stay in range.)
    """
    dtype = activations.input.dtype
    if dtype not in _LOW_PRECISION:
        return rule(layer, activations, relevance)
    layer = replace(
        layer,
        weight=layer.weight.float(),
        bias=None if layer.bias is None else layer.bias.float(),
    )
    activations = activations._replace(
        input=activations.input.float(), output=activations.output.float()
    )
    return rule(layer, activations, relevance.float()).to(dtype)


def _linear(build: Callable[[Step], Layer]) -> Callable[[Step], tuple]:
    def backward(step: Step) -> tuple:
        layer = build(step)
        a = step.inputs[0]
        activations = Activations(
            a, step.output, step.input_nonnegative[0], step.zero_where_nonpositive
        )
        return (apply_rule(step.rule, layer, activations, step.relevance),)

    return backward


def linear_handler(
    build: Callable[[Step], Layer], rule: str = "required", nonnegative: str | None = None
) -> Handler:
    """A handler for an affine op: `build(step)` makes its `Layer`, the node's rule explains it."""
    return Handler("linear", _linear(build), rule=rule, nonnegative=nonnegative)


def _arg(step: Step, index: int, name: str, default: Any = None) -> Any:
    if len(step.args) > index:
        return step.args[index]
    return step.kwargs.get(name, default)


def _tuple(value: Any, dims: int) -> tuple[int, ...]:
    if isinstance(value, str):
        return value
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims


def _dense_layer(step: Step) -> Layer:
    return Layer(Dense(), step.args[1], _arg(step, 2, "bias"), step.node.name)


def _convolution_layer(dims: int, transposed: bool) -> Callable[[Step], Layer]:
    def build(step: Step) -> Layer:
        weight = step.args[1]
        if transposed:  # (input, weight, bias, stride, padding, output_padding, groups, dilation)
            op = Convolution(
                dims,
                _tuple(_arg(step, 3, "stride", 1), dims),
                _tuple(_arg(step, 4, "padding", 0), dims),
                _tuple(_arg(step, 7, "dilation", 1), dims),
                _arg(step, 6, "groups", 1),
                True,
                _tuple(_arg(step, 5, "output_padding", 0), dims),
            )
        else:  # (input, weight, bias, stride, padding, dilation, groups)
            padding = _arg(step, 4, "padding", 0)
            op = Convolution(
                dims,
                _tuple(_arg(step, 3, "stride", 1), dims),
                "same" if padding == "same" else _tuple(0 if padding == "valid" else padding, dims),
                _tuple(_arg(step, 5, "dilation", 1), dims),
                _arg(step, 6, "groups", 1),
            )
        return Layer(op, weight, _arg(step, 2, "bias"), step.node.name)

    return build


def _padded_convolution_layer(step: Step) -> Layer:
    weight, bias = step.args[1], _arg(step, 2, "bias")
    stride, dilation, groups = step.kwargs["stride"], step.kwargs["dilation"], step.kwargs["groups"]
    padding, mode = step.kwargs["padding"], step.kwargs["padding_mode"]
    dims = weight.ndim - 2
    op = Convolution(
        dims, tuple(stride), (0,) * dims, tuple(dilation), groups,
        padding_mode=mode, mode_padding=tuple(padding),
    )  # fmt: skip
    return Layer(op, weight, bias, step.node.name)


def _channel_affine_layer(step: Step) -> Layer:
    x, scale, shift = step.args
    return Layer(ChannelAffine(x.ndim - 2), scale, shift, step.node.name)


def _layer_norm_layer(step: Step) -> Layer:
    r"""`F.layer_norm(x, shape, weight, bias, eps)` with $\sigma$ from the forward pass."""
    x, shape = step.args[0], _arg(step, 1, "normalized_shape")
    weight, bias = _arg(step, 2, "weight"), _arg(step, 3, "bias")
    eps = _arg(step, 4, "eps", 1e-5)
    axes = tuple(range(-len(shape), 0))
    inverse_std = torch.rsqrt(x.var(axes, unbiased=False, keepdim=True) + eps)
    if weight is None:
        weight = torch.ones(shape, dtype=x.dtype, device=x.device)
    return Layer(Normalization(len(shape), inverse_std), weight, bias, step.node.name)


def _unit_weight(step: Step) -> Tensor:
    return torch.ones((), dtype=step.output.dtype, device=step.output.device)


def _function_layer(step: Step) -> Layer:
    """A parameter-free linear op (pooling, mean): the node's own call with unit weight."""
    return Layer(LinearFunction(step.call), _unit_weight(step), None, step.node.name, False)


_SIGNS = {operator.add: (1, 1), torch.add: (1, 1), operator.sub: (1, -1), torch.sub: (1, -1)}


def _sum(step: Step) -> tuple:
    """$z = \\sum_i \\sigma_i x_i + c$: the data inputs stacked on a trailing axis, the
    constant operands as the bias; the rule splits relevance between the inputs.

    For `Epsilon` (the default rule of sums) nothing is stacked: with
    $s = R / \\mathrm{st}(z)$ from the forward's $z$, each input gets
    $R_i = (s\\,\\sigma_i) \\odot x_i$, the generic step's values op for op.
    """
    signs = _SIGNS.get(step.node.target, (1, 1))
    operands = step.args[:2]
    alpha = step.kwargs.get("alpha", 1)
    signs = (signs[0], signs[1] * alpha)
    data_index = set(step.data_positions)
    shape, out = step.output.shape, step.output
    data_signs = [signs[i] for i in sorted(data_index)]
    weight = torch.tensor(data_signs, dtype=out.dtype, device=out.device)
    if type(step.rule) is Epsilon:
        epsilon = step.rule.epsilon
        return _epsilon_sum(epsilon, step.inputs, out, data_signs, weight, step.relevance)
    stacked = torch.stack([operand.expand(shape) for operand in step.inputs], dim=-1)
    bias = None
    for index, operand in enumerate(operands):
        if index not in data_index:
            bias = signs[index] * torch.as_tensor(operand, dtype=out.dtype, device=out.device)
    layer = Layer(Sum(), weight, bias, step.node.name, False)
    activations = Activations(stacked, out, all(step.input_nonnegative))
    relevance = apply_rule(step.rule, layer, activations, step.relevance)
    return tuple(
        r.sum_to_size(x.shape) for r, x in zip(relevance.unbind(-1), step.inputs, strict=True)
    )


def _epsilon_sum(
    epsilon: float, inputs: tuple, z: Tensor, signs: list, weight: Tensor, relevance: Tensor
) -> tuple:
    """`Epsilon` on a sum $z = \\sum_i w_i x_i + c$ without stacking its inputs:
    $R_i = (s\\, w_i) \\odot x_i$ summed to $x_i$'s shape, $s = R / \\mathrm{st}(z)$
    (16-bit inputs compute in float32 and are cast back, as in `apply_rule`)."""
    dtype = z.dtype
    low = dtype in _LOW_PRECISION
    if low:
        z, weight, relevance = z.float(), weight.float(), relevance.float()
    s = stabilized_divide(relevance, z, epsilon)
    result = []
    for index, x in enumerate(inputs):
        scaled = s if signs[index] == 1 else s * weight[index]  # s * 1 is s: skip the pass
        r = scaled * (x.float() if low else x)
        result.append(r.to(dtype).sum_to_size(x.shape))
    return tuple(result)


def _product(step: Step) -> tuple:
    """A product with one data input scales it by a constant: relevance passes (summed
    over broadcast axes). A product of two data tensors is a gate: the node's rule decides."""
    if len(step.inputs) == 1:
        if step.node.target in (operator.truediv, torch.div) and step.data_positions[0] != 0:
            raise NotImplementedError(
                "a constant divided by a tensor is not linear in the tensor; no relevance rule"
            )
        return (step.relevance.sum_to_size(step.inputs[0].shape),)
    gate_like = tuple(_is_gate(node) for node in step.input_nodes)
    return step.rule(step.inputs, step.output, step.relevance, gate_like)


_GATES = {torch.sigmoid, F.sigmoid, F.hardsigmoid, torch.softmax, F.softmax, "sigmoid", "softmax"}


def _is_gate(node: fx.Node) -> bool:
    if node.op == "call_module":
        return type(node.graph.owning_module.get_submodule(node.target)) in (
            nn.Sigmoid,
            nn.Hardsigmoid,
            nn.Softmax,
        )
    return node.target in _GATES


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
DENSE = Handler("linear", _linear(_dense_layer), rule="required")
CHANNEL_AFFINE = Handler("linear", _linear(_channel_affine_layer), rule="required")
LAYER_NORM = Handler("linear", _linear(_layer_norm_layer), rule="required")
POOL = Handler("linear", _linear(_function_layer), rule="default", nonnegative="preserves")
SUM = Handler("sum", _sum, rule="default", nonnegative="preserves")
PRODUCT = Handler("product", _product, rule="product")


def convolution_handler(dims: int, transposed: bool) -> Handler:
    """The handler of `F.conv{dims}d` (or `F.conv_transpose{dims}d` when `transposed`)."""
    return linear_handler(_convolution_layer(dims, transposed))


PADDED_CONVOLUTION = linear_handler(_padded_convolution_layer)


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
