"""The handler kinds that apply a rule: linear layers, sums and products.

A linear handler builds the node's `layers.Layer` record from the step (the functional op
with its static arguments, weight and bias) and applies the node's rule to it; `SUM`
explains additions and subtractions of several tensors (residual connections) as a
linear node whose inputs are stacked on a trailing axis; `PRODUCT` explains elementwise
products (a constant scale passes relevance; a gate of two tensors is handled by the
node's product rule).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ..layers import ChannelAffine, Convolution, Dense, Layer, LinearFunction, Normalization, Sum
from ..rules import Activations, Epsilon, stabilized_divide
from .handler import Handler, Step, argument

__all__ = [
    "CHANNEL_AFFINE",
    "DENSE",
    "LAYER_NORM",
    "PADDED_CONVOLUTION",
    "POOL",
    "PRODUCT",
    "SUM",
    "apply_rule",
    "convolution_handler",
    "foldable_layer",
    "linear_handler",
    "sum_signs",
]


_LOW_PRECISION = (torch.float16, torch.bfloat16)


def apply_rule(rule: Any, layer: Layer, activations: Activations, relevance: Tensor) -> Tensor:
    """`rule(layer, activations, relevance)`; 16-bit inputs compute in float32.

    In float16 the stabilized ratio $R / (z \\pm \\epsilon)$ overflows (max 65504) where
    $z = 0$, and $\\infty \\cdot 0$ makes NaN; float32 keeps the step finite. The result
    is cast back to the input's dtype. (The traversal also scales each sample's initial
    relevance by a power of two, see `engine.relevance`, so float32 ratios stay in range.)
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


@dataclass(frozen=True)
class _RuleStep:
    """A linear handler's backward: `build(step)` makes the `Layer`, the rule explains it.
    `foldable`: a convolution, dense or channel-affine layer, whose transpose reads only
    the input's shape (the folded walk, `engine.folding`, may run it from the forward's
    values)."""

    build: Callable[[Step], Layer]
    foldable: bool = False

    def __call__(self, step: Step) -> tuple:
        layer = self.build(step)
        a = step.inputs[0]
        activations = Activations(
            a, step.output, step.input_nonnegative[0], step.zero_where_nonpositive
        )
        return (apply_rule(step.rule, layer, activations, step.relevance),)


def _linear(build: Callable[[Step], Layer], foldable: bool = False) -> Callable[[Step], tuple]:
    return _RuleStep(build, foldable)


def foldable_layer(handler: Handler) -> Callable[[Step], Layer] | None:
    """The `Layer` builder of a convolution, dense or channel-affine handler (whose
    transposed op needs only the input's shape), else None."""
    backward = handler.backward
    return backward.build if isinstance(backward, _RuleStep) and backward.foldable else None


def linear_handler(
    build: Callable[[Step], Layer], rule: str = "required", nonnegative: str | None = None
) -> Handler:
    """A handler for an affine op: `build(step)` makes its `Layer`, the node's rule explains it."""
    return Handler("linear", _linear(build), rule=rule, nonnegative=nonnegative)


def _tuple(value: Any, dims: int) -> tuple[int, ...]:
    if isinstance(value, str):
        return value
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims


def _dense_layer(step: Step) -> Layer:
    return Layer(Dense(), step.args[1], argument(step, 2, "bias"), step.node.name)


def _convolution_layer(dims: int, transposed: bool) -> Callable[[Step], Layer]:
    def build(step: Step) -> Layer:
        weight = step.args[1]
        if transposed:  # (input, weight, bias, stride, padding, output_padding, groups, dilation)
            op = Convolution(
                dims,
                _tuple(argument(step, 3, "stride", 1), dims),
                _tuple(argument(step, 4, "padding", 0), dims),
                _tuple(argument(step, 7, "dilation", 1), dims),
                argument(step, 6, "groups", 1),
                True,
                _tuple(argument(step, 5, "output_padding", 0), dims),
            )
        else:  # (input, weight, bias, stride, padding, dilation, groups)
            padding = argument(step, 4, "padding", 0)
            op = Convolution(
                dims,
                _tuple(argument(step, 3, "stride", 1), dims),
                "same" if padding == "same" else _tuple(0 if padding == "valid" else padding, dims),
                _tuple(argument(step, 5, "dilation", 1), dims),
                argument(step, 6, "groups", 1),
            )
        return Layer(op, weight, argument(step, 2, "bias"), step.node.name)

    return build


def _padded_convolution_layer(step: Step) -> Layer:
    weight, bias = step.args[1], argument(step, 2, "bias")
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
    x, shape = step.args[0], argument(step, 1, "normalized_shape")
    weight, bias = argument(step, 2, "weight"), argument(step, 3, "bias")
    eps = argument(step, 4, "eps", 1e-5)
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


def sum_signs(node: fx.Node, data_positions: tuple[int, ...]) -> list[float]:
    """The sign of each data operand of a sum node (`a - b`, `torch.add(a, b, alpha=k)`)."""
    signs = _SIGNS.get(node.target, (1, 1))
    signs = (signs[0], signs[1] * node.kwargs.get("alpha", 1))
    return [signs[i] for i in sorted(set(data_positions))]


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


DENSE = Handler("linear", _linear(_dense_layer, foldable=True), rule="required")


CHANNEL_AFFINE = Handler("linear", _linear(_channel_affine_layer, foldable=True), rule="required")


LAYER_NORM = Handler("linear", _linear(_layer_norm_layer), rule="required")


POOL = Handler("linear", _linear(_function_layer), rule="default", nonnegative="preserves")


SUM = Handler("sum", _sum, rule="default", nonnegative="preserves")


PRODUCT = Handler("product", _product, rule="product")


def convolution_handler(dims: int, transposed: bool) -> Handler:
    """The handler of `F.conv{dims}d` (or `F.conv_transpose{dims}d` when `transposed`)."""
    return Handler("linear", _linear(_convolution_layer(dims, transposed), True), rule="required")


PADDED_CONVOLUTION = linear_handler(_padded_convolution_layer)
