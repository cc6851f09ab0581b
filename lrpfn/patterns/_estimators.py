r"""The estimators of PatternNet, from streaming float64 moments.

Notation: one output neuron $o$ of an affine node with weight row $w$ (for a convolution:
output channel $o$, its kernel flattened), its input $x$ (for a convolution: the input
patch under the kernel at one output position, zeros where the kernel overlaps the
padding) and its output $y = w^\top x$. Every sample *and* every output position of a
convolution is one observation $(x, y)$. $E_+$ averages over the regime $\mathcal{R}$ where
the neuron's output in the forward pass, bias included, is positive:
$z = w^\top x + b > 0$ (where the following ReLU passes it).

Linear estimator $S_a$ (Kindermans et al. 2018, Sec. 4.1):
$$ a = \frac{\mathrm{cov}[x, y]}{w^\top \mathrm{cov}[x, y]}, \qquad
   \mathrm{cov}[x, y] = E[xy] - E[x]\,E[y]. $$

Two-component estimator $S_{a+-}$, its positive part (Sec. 4.2; only $a_+$ matters after
a ReLU, whose gradient is zero outside $\mathcal{R}$):
$$ a_+ = \frac{E_+[xy] - E_+[x]\,\bar y}{w^\top\!\left(E_+[xy] - E_+[x]\,\bar y\right)}, $$
with $\bar y = E_+[y]$ by default (`mean_y="regime"`): $a_+$ is then the linear estimator
applied to the observations of the regime alone, and its denominator is the variance of
$y$ in the regime, $\mathrm{var}_+[y] \ge 0$. The paper's formula as written, and
iNNvestigate and TorchLRP (the seed), use the mean over *all* observations,
$\bar y = E[y]$ (`mean_y="all"`); then observations outside the regime, which the ReLU
discards, still move $a_+$ through $E[y]$, and the denominator
$\mathrm{var}_+[y] + E_+[y](E_+[y] - E[y])$ mixes the two regimes. lrpfn uses
$E_+[y]$ because the two-component model treats the regimes as separate populations.

The bias: $y = w^\top x$ leaves it out, as in the paper. Both estimators are unchanged
when a constant is added to $y$ (the $E_+[x]\,c$ terms cancel), so the bias enters only
through the regime $z > 0$.

A neuron with no observation in its regime (it never activates), or whose $y$ does not
vary (zero weights), has denominator 0: its pattern is zero, never NaN.

The moments are weight gradients: for cotangent $c$ (one value per observation),
$\sum c\, x$ over all observations is $\partial \langle c, f(x; W)\rangle / \partial W$,
the vector-Jacobian product of the layer with respect to its weight. So
$\sum_{\mathcal{R}} x$ and $\sum_{\mathcal{R}} x y$ are that product at $c = m$ and
$c = m y$ with the regime mask $m$: no patches are ever materialized, and any stride,
padding, dilation and groups is handled by the layer's own backward.

Reference:
    Kindermans et al. 2018, "Learning how to explain neural networks: PatternNet and
    PatternAttribution", ICLR.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["MEAN_Y", "Moments", "add_moments", "batch_moments", "estimate"]

MEAN_Y = ("regime", "all")


class Moments(NamedTuple):
    """Sums over the observations of one affine node, in float64.

    `count`, `sum_y` (per output neuron, shape `(out,)`) and `sum_x`, `sum_xy` (shaped like
    the weight) are taken over the regime; `count_all` and `sum_y_all` over every
    observation (for `mean_y="all"`). For the linear estimator the regime is everything.
    """

    count: Tensor
    sum_x: Tensor
    sum_y: Tensor
    sum_xy: Tensor
    count_all: Tensor
    sum_y_all: Tensor


def add_moments(total: Moments | None, batch: Moments) -> Moments:
    """The moments of two disjoint sets of observations (sums add)."""
    if total is None:
        return batch
    return Moments(*(a + b for a, b in zip(total, batch, strict=True)))


def batch_moments(
    y: Tensor, regime: Tensor, weight_vjp: Callable[[Tensor], Tensor], channel_axis: int
) -> Moments:
    """The moments of one batch.

    Arguments:
        y: $w^\\top x$ for every observation, float64, shaped like the node's output.
        regime: the mask $m \\in \\{0, 1\\}$ of the regime, float64, shaped like `y`.
        weight_vjp: $c \\mapsto \\partial \\langle c, f(x; W)\\rangle / \\partial W$ at this
            batch's input $x$.
        channel_axis: the axis of `y` that indexes output neurons (-1 dense, 1 convolution).

    `torch.func.vmap` evaluates `weight_vjp` at the two cotangents $m$ and $m y$ at once:
    one batched weight gradient instead of two calls.
    """
    axes = [axis for axis in range(y.ndim) if axis != channel_axis % y.ndim]
    cotangents = torch.empty((2, *y.shape), dtype=y.dtype, device=y.device)
    cotangents[0] = regime
    masked_y = torch.mul(regime, y, out=cotangents[1])
    sum_x, sum_xy = torch.func.vmap(weight_vjp)(cotangents)
    observations = y.numel() // y.shape[channel_axis]
    return Moments(
        count=regime.sum(axes),
        sum_x=sum_x,
        sum_y=masked_y.sum(axes),
        sum_xy=sum_xy,
        count_all=torch.full_like(y.sum(axes), observations),
        sum_y_all=y.sum(axes),
    )


def _mean(total: Tensor, count: Tensor) -> Tensor:
    """`total / count`, and 0 where `count` is 0."""
    return total / torch.where(count > 0, count, torch.ones_like(count))


def estimate(moments: Moments, weight: Tensor, mean_y: str = "regime") -> Tensor:
    """The pattern $a_o = c_o / (w_o^\\top c_o)$, $c_o = E[x y] - E[x]\\,\\bar y$, of every
    neuron $o$ (rows of `weight`), with expectations over the regime of `moments` and
    $\\bar y$ its mean over the regime (`"regime"`) or over every observation (`"all"`).
    Zero where the denominator is zero."""
    view = (-1,) + (1,) * (weight.ndim - 1)
    count = moments.count.reshape(view)
    if mean_y == "regime":
        y_bar = _mean(moments.sum_y, moments.count)
    else:
        y_bar = _mean(moments.sum_y_all, moments.count_all)
    covariance = _mean(moments.sum_xy, count) - _mean(moments.sum_x, count) * y_bar.reshape(view)
    denominator = (weight.to(covariance.dtype) * covariance).sum(
        tuple(range(1, weight.ndim)), keepdim=True
    )
    zero = denominator == 0
    return torch.where(zero, 0.0, covariance / torch.where(zero, 1.0, denominator))
