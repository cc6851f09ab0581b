r"""Immutable records of the linear layers that rules act on.

A rule never sees a module. It sees a `Layer`: the layer's functional op (an `AffineOp`
holding the static arguments: stride, padding, ...) and its parameter tensors. Every op is
affine in its input $x$ and linear in its parameters:

$$ z = f(x; W, b), \qquad f^\top(s; W) = \frac{\partial \langle s, f(x; W, b)\rangle}{\partial x} $$

`forward` computes $f$ with any (modified) parameters; `transpose` computes the
vector-Jacobian product $f^\top$ with the op's transposed form (a matrix product for
dense layers, `convolution_backward` for convolutions), so that the backward pass never
re-runs the layer's forward.

Parameter-free linear ops (pooling, sums, means) carry a scalar weight of one and no bias,
so a rule's parameter modifications apply to them too: their implicit weights are
non-negative, so $W^+ = W$ and $W^- = 0$.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "AffineOp",
    "ChannelAffine",
    "Convolution",
    "Dense",
    "ElementwiseAffine",
    "GroupNormalization",
    "Layer",
    "LinearFunction",
    "Normalization",
    "SpatialMatrix",
    "Sum",
]


class AffineOp:
    """An affine op $z = f(x; W, b)$ with its transposed (vector-Jacobian) form.

    `forward` and `transpose` return fresh tensors that alias no argument: rules write
    their products into them in place.
    """

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        raise NotImplementedError

    def transpose(self, s: Tensor, x: Tensor, weight: Tensor) -> Tensor:
        """$\\partial \\langle s, f(x; W)\\rangle / \\partial x$; `x` gives only the shape."""
        raise NotImplementedError


@dataclass(frozen=True)
class Dense(AffineOp):
    """`F.linear`: $z = x W^\\top + b$; $f^\\top(s) = s W$."""

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(x, weight, bias)

    def transpose(self, s: Tensor, x: Tensor, weight: Tensor) -> Tensor:
        return s @ weight


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@dataclass(frozen=True)
class Convolution(AffineOp):
    """`F.convNd` or `F.conv_transposeNd` with any stride, padding, dilation and groups.

    The transpose is `aten.convolution_backward` with only the input gradient requested:
    one op for every dimension, transposed or not.
    """

    dims: int
    stride: tuple[int, ...]
    padding: tuple[int, ...] | str
    dilation: tuple[int, ...]
    groups: int = 1
    transposed: bool = False
    output_padding: tuple[int, ...] = ()
    padding_mode: str = "zeros"
    mode_padding: tuple[int, ...] = ()  # for other padding modes: `F.pad`'s padding

    def _pad(self, x: Tensor) -> Tensor:
        return F.pad(x, self.mode_padding, mode=self.padding_mode)

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.padding_mode != "zeros":
            x = self._pad(x)
        if self.transposed:
            return _CONV_T[self.dims](
                x,
                weight,
                bias,
                self.stride,
                self.padding,
                self.output_padding,
                self.groups,
                self.dilation,
            )
        return _CONV[self.dims](
            x, weight, bias, self.stride, self.padding, self.dilation, self.groups
        )

    def transpose(self, s: Tensor, x: Tensor, weight: Tensor) -> Tensor:
        if isinstance(self.padding, str):  # "same": asymmetric padding, use the generic VJP
            return torch.func.vjp(lambda inp: self.forward(inp, weight, None), x)[1](s)[0]
        if self.padding_mode != "zeros":  # the convolution's transpose, then the padding's
            padded, unpad = torch.func.vjp(self._pad, x)
            return unpad(self._convolution_transpose(s, padded, weight))[0]
        return self._convolution_transpose(s, x, weight)

    def _convolution_transpose(self, s: Tensor, x: Tensor, weight: Tensor) -> Tensor:
        unbatched = x.ndim == weight.ndim - 1  # also the per-sample view inside vmap
        if unbatched:
            s, x = s.unsqueeze(0), x.unsqueeze(0)
        output_padding = self.output_padding or (0,) * self.dims
        grad = torch.ops.aten.convolution_backward(
            s,
            x,
            weight,
            None,
            list(self.stride),
            list(self.padding),
            list(self.dilation),
            self.transposed,
            list(output_padding),
            self.groups,
            (True, False, False),
        )[0]
        return grad.squeeze(0) if unbatched else grad


@dataclass(frozen=True)
class ChannelAffine(AffineOp):
    """A per-channel scale and shift (a BatchNorm that could not be folded):
    $z_c = x_c w_c + b_c$; $f^\\top(s)_c = s_c w_c$."""

    spatial_dims: int

    def _view(self, t: Tensor) -> Tensor:
        return t.reshape(-1, *([1] * self.spatial_dims)) if t.ndim else t

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        z = x * self._view(weight)
        return z if bias is None else z + self._view(bias)

    def transpose(self, s: Tensor, x: Tensor, weight: Tensor) -> Tensor:
        return s * self._view(weight)


@dataclass(frozen=True)
class Sum(AffineOp):
    """The sum of $k$ inputs stacked on a trailing axis: $z = \\sum_i x_{\\ldots i} w + b$.

    Residual additions use it; the weight is the scalar one (or a tensor broadcasting
    against the stacked inputs, e.g. $(1, -1)$ for a subtraction).
    """

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        z = (x * weight).sum(-1)
        return z if bias is None else z + bias

    def transpose(self, s: Tensor, x: Tensor, weight: Tensor) -> Tensor:
        return s.unsqueeze(-1) * weight


@dataclass(frozen=True)
class LinearFunction(AffineOp):
    """A parameter-free linear function (average pooling, mean, sum over axes) times a
    scalar weight: $z = g(x) w$; the transpose is the VJP of $g$ (exact, since $g$ is linear).
    """

    function: Callable[..., Tensor]
    kwargs: tuple[tuple[str, Any], ...] = field(default=())

    def _g(self, x: Tensor) -> Tensor:
        return self.function(x, **dict(self.kwargs))

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        z = self._g(x) * weight
        return z if bias is None else z + bias

    def transpose(self, s: Tensor, x: Tensor, weight: Tensor) -> Tensor:
        # a fresh, non-overlapping tensor (the VJP of a sum is an expanded view of s): rules
        # multiply it by the input in place
        return torch.func.vjp(self._g, x)[1](s * weight)[0].contiguous()


@dataclass(frozen=True, eq=False)
class Normalization(AffineOp):
    """A layer norm with its scale held constant (the "LN-rule" of Ali et al. 2022):
    $z = (x - \bar{x})\\, \\sigma^{-1} w + b$ over the last `dims` axes, with $\\sigma^{-1}$
    taken from the forward pass. Then $z$ is affine in $x$ and
    $f^\top(s) = t - \bar{t}$ with $t = s\\, w\\, \\sigma^{-1}$ (the centering is symmetric).

    Reference: Ali et al. 2022, "XAI for transformers: better explanations through
    conservative propagation", ICML.
    """

    dims: int
    inverse_std: Tensor

    def _axes(self) -> tuple[int, ...]:
        return tuple(range(-self.dims, 0))

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        centered = x - x.mean(self._axes(), keepdim=True)
        z = centered * self.inverse_std * weight
        return z if bias is None else z + bias

    def transpose(self, s: Tensor, x: Tensor, weight: Tensor) -> Tensor:
        t = s * weight * self.inverse_std
        return t - t.mean(self._axes(), keepdim=True)


@dataclass(frozen=True, eq=False)
class GroupNormalization(AffineOp):
    r"""A group norm with its scale held constant (the LN-rule applied per group):
    $z = (x - \bar{x}_g)\, \sigma_g^{-1} w_c + b_c$, where the channels of `x` (axis 1)
    form `groups` groups and $\bar{x}_g$, $\sigma_g$ are each sample's mean and standard
    deviation over its group's channels and positions, $\sigma_g^{-1}$ (`inverse_std`,
    shape `(batch, groups, 1)`) taken from the forward pass. Then $z$ is affine in $x$ and
    $f^\top(s) = t - \bar{t}_g$ with $t = s\, w\, \sigma_g^{-1}$.

    Reference: Ali et al. 2022, "XAI for transformers: better explanations through
    conservative propagation", ICML (the LN-rule; group norm is layer norm per group).
    """

    groups: int
    inverse_std: Tensor

    def _grouped(self, t: Tensor) -> Tensor:
        return t.reshape(t.shape[0], self.groups, -1)

    def _channels(self, t: Tensor, like: Tensor) -> Tensor:
        return t.reshape(-1, *([1] * (like.ndim - 2))) if t.ndim else t

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        grouped = self._grouped(x)
        normed = (grouped - grouped.mean(-1, keepdim=True)) * self.inverse_std
        z = normed.reshape(x.shape) * self._channels(weight, x)
        return z if bias is None else z + self._channels(bias, x)

    def transpose(self, s: Tensor, x: Tensor, weight: Tensor) -> Tensor:
        t = self._grouped(s * self._channels(weight, s)) * self.inverse_std
        return (t - t.mean(-1, keepdim=True)).reshape(s.shape)


@dataclass(frozen=True)
class ElementwiseAffine(AffineOp):
    r"""An elementwise scale and shift broadcast against the input, $z = x \odot w + b$
    (`torch.addcmul(b, w, x)`, ResMLP's affine layer); $f^\top(s) = s \odot w$ summed
    over the axes along which `x` was broadcast."""

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        z = x * weight
        return z if bias is None else z + bias

    def transpose(self, s: Tensor, x: Tensor, weight: Tensor) -> Tensor:
        return (s * weight).sum_to_size(x.shape)


@dataclass(frozen=True)
class SpatialMatrix(AffineOp):
    """A linear map of the last `dims` axes given as a matrix `weight` of shape
    `(outputs, inputs)` over those axes flattened: $z = x W^\top$ per leading index
    (bicubic resampling, whose weights take both signs, so the sign-split rules need them
    explicitly); $f^\top(s) = s W$."""

    dims: int
    output_shape: tuple[int, ...]

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        z = (x.flatten(-self.dims) @ weight.T).unflatten(-1, self.output_shape)
        return z if bias is None else z + bias

    def transpose(self, s: Tensor, x: Tensor, weight: Tensor) -> Tensor:
        return (s.flatten(-self.dims) @ weight).reshape(x.shape)


@dataclass(frozen=True)
class Layer:
    """What a rule sees of a graph node: its affine op and its parameters.

    Attributes:
        op: the functional op with its static arguments.
        weight: the weight tensor (a scalar one for parameter-free ops).
        bias: the bias tensor, or None.
        name: the graph node's name (for error messages).
        has_parameters: False for parameter-free ops (pooling, sums).
    """

    op: AffineOp
    weight: Tensor
    bias: Tensor | None = None
    name: str = ""
    has_parameters: bool = True

    def forward(self, x: Tensor, weight: Tensor | None = None, bias: Any = "same") -> Tensor:
        """$f(x; W', b')$; parameters default to the layer's own."""
        weight = self.weight if weight is None else weight
        bias = self.bias if isinstance(bias, str) else bias
        return self.op.forward(x, weight, bias)

    def transpose(self, s: Tensor, x: Tensor, weight: Tensor | None = None) -> Tensor:
        """$f^\\top(s; W')$, shaped like `x`."""
        return self.op.transpose(s, x, self.weight if weight is None else weight)
