r"""The LRP rules of the literature, each a few lines over the generic step.

Notation (in every docstring): $a$ the layer input, $W, b$ its parameters, $z = f(a; W, b)$
its output, $R$ the relevance arriving at the output, $x^+ = \max(x, 0)$ and
$x^- = \min(x, 0)$ elementwise, $f^\top$ the transposed op, and
$\mathrm{st}(z) = z + \epsilon\,\mathrm{sign}(z)$ with $\mathrm{sign}(0) = +1$.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..errors import InvalidRuleError
from ..layers import Convolution, Dense, Layer
from ._base import (
    Activations,
    Group,
    LinearRule,
    Term,
    check_nonnegative,
    epsilon_factor,
    negative_part,
    positive_part,
    stabilized_divide,
)

__all__ = ["Epsilon", "Flat", "Gradient", "Pass", "WSquare", "ZBox"]


@dataclass(frozen=True)
class Epsilon(LinearRule):
    r"""LRP-$\epsilon$ (Bach et al. 2015); LRP-0 for `epsilon=0`.

    Definition:
        $$ R_{\text{in}} = a \odot f^\top\!\left(\frac{R}{\mathrm{st}(z)}; W\right) $$
        With $\epsilon = 0$ an exactly zero $z$ passes no relevance (never NaN).
        The forward pass's own $z$ is reused: one transposed op per layer.

    Arguments:
        epsilon: the stabilizer $\epsilon \ge 0$ (default 1e-6).

    Reference:
        Bach et al. 2015, PLoS ONE 10(7), e0130140, Eq. (58).
    """

    epsilon: float = 1e-6
    multiplies_input: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_nonnegative(self, "epsilon")

    @property
    def denominator_epsilon(self) -> float:
        return self.epsilon

    def groups(self, layer: Layer, activations: Activations) -> tuple[Group, ...]:
        term = Term(activations.input, layer.weight, layer.bias)
        return (Group((term,), output=activations.output),)

    def folds(
        self, input_nonnegative: bool, zero_where_nonpositive: bool, relation: str | None
    ) -> bool:
        r"""Whether `fold` applies (docs/design.md, "The folded walk"): for $\epsilon > 0$."""
        return self.epsilon > 0

    def fold(
        self, layer: Layer, activations: Activations, base: Tensor | None, relation: str
    ) -> tuple[tuple[Tensor, Tensor], ...]:
        r"""The step as transposed terms $(W_k, t_k)$ computed in the forward pass:
        $R_{\text{in}} = a \odot \sum_k f^\top(s_k; W_k)$ with $s_k = R / t_k$ (no `base`:
        $t = \mathrm{st}(z)$) or, where $R = v \odot c$ for `base` $v$, $s_k = c \odot t_k$
        ($t = v / \mathrm{st}(z)$, see `epsilon_factor`)."""
        z = activations.output
        return ((layer.weight, epsilon_factor(z, self.epsilon, base, relation)),)


def _as_bound(value: Any, name: str) -> Tensor | float:
    if isinstance(value, Tensor):
        if not value.is_floating_point():
            raise InvalidRuleError(f"ZBox {name} must be a float or a floating tensor.")
        return value.detach().clone()
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRuleError(f"ZBox {name} must be a finite number or a tensor, got {value!r}.")
    return float(value)


@dataclass(frozen=True, eq=False)
class ZBox(LinearRule):
    r"""LRP-$z^{\mathcal{B}}$ for inputs bounded by $l \le a \le h$ (the first layer).

    Definition:
        $$ z = f(a; W, b) - f(l; W^+, b^+) - f(h; W^-, b^-), \quad s = \frac{R}{\mathrm{st}(z)} $$
        $$ R_{\text{in}} = a \odot f^\top(s; W) - l \odot f^\top(s; W^+) - h \odot f^\top(s; W^-) $$
        (the bias terms cancel: $b - b^+ - b^- = 0$).

    Arguments:
        low, high: the bounds $l \le h$: numbers, or tensors broadcasting against the input
            (e.g. shape `(1, 3, 1, 1)` for per-channel bounds of normalised images).
        stabilizer: $\epsilon \ge 0$ (default 1e-6).

    Reference:
        Montavon et al. 2017, Pattern Recognition 65, Sec. 5.2 (the $z^{\mathcal{B}}$-rule).
    """

    low: Tensor | float = 0.0
    high: Tensor | float = 1.0
    stabilizer: float = 1e-6

    def __post_init__(self) -> None:
        check_nonnegative(self, "stabilizer")
        low, high = _as_bound(self.low, "low"), _as_bound(self.high, "high")
        if bool(torch.any(torch.as_tensor(low) > torch.as_tensor(high))):
            raise InvalidRuleError(
                f"ZBox needs low <= high everywhere, got low={self.low!r}, high={self.high!r}."
            )
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def __call__(self, layer: Layer, activations: Activations, relevance: Tensor) -> Tensor:
        r"""For bounds constant per input channel on a dense layer or a convolution with
        one group, in closed form: the bounds' terms are convolutions of constant images,
        linear in the weights, so with $V = l W^+ + h W^-$ (per input channel)
        $$ z_{\mathcal{B}} = z - f(\mathbf{1}; V, b), \qquad
           R_{\text{in}} = a \odot f^\top(s; W) - f^\top(s; V) $$
        with the forward's $z$: one extra forward and two transposed ops instead of three
        and three. Other bounds take the generic step."""
        V = _bounded_weight(layer, activations.input, self.low, self.high)
        if V is None:
            return super().__call__(layer, activations, relevance)
        a, z = activations.input, activations.output
        ones = a.new_ones(()).expand_as(a)
        s = stabilized_divide(relevance, z - layer.forward(ones, V, layer.bias), self.stabilizer)
        return layer.transpose(s, a).mul_(a).sub_(layer.transpose(s, a, V))

    def groups(self, layer: Layer, activations: Activations) -> tuple[Group, ...]:
        a, W, b = activations.input, layer.weight, layer.bias
        low = torch.as_tensor(self.low, dtype=a.dtype, device=a.device).expand_as(a)
        high = torch.as_tensor(self.high, dtype=a.dtype, device=a.device).expand_as(a)
        terms = (
            Term(a, W, b),
            Term(low, W.clamp(min=0), positive_part(b), -1.0),
            Term(high, W.clamp(max=0), negative_part(b), -1.0),
        )
        return (Group(terms),)


def _bounded_weight(layer: Layer, a: Tensor, low: Any, high: Any) -> Tensor | None:
    """$l W^+ + h W^-$ with $l, h$ scaling the weight's input channels, where the bounds are
    constant per input channel and the op a dense layer or a one-group convolution."""
    op, W = layer.op, layer.weight
    if isinstance(op, Convolution) and not op.transposed and op.groups == 1 and a.ndim > 2:
        shape = (1, a.shape[1], *([1] * (a.ndim - 2)))  # the bounds' shape against a
        view = (1, a.shape[1], *([1] * (W.ndim - 2)))  # its place in W (out, in, k...)
    elif isinstance(op, Dense):
        shape = view = (a.shape[-1],)
    else:
        return None
    bounds = []
    for bound in (low, high):
        bound = torch.as_tensor(bound, dtype=W.dtype, device=W.device)
        if bound.numel() == 1:
            bound = bound.reshape(())
        else:
            try:
                bound = torch.broadcast_to(bound, torch.broadcast_shapes(bound.shape, shape))
            except RuntimeError:
                return None
            if bound.shape != shape:  # varies along more than the input channels
                return None
            bound = bound.reshape(view)
        bounds.append(bound)
    return W.clamp(min=0) * bounds[0] + W.clamp(max=0) * bounds[1]


@dataclass(frozen=True)
class Flat(LinearRule):
    r"""LRP-flat: relevance spread uniformly over each output's receptive field.

    Definition:
        $$ R_{\text{in}} = f^\top\!\left(\frac{R}{\mathrm{st}(f(\mathbf{1}; \mathbf{1}, 0))}; \mathbf{1}\right) $$
        (inputs and weights set to one, bias dropped.)

    Arguments:
        stabilizer: $\epsilon \ge 0$ (default 1e-6).

    Reference:
        Lapuschkin et al. 2019, "Unmasking Clever Hans predictors and assessing what
        machines really learn", Nature Communications 10, 1096.
    """

    stabilizer: float = 1e-6

    def __post_init__(self) -> None:
        check_nonnegative(self, "stabilizer")

    def groups(self, layer: Layer, activations: Activations) -> tuple[Group, ...]:
        ones = torch.ones_like(activations.input)
        return (Group((Term(ones, torch.ones_like(layer.weight), None),)),)


@dataclass(frozen=True)
class WSquare(LinearRule):
    r"""LRP-$w^2$: relevance spread in proportion to the squared weights.

    Definition:
        $$ R_{\text{in}} = f^\top\!\left(\frac{R}{\mathrm{st}(f(\mathbf{1}; W^{2}, 0))}; W^{2}\right) $$
        The bias is left out, as in the paper (zennit's `WSquare` squares it into the
        denominator; `zennit.rules.WSquare(zero_params=["bias"])` equals this rule).

    Arguments:
        stabilizer: $\epsilon \ge 0$ (default 1e-6).

    Reference:
        Montavon et al. 2017, Pattern Recognition 65, Sec. 5.1 (the $w^2$-rule).
    """

    stabilizer: float = 1e-6

    def __post_init__(self) -> None:
        check_nonnegative(self, "stabilizer")

    def groups(self, layer: Layer, activations: Activations) -> tuple[Group, ...]:
        ones = torch.ones_like(activations.input)
        return (Group((Term(ones, layer.weight.square(), None),)),)


@dataclass(frozen=True)
class Pass:
    r"""Pass relevance through unchanged: $R_{\text{in}} = R$.

    For layers whose output has the input's shape (a BatchNorm left unfolded, an
    elementwise scaling); zennit applies it to BatchNorm and activations.
    """

    def __call__(self, layer: Layer, activations: Activations, relevance: Tensor) -> Tensor:
        if relevance.shape != activations.input.shape:
            raise InvalidRuleError(
                f"Pass() needs the output of node {layer.name!r} to have its input's shape, "
                f"got input {tuple(activations.input.shape)} and output "
                f"{tuple(relevance.shape)}. Give this node a rule such as Epsilon()."
            )
        return relevance


@dataclass(frozen=True)
class Gradient:
    r"""Plain gradient backpropagation: $R_{\text{in}} = f^\top(R; W)$.

    A *signal* rule: when any node's rule is a signal rule (`Gradient`, `PatternNet`,
    `PatternAttribution`), the whole explanation propagates signals as a gradient does:
    elementwise activations multiply by their derivative instead of passing relevance,
    and parameter-free linear nodes default to `Gradient()`. With `Gradient()` on every
    node and `output_relevance` one-hot, `lrp` returns the input gradient of the logit.

    Reference:
        Simonyan et al. 2014, "Deep inside convolutional networks: visualising image
        classification models and saliency maps", ICLR workshop.
    """

    signal: ClassVar[bool] = True

    def __call__(self, layer: Layer, activations: Activations, relevance: Tensor) -> Tensor:
        return layer.transpose(relevance, activations.input)
