r"""Float64 matrix-form references of the LRP rules, for the tests.

Every affine layer is a matrix: with $a$ the flattened input of one sample,
$z = W a + b$. `dense_form` reads $W$ (out x in) and $b$ off the layer's Jacobian, so the
references never look at how a convolution is computed. Each rule is then written from
its paper formula over the contribution matrix $c_{ji} = a_i W_{ji}$ (output $j$, input
$i$), in the classic "share of the denominator" form

$$ R_i = \sum_j \frac{Z_{ji}}{\mathrm{st}\big(\sum_{i'} Z_{ji'} + \beta_j\big)} R_j,
   \qquad \mathrm{st}(z) = z + \epsilon\,\mathrm{sign}(z),\ \mathrm{sign}(0) = +1, $$

with a rule-specific $Z$ and $\beta$ (`share`). None of this calls lrpfn; it is a second,
independent implementation: plain tensors of shape (batch, out, in), no transposed ops.

Padding modes other than zeros ("reflect", "circular", "replicate") are a copy of input
values followed by a zero-padded convolution. lrpfn (like zennit, which modifies the
weights of the module whose forward pads) applies the rule to the convolution over the
padded input and routes relevance back through the copy, summing over duplicates. The
reference does the same: `DenseForm.route` is the (padded x input) 0/1 matrix of the
padding, $W$ is the convolution's matrix on the padded input. (Sign-split rules on the
merged matrix $W \cdot \text{route}$ would differ: $(W_1 + W_2)^+ \ne W_1^+ + W_2^+$.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DenseForm",
    "affine_matrix",
    "alpha_beta",
    "dense_form",
    "epsilon",
    "flat",
    "gamma",
    "gradient",
    "share",
    "wsquare",
    "zbox",
]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def affine_matrix(function: Callable[[Tensor], Tensor], sample: Tensor) -> tuple[Tensor, Tensor]:
    """$(W, b)$ of an affine `function` of one sample (shape `(1, *input_shape)`).

    $W$ is the Jacobian of the flattened output with respect to the flattened input at
    `sample` (the same everywhere, the function being affine); $b = f(0)$.
    """
    shape = sample.shape

    def flatten(v: Tensor) -> Tensor:
        return function(v.reshape(shape)).reshape(-1)

    weight = torch.func.jacrev(flatten)(sample.reshape(-1))
    bias = flatten(torch.zeros_like(sample).reshape(-1))
    return weight.detach(), bias.detach()


@dataclass(frozen=True)
class DenseForm:
    """A layer as matrices: $z = W\\,(\\text{route}\\; a) + b$ for a flattened input $a$.

    Attributes:
        weight: $W$, shape (out, layer input).
        bias: $b$, shape (out,) (zeros for a layer without bias).
        route: the 0/1 copy matrix (layer input, input) of a non-zero padding mode, or None.
    """

    weight: Tensor
    bias: Tensor
    route: Tensor | None = None

    def lift(self, t: Tensor) -> Tensor:
        """An input-space tensor (rows, in) as seen by $W$: (rows, layer input)."""
        return t if self.route is None else t @ self.route.T

    def explain(self, rule: Callable[..., Tensor], x: Tensor, relevance: Tensor) -> Tensor:
        """Input relevance, shaped like `x`, of `rule(a, W, b, R)` for a batch `x`."""
        a = self.lift(x.flatten(1))
        result = rule(a, self.weight, self.bias, relevance.flatten(1))
        if self.route is not None:  # relevance of every copy goes back to its source
            result = result @ self.route
        return result.reshape(x.shape)


def dense_form(layer: nn.Module, sample: Tensor) -> DenseForm:
    """The `DenseForm` of a linear `layer` (Linear, ConvNd, ConvTransposeNd, pooling)."""
    mode = getattr(layer, "padding_mode", "zeros")
    if mode == "zeros":
        return DenseForm(*affine_matrix(layer, sample))
    pads = tuple(p for size in reversed(layer.padding) for p in (size, size))

    def pad(t: Tensor) -> Tensor:
        return F.pad(t, pads, mode=mode)

    def convolve(t: Tensor) -> Tensor:
        conv = _CONV[layer.weight.ndim - 2]
        return conv(t, layer.weight, layer.bias, layer.stride, 0, layer.dilation, layer.groups)

    route, _ = affine_matrix(pad, sample)
    weight, bias = affine_matrix(convolve, pad(sample))
    return DenseForm(weight, bias, route)


# --- the rules, from their paper formulas -------------------------------------------------


def _positive(t: Tensor) -> Tensor:
    return t.clamp(min=0)


def _negative(t: Tensor) -> Tensor:
    return t.clamp(max=0)


def _contributions(a: Tensor, weight: Tensor) -> Tensor:
    """$c_{bji} = a_{bi} W_{ji}$, shape (batch, out, in)."""
    return a[:, None, :] * weight[None, :, :]


def share(
    Z: Tensor, beta: Tensor, relevance: Tensor, stabilizer: float, mask: Tensor | None = None
) -> Tensor:
    r"""$R_i = \sum_j m_j Z_{ji} R_j / \mathrm{st}(\sum_{i'} Z_{ji'} + \beta_j)$; a zero
    denominator (possible only with $\epsilon = 0$) passes nothing."""
    z = Z.sum(-1) + beta
    # z + eps sign(z) in z's float64 (a tensor made from the Python float eps alone would be
    # float32, rounding eps = 0.1 to 0.10000000149)
    denominator = torch.where(z >= 0, z + stabilizer, z - stabilizer)
    zero = denominator == 0
    s = torch.where(zero, 0.0, relevance / torch.where(zero, 1.0, denominator))
    if mask is not None:
        s = s * mask
    return (Z * s[:, :, None]).sum(1)


def epsilon(a: Tensor, weight: Tensor, bias: Tensor, relevance: Tensor, *, eps: float) -> Tensor:
    """LRP-epsilon (Bach et al. 2015, Eq. 58): $Z = c$, $\\beta = b$."""
    return share(_contributions(a, weight), bias, relevance, eps)


def gamma(
    a: Tensor, weight: Tensor, bias: Tensor, relevance: Tensor, *, g: float, stabilizer: float
) -> Tensor:
    r"""Generalized LRP-gamma (Montavon et al. 2019; Andéol et al. 2021), contribution form:
    outputs $z_j > 0$ share $Z = c + \gamma c^+$, $\beta = b + \gamma b^+$; outputs
    $z_j < 0$ share $Z = c + \gamma c^-$, $\beta = b + \gamma b^-$; $z_j = 0$ passes nothing.
    (For $a \ge 0$: $c + \gamma c^+ = a (W + \gamma W^+)$, the original rule.)"""
    c = _contributions(a, weight)
    z = c.sum(-1) + bias
    up = share(c + g * _positive(c), bias + g * _positive(bias), relevance, stabilizer, z > 0)
    down = share(c + g * _negative(c), bias + g * _negative(bias), relevance, stabilizer, z < 0)
    return up + down


def alpha_beta(
    a: Tensor,
    weight: Tensor,
    bias: Tensor,
    relevance: Tensor,
    *,
    alpha: float,
    beta: float,
    stabilizer: float,
    ignore_bias: bool = False,
) -> Tensor:
    r"""LRP-alpha-beta (Bach et al. 2015, Eq. 60): $\alpha$ times the share of the positive
    contributions $c^+$ (with $b^+$) minus $\beta$ times that of the negative ones $c^-$
    (with $b^-$). ZPlus is $\alpha = 1, \beta = 0$."""
    c = _contributions(a, weight)
    b = torch.zeros_like(bias) if ignore_bias else bias
    result = alpha * share(_positive(c), _positive(b), relevance, stabilizer)
    if beta:
        result = result - beta * share(_negative(c), _negative(b), relevance, stabilizer)
    return result


def zbox(
    a: Tensor,
    weight: Tensor,
    bias: Tensor,
    relevance: Tensor,
    *,
    low: Tensor,
    high: Tensor,
    stabilizer: float,
) -> Tensor:
    r"""LRP-$z^{\mathcal{B}}$ (Montavon et al. 2017, Sec. 5.2):
    $Z_{ji} = a_i W_{ji} - l_i W^+_{ji} - h_i W^-_{ji}$; the bias enters as
    $b - b^+ - b^- = 0$. `low`, `high`: (1 or batch, layer input)."""
    Z = (
        _contributions(a, weight)
        - _contributions(low.expand_as(a), _positive(weight))
        - _contributions(high.expand_as(a), _negative(weight))
    )
    return share(Z, bias - _positive(bias) - _negative(bias), relevance, stabilizer)


def flat(
    a: Tensor,
    weight: Tensor,
    bias: Tensor,
    relevance: Tensor,
    *,
    stabilizer: float,
    parameter_free: bool = False,
) -> Tensor:
    r"""LRP-flat (Lapuschkin et al. 2019): every input $i$ connected to output $j$
    ($W_{ji} \ne 0$; random weights are never exactly zero) gets an equal share, no bias:
    $Z_{ji} = [W_{ji} \ne 0]$.

    `parameter_free`: for pooling, whose only parameter is an implicit scalar weight of
    one times the operator (the convention of lrpfn and zennit), setting the parameters
    to one leaves the operator itself: $Z = W$. Within one output the shares are the same
    as above (the pooling weights of one window are equal); only the size of the
    denominator relative to the stabilizer differs ($z_j = 1$ rather than the window size).
    """
    Z = weight if parameter_free else (weight != 0).to(weight.dtype)
    return share(Z.expand(a.shape[0], *weight.shape), torch.zeros_like(bias), relevance, stabilizer)


def wsquare(
    a: Tensor,
    weight: Tensor,
    bias: Tensor,
    relevance: Tensor,
    *,
    stabilizer: float,
    parameter_free: bool = False,
) -> Tensor:
    r"""LRP-$w^2$ (Montavon et al. 2017, Sec. 5.1): $Z_{ji} = W_{ji}^2$, no bias.

    `parameter_free`: for pooling the implicit scalar weight is squared ($1^2 = 1$), so
    $Z = W$ as for `flat` (same shares, denominator of size 1 rather than $1/k$)."""
    Z = weight if parameter_free else weight.square()
    return share(Z.expand(a.shape[0], *weight.shape), torch.zeros_like(bias), relevance, stabilizer)


def gradient(a: Tensor, weight: Tensor, bias: Tensor, relevance: Tensor) -> Tensor:
    """The vector-Jacobian product $R^\\top W$."""
    return relevance @ weight
