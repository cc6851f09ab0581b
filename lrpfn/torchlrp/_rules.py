r"""TorchLRP's rules as lrpfn rule values.

Notation as in `lrpfn.rules`: $a$ the layer input, $W, b$ its parameters, $R$ the relevance
at its output, $f^\top$ the transposed op, $x^+ = \max(x, 0)$.

TorchLRP fixed its constants in float32 (`(z > 0).float() * 2 - 1` times the constant), so
its 0.1 is `float32(0.1)` = 0.10000000149011612 even for float64 models; `TORCHLRP_EPSILON`
and `TORCHLRP_GAMMA_STABILIZER` are those values. Its `gamma` is applied in the model's
own precision (0.1 exactly).

Reference:
    TorchLRP, `lrp/functional/{linear,conv,utils}.py` (github.com/fhvilshoj/TorchLRP, MIT).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import InvalidRuleError
from ..layers import Layer
from ..rules import Activations, AlphaBeta, Gradient

__all__ = [
    "RULES",
    "TORCHLRP_EPSILON",
    "TORCHLRP_GAMMA_STABILIZER",
    "TorchLRPGamma",
    "UnitMaxRescaled",
    "rescale_to_unit_max",
]


def _float32(value: float) -> float:
    return float(torch.tensor(value, dtype=torch.float32))


TORCHLRP_EPSILON = _float32(0.1)
"""TorchLRP's epsilon, 0.1 rounded to float32."""

TORCHLRP_GAMMA_STABILIZER = _float32(1e-10)
"""The stabilizer of TorchLRP's "gamma" rule, 1e-10 rounded to float32."""


@dataclass(frozen=True)
class TorchLRPGamma:
    r"""TorchLRP's epsilon, gamma and gamma+epsilon rules: one rule with a quadratic $\rho$.

    Definition:
        $$ W' = W + \gamma\, W \odot W^+, \quad b' = b + \gamma\, b \odot b^+, \quad
           z = f(a; W', b') $$
        $$ R_{\text{in}} = a \odot f^\top\!\left(\frac{R}{z + \epsilon\,\mathrm{sgn}_-(z)}; W'\right),
           \qquad \mathrm{sgn}_-(z) = +1 \text{ if } z > 0 \text{ else } -1 $$
        Unlike the literature's LRP-$\gamma$ ($W + \gamma W^+$, `lrpfn.rules.Gamma`), the
        positive weights grow by $\gamma w^2$, so the rule depends on the weights' scale;
        $z = 0$ is stabilized downwards. `gamma=0` is LRP-$\epsilon$ (the forward's $z$ is
        reused). TorchLRP's keys: "epsilon" is `TorchLRPGamma(0, TORCHLRP_EPSILON)`,
        "gamma" `TorchLRPGamma(0.1, TORCHLRP_GAMMA_STABILIZER)`, "gamma+epsilon"
        `TorchLRPGamma(0.1, TORCHLRP_EPSILON)`.

    Arguments:
        gamma: $\gamma \ge 0$.
        epsilon: $\epsilon > 0$ (TorchLRP divides by $z \pm \epsilon$, never by 0).

    Reference:
        TorchLRP, `lrp/functional/utils.py` (`gamma_fn`, `add_epsilon_fn`); the rule it
        approximates: Montavon et al. 2019, "Layer-wise relevance propagation: an
        overview", Sec. 10.2.3.
    """

    gamma: float
    epsilon: float

    def __post_init__(self) -> None:
        for name, low_ok in (("gamma", True), ("epsilon", False)):
            value = getattr(self, name)
            valid = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not valid or not (0 <= value < float("inf")) or (value == 0 and not low_ok):
                bound = ">= 0" if low_ok else "> 0"
                raise InvalidRuleError(
                    f"TorchLRPGamma({name}=...) must be a finite number {bound}, got {value!r}."
                )

    def __call__(self, layer: Layer, activations: Activations, relevance: Tensor) -> Tensor:
        a, W, b = activations.input, layer.weight, layer.bias
        if self.gamma == 0:
            z = activations.output
        else:
            W = W + self.gamma * W * W.clamp(min=0)
            b = None if b is None else b + self.gamma * b * b.clamp(min=0)
            z = layer.forward(a, W, b)
        denominator = torch.where(z > 0, z + self.epsilon, z - self.epsilon)
        return a * layer.transpose(relevance / denominator, a, W)


def rescale_to_unit_max(relevance: Tensor) -> Tensor:
    r"""TorchLRP's rescaling of pattern signals: each sample divided by its largest $|R|$.

    $R / \max_i |R_i|$ per sample (a sample of zeros stays zero), clipped to $[-1, 1]$;
    tensors of two dimensions (batch, features) are left alone, as TorchLRP (after
    iNNvestigate) does.
    """
    if relevance.ndim == 2:
        return relevance
    largest = relevance.abs().flatten(1).amax(1)
    largest = (largest + (largest == 0).to(largest.dtype)).reshape(
        (-1,) + (1,) * (relevance.ndim - 1)
    )
    return (relevance / largest).clamp(-1, 1)


@dataclass(frozen=True, eq=False)
class UnitMaxRescaled:
    r"""A rule whose input relevance is rescaled per sample to largest magnitude 1.

    Definition:
        $R_{\text{in}} = \mathrm{rescale}(\text{rule}(\text{layer}, a, R))$ with `rescale_to_unit_max`:
        what TorchLRP does to the gradient arriving at the input of every module but ReLU
        and max-pooling when it explains with "patternnet" or "patternattribution".

    Arguments:
        rule: the rule whose result is rescaled (a `rules.PatternNet`, ...).
    """

    rule: Any

    @property
    def signal(self) -> bool:
        return bool(getattr(self.rule, "signal", False))

    def __call__(self, layer: Layer, activations: Activations, relevance: Tensor) -> Tensor:
        return rescale_to_unit_max(self.rule(layer, activations, relevance))


RULES: dict[str, Callable[[], Any]] = {
    "gradient": lambda: Gradient(),
    "epsilon": lambda: TorchLRPGamma(gamma=0.0, epsilon=TORCHLRP_EPSILON),
    "gamma": lambda: TorchLRPGamma(gamma=0.1, epsilon=TORCHLRP_GAMMA_STABILIZER),
    "gamma+epsilon": lambda: TorchLRPGamma(gamma=0.1, epsilon=TORCHLRP_EPSILON),
    # TorchLRP divides by z + 1e-6 only where z == 0; there every term a_i w_ij of the
    # group is 0, so the relevance is 0, as with stabilizer 0 (a zero denominator passes
    # no relevance): the same numbers.
    "alpha1beta0": lambda: AlphaBeta(alpha=1.0, beta=0.0, stabilizer=0.0, ignore_bias=True),
    "alpha2beta1": lambda: AlphaBeta(alpha=2.0, beta=1.0, stabilizer=0.0, ignore_bias=True),
}
"""TorchLRP's rules without patterns, by its key ("patternnet" and "patternattribution" are
`rules.PatternNet`/`rules.PatternAttribution` of its patterns, inside `UnitMaxRescaled`)."""
