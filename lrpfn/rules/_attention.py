r"""Rules for the two ops of attention that are not linear layers: softmax and products of
two activations (AttnLRP and CP-LRP).

Notation: $x$ the softmax input, $s = \mathrm{softmax}(x)$ its output along one axis,
$R$ the relevance arriving at an op's output, $z = f(u_1, \ldots, u_n)$ a product that is
linear in each of its $n$ data operands $u_i$ (`matmul`, `bmm`, two-operand `einsum`),
$f_i^\top(s)$ its vector-Jacobian product with respect to $u_i$, and
$\mathrm{st}(z) = z + \epsilon\,\mathrm{sign}(z)$ with $\mathrm{sign}(0) = +1$.

A softmax rule is called as `rule(x, s, R, dim) -> R_x` (or None: no relevance into $x$);
a product rule as `rule(product, R) -> (R_1, ..., R_n)` with a `Product` record.

References:
    Achtibat et al. 2024, "AttnLRP: Attention-aware layer-wise relevance propagation for
    transformers", ICML (Eq. 7: the uniform rule; Prop. 3.3 / Eq. 13: the softmax rule).
    Ali et al. 2022, "XAI for transformers: better explanations through conservative
    propagation", ICML (CP-LRP: attention weights held constant).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from torch import Tensor

from ._base import check_nonnegative, stabilized_divide

__all__ = ["AttnSoftmax", "ConstantAttention", "Product", "StopSoftmax", "UniformProduct"]


class Product(NamedTuple):
    """What a product rule sees of a product of activations $z = f(u_1, \\ldots, u_n)$.

    Attributes:
        operands: the data operands $u_i$ (constant operands are part of $f$).
        output: $z$ from the forward pass.
        transpose: `transpose(s, wanted)` returns $f_i^\\top(s)$ for each operand $i$ with
            `wanted[i]` true (None for the others), each shaped like $u_i$.
        from_softmax: for each operand, whether the graph computes it by a softmax (the
            attention weights $P$ of $P V$).
    """

    operands: tuple[Tensor, ...]
    output: Tensor
    transpose: Callable[[Tensor, tuple[bool, ...]], tuple[Tensor | None, ...]]
    from_softmax: tuple[bool, ...]


def _explain_operands(
    product: Product, relevance: Tensor, epsilon: float, explained: tuple[bool, ...]
) -> tuple[Tensor | None, ...]:
    """$R_i = u_i \\odot f_i^\\top(R / \\mathrm{st}(n z))$ for the `explained` operands, $n$ of them."""
    n = sum(explained)
    s = stabilized_divide(relevance, product.output * n if n != 1 else product.output, epsilon)
    transposed = product.transpose(s, explained)
    return tuple(
        None if c is None else c * u for u, c in zip(product.operands, transposed, strict=True)
    )


@dataclass(frozen=True)
class UniformProduct:
    r"""The uniform rule of AttnLRP with an $\epsilon$ stabilizer, for a product of $n$
    activations (`Q @ K.mT`, `P @ V`, `einsum`): every operand is explained as a linear
    function of itself with the others held at their values, and all operands share $R$.

    Definition:
        $$ s = \frac{R}{\mathrm{st}(n z)}, \qquad R_i = u_i \odot f_i^\top(s) $$
        Since $f$ is linear in each operand, $\sum u_i \odot f_i^\top(s) = \sum s\, z$ for
        each $i$, so each operand receives $R / n$ in total (exactly for $\epsilon = 0$).
        With one data operand (the other a constant, e.g. `x @ W`) this is LRP-$\epsilon$.

    Arguments:
        epsilon: the stabilizer $\epsilon \ge 0$ (default 1e-6).

    Reference:
        Achtibat et al. 2024, ICML, Eq. (7).
    """

    epsilon: float = 1e-6

    def __post_init__(self) -> None:
        check_nonnegative(self, "epsilon")

    def __call__(self, product: Product, relevance: Tensor) -> tuple[Tensor | None, ...]:
        return _explain_operands(product, relevance, self.epsilon, (True,) * len(product.operands))


@dataclass(frozen=True)
class ConstantAttention:
    r"""CP-LRP's product rule: the attention weights $P$ (an operand computed by a softmax)
    are constants, so $P V$ is a linear map of $V$ explained by LRP-$\epsilon$; relevance
    never enters the softmax. Products without a softmax operand get the uniform rule.

    Definition:
        With $k$ the operands not computed by a softmax ($k = 1$ for $P V$),
        $$ s = \frac{R}{\mathrm{st}(k z)}, \qquad R_i = u_i \odot f_i^\top(s) \text{ for those
        operands}, \qquad R_P = 0 $$
        For $\epsilon = 0$ and bias-free blocks, $\sum R_V = \sum R$: conservative.

    Arguments:
        epsilon: the stabilizer $\epsilon \ge 0$ (default 1e-6).

    Reference:
        Ali et al. 2022, "XAI for transformers: better explanations through conservative
        propagation", ICML, Sec. 3 (attention heads held constant).
    """

    epsilon: float = 1e-6

    def __post_init__(self) -> None:
        check_nonnegative(self, "epsilon")

    def __call__(self, product: Product, relevance: Tensor) -> tuple[Tensor | None, ...]:
        explained = tuple(not flag for flag in product.from_softmax)
        if not any(explained):
            explained = (True,) * len(product.operands)
        return _explain_operands(product, relevance, self.epsilon, explained)


@dataclass(frozen=True)
class AttnSoftmax:
    r"""AttnLRP's softmax rule: the first-order Taylor decomposition of $s = \mathrm{softmax}(x)$
    at $x$ with each output's relevance as its share, $R_j / s_j$ per unit.

    Definition:
        Along the softmax axis,
        $$ R_{x,i} = x_i \Big(R_i - s_i \sum_j R_j\Big) $$
        which is $x \odot J^\top (R / s)$ with the softmax Jacobian
        $J_{ji} = s_j(\delta_{ij} - s_i)$. Entries with $x_i = -\infty$ (masked positions)
        get 0 (softmax of $+\infty$ is undefined). The rule is not conservative: $\sum_i R_{x,i} = \sum_j R_j (x_j - \langle s, x\rangle)$,
        the Taylor term (the remainder is the bias of the paper's decomposition).

    Reference:
        Achtibat et al. 2024, ICML, Prop. 3.3.
    """

    def __call__(self, x: Tensor, s: Tensor, relevance: Tensor, dim: int) -> Tensor | None:
        total = relevance.sum(dim, keepdim=True)
        result = (relevance - s * total).mul_(x)
        return result.masked_fill_(x == float("-inf"), 0.0)  # -inf * 0 would be NaN


@dataclass(frozen=True)
class StopSoftmax:
    r"""CP-LRP's softmax rule: the attention weights are constants, so no relevance enters
    the softmax input.

    Definition:
        $$ R_x = 0 $$
        (the relevance of $s$ reaches the rest of the network through the values $V$ of
        $P V$, see `ConstantAttention`).

    Reference:
        Ali et al. 2022, ICML, Sec. 3.
    """

    def __call__(self, x: Tensor, s: Tensor, relevance: Tensor, dim: int) -> Tensor | None:
        return None
