r"""The generic LRP step, written once.

A rule is a pure function `(layer, activations, relevance) -> relevance`. The rules of
the literature are all instances of one step over *terms* $t = (c_t, a'_t, W'_t, b'_t)$
(a coefficient, a modified input, modified parameters) grouped under one denominator:

$$ z = \sum_t c_t\, f(a'_t; W'_t, b'_t), \qquad s = m \odot \frac{R}{z + \epsilon\,\mathrm{sign}(z)},
\qquad R_{\text{in}} = \lambda \sum_t c_t\, a'_t \odot f^\top(s; W'_t) $$

summed over the groups of the rule, where $m$ is an optional mask and $\lambda$ the group's
scale (e.g. $\alpha$ and $-\beta$). A rule only says which groups and terms it uses
(`groups`); `LinearRule.__call__` does the rest. When the graph shows that a layer's input
is non-negative (it comes from a ReLU, say), terms on the negative part of the input are
exactly zero and are skipped.

References:
    Bach et al. 2015, "On pixel-wise explanations for non-linear classifier decisions by
    layer-wise relevance propagation", PLoS ONE 10(7).
    Montavon et al. 2019, "Layer-wise relevance propagation: an overview", in Explainable AI,
    Springer LNCS 11700.
"""

from __future__ import annotations

import math
import struct
from typing import ClassVar, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor

from ..errors import InvalidRuleError
from ..layers import Layer

__all__ = [
    "Activations",
    "Group",
    "LinearRule",
    "Rule",
    "Term",
    "check_nonnegative",
    "divide_into",
    "epsilon_factor",
    "negative_part",
    "positive_part",
    "stabilize",
    "stabilized_divide",
]


class Activations(NamedTuple):
    """The activations a rule sees at one node.

    Attributes:
        input: $a$, the layer's input.
        output: $z = f(a; W, b)$, the layer's unmodified output from the forward pass.
        input_nonnegative: True when the graph guarantees $a \\ge 0$ (e.g. after a ReLU).
        zero_where_nonpositive: True when the graph guarantees that the relevance $R$
            arriving at the output is 0 wherever $z \\le 0$: the output feeds only ReLUs
            whose relevance comes from rules that multiply by their input (see `_plan`).
            Rules may use both flags to skip terms that are exactly zero.
    """

    input: Tensor
    output: Tensor
    input_nonnegative: bool = False
    zero_where_nonpositive: bool = False


@runtime_checkable
class Rule(Protocol):
    """Anything callable as `rule(layer, activations, relevance) -> relevance`."""

    def __call__(self, layer: Layer, activations: Activations, relevance: Tensor) -> Tensor: ...


def signed_constant(z: Tensor, value: float) -> Tensor:
    """$c\\,\\mathrm{sign}(z)$ with $\\mathrm{sign}(0) = +1$ (also for $-0$), $c$ = `value`
    rounded to z's dtype, in a fresh buffer.

    Computed as $[z \\ge 0] \\cdot 2c - c$, which is exact ($2c$ only moves the exponent,
    and $2c - c = c$ by Sterbenz' lemma), so it equals `torch.where(z >= 0, c, -c)` bit
    for bit; `where` with 0-d operands takes a slow path on the CPU (5.0 ms against
    1.3 ms for 8 x 512 x 512 float32 values on 2 threads).
    """
    c = _rounded(value, z.dtype)
    # where 2c would overflow (or c is inf or nan), or c = 0 (where gives -0 at z < 0)
    if c == 0 or not abs(c) <= torch.finfo(z.dtype).max / 2:
        plus = torch.full((), c, dtype=z.dtype, device=z.device)
        return torch.where(z >= 0, plus, -plus)
    return (z >= 0).to(z.dtype).mul_(2 * c).sub_(c)


def _rounded(value: float, dtype: torch.dtype) -> float:
    """`value` rounded to `dtype` as a tensor fill does (through float32 for the 16-bit
    types), computed in Python: no tensor, so it also runs inside vmap and make_fx."""
    if dtype == torch.float64:
        return float(value)
    try:
        single = struct.unpack("<f", struct.pack("<f", value))[0]
        if dtype == torch.float16:
            return struct.unpack("<e", struct.pack("<e", single))[0]
    except OverflowError:  # beyond the type's range: a fill gives infinity
        return math.copysign(math.inf, value)
    if dtype == torch.bfloat16:  # the upper 16 bits of float32, rounded to nearest even
        bits = struct.unpack("<I", struct.pack("<f", single))[0]
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return struct.unpack("<f", struct.pack("<I", bits))[0]
    return single


def stabilize(z: Tensor, epsilon: float) -> Tensor:
    """$z + \\epsilon\\,\\mathrm{sign}(z)$ with $\\mathrm{sign}(0) = +1$."""
    if epsilon == 0:
        return z
    # one buffer: (+eps where z >= 0, else -eps) + z, in z's own precision, the sum in place
    return signed_constant(z, epsilon).add_(z)


def stabilized_divide(relevance: Tensor, z: Tensor, epsilon: float) -> Tensor:
    """$R / (z + \\epsilon\\,\\mathrm{sign}(z))$, and 0 where the denominator is exactly 0."""
    denominator = stabilize(z, epsilon)
    if epsilon > 0:
        return relevance / denominator
    safe = torch.where(denominator == 0, torch.ones_like(denominator), denominator)
    return torch.where(denominator == 0, torch.zeros_like(relevance), relevance / safe)


