r"""The sign-split rules: Gamma, AlphaBeta and ZPlus, with their closed forms.

Each splits the layer's contributions by the signs of inputs and weights. On convolutions
and dense layers (ops whose map is $W$ itself) they are computed in closed forms that run
as few modified forward and transposed ops as the graph allows (docs/design.md, "Fewest
modified passes"); other ops take the generic step over explicit terms.

Notation as in `_lrp`: $a$ the layer input, $W, b$ its parameters, $z = f(a; W, b)$,
$R$ the relevance at the output, $x^\pm$ the positive and negative parts, $f^\top$ the
transposed op, $\mathrm{st}(z) = z + \epsilon\,\mathrm{sign}(z)$.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

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
    divide_into,
    negative_part,
    positive_part,
    signed_constant,
    stabilize,
    stabilized_divide,
)

__all__ = ["AlphaBeta", "Gamma", "ZPlus"]


# ops whose map is W itself (no implicit negative weights such as a norm's centering): the
# sign-split rules compute them in closed form (Gamma relies on |f(a; W)| <= f(|a|; |W|),
# AlphaBeta on f(a+; W+) >= 0); other ops take the generic step
_CONV_OR_DENSE = (Convolution, Dense)


def _split_terms(
    a: Tensor, nonnegative: bool, on_positive: tuple, on_negative: tuple
) -> tuple[Term, ...]:
    """Terms $(a^+; W_1, b_1)$ and $(a^-; W_2, 0)$; the second vanishes when $a \\ge 0$."""
    if nonnegative:
        return (Term(a, *on_positive),)
    return (Term(a.clamp(min=0), *on_positive), Term(a.clamp(max=0), *on_negative))


@dataclass(frozen=True)
class Gamma(LinearRule):
    r"""Generalized LRP-$\gamma$, which also handles negative inputs and outputs.

    Definition:
        With $W_{\uparrow} = W + \gamma W^+$, $W_{\downarrow} = W + \gamma W^-$ (and the same
        for $b$), outputs $z > 0$ are explained by the contributions that increase them,
        outputs $z < 0$ by those that decrease them:
        $$ z_{\uparrow} = f(a^+; W_{\uparrow}, b_{\uparrow}) + f(a^-; W_{\downarrow}, 0), \quad
           z_{\downarrow} = f(a^+; W_{\downarrow}, b_{\downarrow}) + f(a^-; W_{\uparrow}, 0) $$
        $$ R_{\text{in}} = \sum_{(m, z_m, W_1, W_2)} a^+ \odot f^\top(s_m; W_1) + a^- \odot f^\top(s_m; W_2),
           \qquad s_{\uparrow} = [z > 0] \frac{R}{\mathrm{st}(z_{\uparrow})}, \;
           s_{\downarrow} = [z < 0] \frac{R}{\mathrm{st}(z_{\downarrow})} $$
        For $a \ge 0$ and $z > 0$ this is the original rule
        $R_{\text{in}} = a \odot f^\top(R / \mathrm{st}(f(a; W + \gamma W^+)); W + \gamma W^+)$.
        `Gamma(0, stabilizer=0)` equals LRP-0. With `stabilizer=epsilon` this is the
        literature's rule behind TorchLRP's "gamma+epsilon" key; TorchLRP's own computation
        differs (a quadratic $\rho$, see `lrpfn.torchlrp` and docs/torchlrp.md).

    Arguments:
        gamma: $\gamma \ge 0$ (default 0.25).
        stabilizer: $\epsilon \ge 0$ (default 1e-6).

    References:
        Montavon et al. 2019, "Layer-wise relevance propagation: an overview", Sec. 10.2.3;
        Andéol et al. 2021, "Learning domain invariant representations by joint
        Wasserstein distance minimization" (the generalized form, as in zennit).
    """

    gamma: float = 0.25
    stabilizer: float = 1e-6
    multiplies_input: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_nonnegative(self, "gamma", "stabilizer")

    def __call__(self, layer: Layer, activations: Activations, relevance: Tensor) -> Tensor:
        r"""The generic step in closed form: one extra forward op and two transposed ops.

        With $W^\pm = (W \pm |W|)/2$ and $a^\pm = (a \pm |a|)/2$ (the same for $b$), every
        term is bilinear in (input, weight), so with $q = f(|a|; |W|, |b|)$ and $h = \gamma/2$:
        $$ z_{\uparrow} = (1 + h) z + h q, \qquad z_{\downarrow} = (1 + h) z - h q $$
        and, as $s_{\uparrow}$ and $s_{\downarrow}$ live where $z > 0$ and $z < 0$, one
        quotient $s = R / ((1 + h) z + \sigma (h q + \epsilon))$ with $\sigma = \mathrm{sign}(z)$
        (0 where $z = 0$) gives both:
        $$ R_{\text{in}} = (1 + h)\, a \odot f^\top(s; W) + h\, |a| \odot f^\top(\sigma s; |W|) $$
        instead of four forward and four transposed ops (for $a \ge 0$, $|a| = a$). No
        cancellation: for a convolution or dense layer $q \ge |z|$, so both terms of the
        denominator have the sign of $z$. If $a \ge 0$ and $R = 0$ wherever $z \le 0$, only
        $s_{\uparrow}$ remains and one transposed op with $W + \gamma W^+$ suffices. Other
        ops (a norm's centering has implicit negative weights) take the generic step.
        """
        if not isinstance(layer.op, _CONV_OR_DENSE):
            return super().__call__(layer, activations, relevance)
        a, z, g, eps = activations.input, activations.output, self.gamma, self.stabilizer
        W, b = layer.weight, layer.bias
        nonnegative = activations.input_nonnegative
        if g == 0:  # W_up = W_down = W: LRP-0 (epsilon) with the masks
            s = stabilized_divide(relevance, z, eps).masked_fill_(z == 0, 0)
            return layer.transpose(s, a, W).mul_(a)
        if nonnegative and activations.zero_where_nonpositive:
            W_up = W + g * W.clamp(min=0)
            b_up = None if b is None else b + g * b.clamp(min=0)
            s = stabilized_divide(relevance, layer.forward(a, W_up, b_up), eps)
            return layer.transpose(s, a, W_up).mul_(a)
        # divided by 1 + h: s' = (1 + h) s = R / (z + k sigma (q + eps / h)), k = h / (1 + h)
        h = g / 2
        k = h / (1 + h)
        a_abs, W_abs = (a if nonnegative else a.abs()), W.abs()
        q = layer.forward(a_abs, W_abs, None if b is None else b.abs())
        k_sign = signed_constant(z, k)  # k sigma, sigma(0) = +1
        s = relevance / q.add_(eps / h).mul_(k_sign).add_(z)
        del q
        if not (activations.zero_where_nonpositive and eps > 0):  # else s = R = 0 at z = 0
            s.masked_fill_(z == 0, 0)
        c = layer.transpose(s, a, W)
        c_abs = layer.transpose(s.mul_(k_sign), a, W_abs)  # k sigma s'
        if nonnegative:
            return c.add_(c_abs).mul_(a)
        return c.mul_(a).add_(c_abs.mul_(a_abs))

    def folds(
        self, input_nonnegative: bool, zero_where_nonpositive: bool, relation: str | None
    ) -> bool:
        r"""Whether `fold` applies: $a \ge 0$, $\gamma, \epsilon > 0$, and $R = 0$ wherever
        $z \le 0$ or the base is $z$ itself (`relation` "self")."""
        if not (input_nonnegative and self.gamma > 0 and self.stabilizer > 0):
            return False
        return zero_where_nonpositive or relation == "self"

    def fold(
        self, layer: Layer, activations: Activations, base: Tensor | None, relation: str
    ) -> tuple[tuple[Tensor, Tensor], ...]:
        r"""For $a \ge 0$ and $R = 0$ wherever $z \le 0$ (`folds`), the one term
        $(W_{\uparrow}, t)$ with $z_{\uparrow} = f(a; W_{\uparrow}, b_{\uparrow})$ computed in
        the forward pass: $t = \mathrm{st}(z_{\uparrow})$, or with `base` $v$ (where
        $R = v \odot c$) $t = v / \mathrm{st}(z_{\uparrow})$; see `Epsilon.fold`."""
        W, b, g = layer.weight, layer.bias, self.gamma
        if not activations.zero_where_nonpositive:  # relation "self": the base is z
            return self._fold_closed_form(layer, activations)
        W_up = W + g * W.clamp(min=0)
        b_up = None if b is None else b + g * b.clamp(min=0)
        denominator = stabilize(layer.forward(activations.input, W_up, b_up), self.stabilizer)
        return ((W_up, denominator if base is None else divide_into(base, denominator)),)

    def _fold_closed_form(
        self, layer: Layer, activations: Activations
    ) -> tuple[tuple[Tensor, Tensor], ...]:
        r"""`__call__`'s closed form for $a \ge 0$ where $R = z \odot c$: with
        $d = z + k \sigma (q + \epsilon / h)$ (the same quotient's denominator),
        $s' = c \odot z / d$ and $k \sigma s' = c \odot k |z| / d$, so the terms are
        $(W, |w|)$ and $(k |W|, w)$ with $w = |z| / d$ (0 where $z = 0$: the mask)."""
        a, z, W, b = activations.input, activations.output, layer.weight, layer.bias
        h = self.gamma / 2
        k = h / (1 + h)
        q = layer.forward(a, W.abs(), None if b is None else b.abs())
        d = q.add_(self.stabilizer / h).mul_(signed_constant(z, k)).add_(z)
        w = divide_into(z.abs(), d)
        return ((W, w.abs()), (k * W.abs(), w))

    def groups(self, layer: Layer, activations: Activations) -> tuple[Group, ...]:
        W, b, g = layer.weight, layer.bias, self.gamma
        W_up, W_down = W + g * W.clamp(min=0), W + g * W.clamp(max=0)
        b_up = None if b is None else b + g * b.clamp(min=0)
        b_down = None if b is None else b + g * b.clamp(max=0)
        a, z, nonneg = activations.input, activations.output, activations.input_nonnegative
        return (
            Group(_split_terms(a, nonneg, (W_up, b_up), (W_down, None)), mask=z > 0),
            Group(_split_terms(a, nonneg, (W_down, b_down), (W_up, None)), mask=z < 0),
        )


def _alpha_beta(
    layer: Layer,
    activations: Activations,
    relevance: Tensor,
    alpha: float,
    beta: float,
    stabilizer: float,
    ignore_bias: bool,
) -> Tensor:
    r"""The terms of `_alpha_beta_groups`, computed with fewer elementwise passes.

    The same forward and transposed ops on the same values (four and four for inputs of
    both signs, two and two for $a \ge 0$; fewer would need $z^- = z - z^+$ or
    $W^\pm = (W \pm |W|)/2$, which cancel catastrophically where one part is tiny):
    $z^+ \ge 0$ is a sum of non-negative products, so $\mathrm{st}(z^+) = z^+ + \epsilon$,
    and the scales $\alpha$, $-\beta$ multiply the weights of the transposed ops.
    """
    a, W = activations.input, layer.weight
    b = None if ignore_bias else layer.bias
    W_pos, W_neg = W.clamp(min=0), W.clamp(max=0)
    mixed = not activations.input_nonnegative
    a_pos, a_neg = (a.clamp(min=0), a.clamp(max=0)) if mixed else (a, None)

    def part(W_same: Tensor, b_same: Tensor | None, W_other: Tensor) -> Tensor:
        z = layer.forward(a_pos, W_same, b_same)  # f(a+; W_same, b_same) + f(a-; W_other)
        return z.add_(layer.forward(a_neg, W_other, None)) if mixed else z

    z_pos = part(W_pos, positive_part(b), W_neg)
    if stabilizer > 0:
        s = torch.div(relevance, z_pos.add_(stabilizer))
    else:
        s = stabilized_divide(relevance, z_pos, 0.0)
    del z_pos
    # the scales alpha and -beta go on the (small) weights of the transposed ops
    scaled_pos, scaled_neg = (W_pos, W_neg) if alpha == 1.0 else (alpha * W_pos, alpha * W_neg)
    c_pos = layer.transpose(s, a, scaled_pos)
    c_neg = layer.transpose(s, a, scaled_neg) if mixed else None
    if beta != 0:
        s = stabilized_divide(relevance, part(W_neg, negative_part(b), W_pos), stabilizer)
        c_pos.add_(layer.transpose(s, a, -float(beta) * W_neg))
        if mixed:
            c_neg.add_(layer.transpose(s, a, -float(beta) * W_pos))
    del s
    return c_pos.mul_(a_pos).add_(c_neg.mul_(a_neg)) if mixed else c_pos.mul_(a)


def _alpha_beta_fold(
    layer: Layer,
    activations: Activations,
    base: Tensor | None,
    alpha: float,
    beta: float,
    stabilizer: float,
    ignore_bias: bool,
) -> tuple[tuple[Tensor, Tensor], ...]:
    r"""`_alpha_beta` for $a \ge 0$ as transposed terms computed in the forward pass:
    $(\alpha W^+, t^+)$ and $(-\beta W^-, t^-)$ with $t^\pm = \mathrm{st}(z^\pm)$, or with
    `base` $v$ (where $R = v \odot c$) $t^\pm = v / \mathrm{st}(z^\pm)$."""
    a, W = activations.input, layer.weight
    b = None if ignore_bias else layer.bias
    W_pos, W_neg = W.clamp(min=0), W.clamp(max=0)
    positive = layer.forward(a, W_pos, positive_part(b)).add_(stabilizer)  # z+ >= 0
    terms = [(W_pos if alpha == 1.0 else alpha * W_pos, positive)]
    if beta != 0:
        negative = stabilize(layer.forward(a, W_neg, negative_part(b)), stabilizer)
        terms.append((-float(beta) * W_neg, negative))
    if base is None:
        return tuple(terms)
    return tuple((weight, divide_into(base, t)) for weight, t in terms)


def _alpha_beta_groups(
    layer: Layer, activations: Activations, alpha: float, beta: float, ignore_bias: bool
) -> tuple[Group, ...]:
    W, b = layer.weight, None if ignore_bias else layer.bias
    a, nonneg = activations.input, activations.input_nonnegative
    W_pos, W_neg = W.clamp(min=0), W.clamp(max=0)
    # z^- is computed by its own forward: z - z^+ would cancel catastrophically where
    # |z^-| << |z| (e.g. large inputs whose negative contributions are tiny).
    positive = Group(
        _split_terms(a, nonneg, (W_pos, positive_part(b)), (W_neg, None)), scale=float(alpha)
    )
    if beta == 0:
        return (positive,)
    negative = Group(
        _split_terms(a, nonneg, (W_neg, negative_part(b)), (W_pos, None)), scale=-float(beta)
    )
    return (positive, negative)


@dataclass(frozen=True)
class AlphaBeta(LinearRule):
    r"""LRP-$\alpha\beta$: positive and negative contributions explained separately.

    Definition:
        $$ z^{+} = f(a^+; W^+, b^+) + f(a^-; W^-, 0), \qquad z^{-} = f(a^+; W^-, b^-) + f(a^-; W^+, 0) $$
        $$ R_{\text{in}} = \alpha \big(a^+ \odot f^\top(s^+; W^+) + a^- \odot f^\top(s^+; W^-)\big)
           - \beta \big(a^+ \odot f^\top(s^-; W^-) + a^- \odot f^\top(s^-; W^+)\big),
           \quad s^\pm = \frac{R}{\mathrm{st}(z^\pm)} $$
        The positive part of the bias enters the $\alpha$ term and the negative part the
        $\beta$ term; `ignore_bias=True` drops the bias (TorchLRP's behaviour).

    Arguments:
        alpha, beta: $\alpha, \beta \ge 0$ with $\alpha - \beta = 1$ (default 2, 1).
        stabilizer: $\epsilon \ge 0$ (default 1e-6).
        ignore_bias: leave the bias out of both terms (default False).

    Reference:
        Bach et al. 2015, PLoS ONE 10(7), e0130140, Eq. (60).
    """

    alpha: float = 2.0
    beta: float = 1.0
    stabilizer: float = 1e-6
    ignore_bias: bool = False
    multiplies_input: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_nonnegative(self, "alpha", "beta", "stabilizer")
        if not math.isclose(self.alpha - self.beta, 1.0, rel_tol=0, abs_tol=1e-12):
            raise InvalidRuleError(
                f"AlphaBeta needs alpha - beta = 1 to conserve relevance, got alpha="
                f"{self.alpha!r}, beta={self.beta!r}. Use e.g. AlphaBeta(alpha=2, beta=1)."
            )

    def __call__(self, layer: Layer, activations: Activations, relevance: Tensor) -> Tensor:
        if not isinstance(layer.op, _CONV_OR_DENSE):
            return super().__call__(layer, activations, relevance)
        return _alpha_beta(
            layer, activations, relevance, self.alpha, self.beta, self.stabilizer, self.ignore_bias
        )

    def groups(self, layer: Layer, activations: Activations) -> tuple[Group, ...]:
        return _alpha_beta_groups(layer, activations, self.alpha, self.beta, self.ignore_bias)

    def folds(
        self, input_nonnegative: bool, zero_where_nonpositive: bool, relation: str | None
    ) -> bool:
        r"""Whether `fold` applies: $a \ge 0$ and $\epsilon > 0$."""
        return input_nonnegative and self.stabilizer > 0

    def fold(
        self, layer: Layer, activations: Activations, base: Tensor | None, relation: str
    ) -> tuple[tuple[Tensor, Tensor], ...]:
        """The step as transposed terms computed in the forward pass (`_alpha_beta_fold`)."""
        return _alpha_beta_fold(
            layer, activations, base, self.alpha, self.beta, self.stabilizer, self.ignore_bias
        )


@dataclass(frozen=True)
class ZPlus(LinearRule):
    r"""LRP-$z^+$, identical to `AlphaBeta(alpha=1, beta=0)`.

    Definition:
        $$ R_{\text{in}} = a^+ \odot f^\top(s; W^+) + a^- \odot f^\top(s; W^-), \quad
           s = \frac{R}{\mathrm{st}(f(a^+; W^+, b^+) + f(a^-; W^-, 0))} $$

    Arguments:
        stabilizer: $\epsilon \ge 0$ (default 1e-6).
        ignore_bias: leave the bias out (default False).

    Reference:
        Montavon et al. 2017, "Explaining nonlinear classification decisions with deep
        Taylor decomposition", Pattern Recognition 65, Sec. 4.
    """

    stabilizer: float = 1e-6
    ignore_bias: bool = False
    multiplies_input: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_nonnegative(self, "stabilizer")

    def __call__(self, layer: Layer, activations: Activations, relevance: Tensor) -> Tensor:
        if not isinstance(layer.op, _CONV_OR_DENSE):
            return super().__call__(layer, activations, relevance)
        return _alpha_beta(
            layer, activations, relevance, 1.0, 0.0, self.stabilizer, self.ignore_bias
        )

    def groups(self, layer: Layer, activations: Activations) -> tuple[Group, ...]:
        return _alpha_beta_groups(layer, activations, 1.0, 0.0, self.ignore_bias)

    def folds(
        self, input_nonnegative: bool, zero_where_nonpositive: bool, relation: str | None
    ) -> bool:
        r"""Whether `fold` applies: $a \ge 0$ and $\epsilon > 0$."""
        return input_nonnegative and self.stabilizer > 0

    def fold(
        self, layer: Layer, activations: Activations, base: Tensor | None, relation: str
    ) -> tuple[tuple[Tensor, Tensor], ...]:
        """The step as transposed terms computed in the forward pass (`_alpha_beta_fold`)."""
        return _alpha_beta_fold(
            layer, activations, base, 1.0, 0.0, self.stabilizer, self.ignore_bias
        )