def divide_into(numerator: Tensor, denominator: Tensor) -> Tensor:
    """`numerator / denominator`, written into `denominator` (a fresh buffer of the caller's)."""
    return torch.div(numerator, denominator, out=denominator)


def epsilon_factor(
    z: Tensor, epsilon: float, base: Tensor | None = None, relation: str = "other"
) -> Tensor:
    r"""The epsilon rule's factor for the folded walk (`engine.folding`), $\epsilon > 0$.

    Where the relevance arriving at $z$ is $R = v \odot c$ for a value $v$ of the forward
    pass (`base`: the activation $g(z)$ after $z$, or $z$ itself), the epsilon step's
    quotient is $s = R / \mathrm{st}(z) = c \odot F$ with
    $F = v / \mathrm{st}(z)$, computed here in the forward pass where $z$ is at hand. With
    `relation` saying what $v$ is, in fewer passes and the same values:

    - "self" ($v = z$): $F = |z| / (|z| + \epsilon)$ (the signs cancel);
    - "relu" ($v = \max(z, 0)$): $F = v / (v + \epsilon)$ (where $v \ne 0$, $z = v > 0$);
    - "zero_below" ($v = 0$ wherever $z \le 0$): $F = v / (|z| + \epsilon)$;
    - otherwise $F = v / \mathrm{st}(z)$.

    With "relu" and "zero_below" the caller hands `z` over (it has no other reader left):
    the denominator is computed in its buffer, so the factor takes no new memory.

    Without `base`, the denominator $\mathrm{st}(z)$ itself (then $s = R / \mathrm{st}(z)$).
    """
    if base is None:
        return stabilize(z, epsilon)
    if relation == "self":
        magnitude = z.abs()
        return magnitude.div_(magnitude + epsilon)
    if relation == "relu":
        return divide_into(base, torch.add(base, epsilon, out=z))
    if relation == "zero_below":
        return divide_into(base, z.abs_().add_(epsilon))
    return divide_into(base, stabilize(z, epsilon))


class Term(NamedTuple):
    """One modified forward $c\\, f(a'; W', b')$."""

    input: Tensor
    weight: Tensor
    bias: Tensor | None
    coefficient: float = 1.0


class Group(NamedTuple):
    """Terms sharing one denominator, with an output mask and a scale for the result.

    `output` (optional) is the already-known value of the terms' sum (the forward's $z$):
    set it to skip recomputing the forward.
    """

    terms: tuple[Term, ...]
    scale: float = 1.0
    mask: Tensor | None = None
    output: Tensor | None = None


def check_nonnegative(rule: object, *names: str) -> None:
    """Raise `InvalidRuleError` unless each named field of `rule` is a finite number >= 0."""
    for name in names:
        value = getattr(rule, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0 <= value < float("inf")
        ):
            raise InvalidRuleError(
                f"{type(rule).__name__}({name}=...) must be a finite number >= 0, got {value!r}."
            )


class LinearRule:
    """Base of the rules built from the generic step.

    Subclasses are frozen dataclasses that define `groups` and hold the $\\epsilon$ of the
    denominator $z + \\epsilon\\,\\mathrm{sign}(z)$ as `stabilizer` (`Epsilon`: `epsilon`).
    """

    multiplies_input: ClassVar[bool] = False
    """True if the relevance it returns is 0 wherever the layer input is 0 (every term's
    modified input is $a$, $a^+$ or $a^-$); the plan's zero-relevance analysis uses it."""

    @property
    def denominator_epsilon(self) -> float:
        return self.stabilizer  # type: ignore[attr-defined]

    def groups(self, layer: Layer, activations: Activations) -> tuple[Group, ...]:
        raise NotImplementedError

    def __call__(self, layer: Layer, activations: Activations, relevance: Tensor) -> Tensor:
        a = activations.input
        # c[input] accumulates the transposed terms that share one modified input, so each
        # modified input multiplies once: R_in = sum over inputs of input * c[input].
        c: dict[int, tuple[Tensor, Tensor]] = {}
        for group in self.groups(layer, activations):
            z = group.output
            if z is None:
                z = _sum(_scaled(t, layer.forward(t.input, t.weight, t.bias)) for t in group.terms)
            s = stabilized_divide(relevance, z, self.denominator_epsilon)
            if group.mask is not None:
                s = s * group.mask
            if group.scale != 1.0:
                s = s * group.scale
            for t in group.terms:
                transposed = _scaled(t, layer.transpose(s, a, t.weight))
                known = c.get(id(t.input))
                c[id(t.input)] = (t.input, transposed if known is None else known[1] + transposed)
        assert c, f"{type(self).__name__}.groups returned no term"
        # each transposed op's result is a fresh tensor of its own: multiply in place
        return _sum(transposed.mul_(modified) for modified, transposed in c.values())


def _scaled(term: Term, value: Tensor) -> Tensor:
    return value if term.coefficient == 1.0 else term.coefficient * value


def _sum(values):
    total = None
    for value in values:
        total = value if total is None else total + value
    return total


def positive_part(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(min=0)


def negative_part(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.clamp(max=0)
