"""The preset composites, with the keyword names and defaults of zennit's composites of
the same names, and AttnLRP / CP-LRP for transformers. `PRESETS` maps their names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..rules import (
    AlphaBeta,
    AttnSoftmax,
    ConstantAttention,
    Epsilon,
    EqualSplit,
    Flat,
    Gamma,
    Gradient,
    Pass,
    SignalTakesAll,
    StopSoftmax,
    UniformProduct,
    ZBox,
    ZPlus,
    rule_from_key,
)
from ._composite import DEFAULT_RULE, Composite
from ._matching import (
    ANY,
    BATCHNORM,
    CONVOLUTION,
    DENSE,
    MATMUL,
    NORMALIZATION,
    POOLING,
    PRODUCT,
    SOFTMAX,
    SUM,
    First,
)

__all__ = [
    "PRESETS",
    "attnlrp",
    "cp_lrp",
    "epsilon_alpha2_beta1",
    "epsilon_alpha2_beta1_flat",
    "epsilon_gamma_box",
    "epsilon_plus",
    "epsilon_plus_flat",
    "key_composite",
    "lstm_lrp",
    "mamba_lrp",
]


def _base(stabilizer: float) -> dict:
    """zennit's `layer_map_base`: pooling and sums by the stabilized epsilon rule (zennit's
    `Norm`), BatchNorm left unfolded passes relevance. Layer norms (which zennit does not
    explain) get the stabilized epsilon rule on their linearization (Ali et al. 2022)."""
    return {
        POOLING: Epsilon(stabilizer),
        SUM: Epsilon(stabilizer),
        BATCHNORM: Pass(),
        NORMALIZATION: Epsilon(stabilizer),
    }


def key_composite(key: str) -> Composite:
    """The rule set of a TorchLRP rule key ("epsilon", "alpha2beta1", ...), as TorchLRP's
    keys apply it: the key's rule on the parametrised layers (dense and convolution), the
    presets' stabilized Epsilon on sums, pooling and norms (`_base`), BatchNorm left
    unfolded passing relevance. A sign-split rule on a residual sum creates relevance
    (AlphaBeta(2, 1) on every node of a random resnet18 sums to about 250 x the logit).
    "gradient" stays the gradient everywhere.
    """
    rule = rule_from_key(key)
    if isinstance(rule, Gradient):
        return Composite(((ANY, rule),))
    return Composite((*_base(DEFAULT_RULE.epsilon).items(), (DENSE, rule), (CONVOLUTION, rule)))


def epsilon_plus(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """ZPlus on convolutions, Epsilon on dense layers (zennit's `EpsilonPlus`)."""
    return Composite(
        tuple(
            {**_base(stabilizer), CONVOLUTION: ZPlus(stabilizer), DENSE: Epsilon(epsilon)}.items()
        )
    )


def epsilon_plus_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """Flat on the first dense or convolution layer, then as `epsilon_plus` (zennit's
    `EpsilonPlusFlat`)."""
    return Composite(
        (
            (First(DENSE, CONVOLUTION), Flat(stabilizer)),
            *epsilon_plus(epsilon, stabilizer).entries,
        )
    )


def epsilon_gamma_box(
    low: Any, high: Any, epsilon: float = 1e-6, gamma: float = 0.25, stabilizer: float = 1e-6
) -> Composite:
    """ZBox(low, high) on the first convolution, Gamma on the other convolutions, Epsilon on
    dense layers (zennit's `EpsilonGammaBox`)."""
    return Composite(
        (
            (First(CONVOLUTION), ZBox(low, high, stabilizer)),
            *_base(stabilizer).items(),
            (CONVOLUTION, Gamma(gamma, stabilizer)),
            (DENSE, Epsilon(epsilon)),
        )
    )


def epsilon_alpha2_beta1(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """AlphaBeta(2, 1) on convolutions, Epsilon on dense layers (zennit's
    `EpsilonAlpha2Beta1`)."""
    return Composite(
        (
            *_base(stabilizer).items(),
            (CONVOLUTION, AlphaBeta(2.0, 1.0, stabilizer)),
            (DENSE, Epsilon(epsilon)),
        )
    )


def epsilon_alpha2_beta1_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """Flat on the first dense or convolution layer, then as `epsilon_alpha2_beta1`
    (zennit's `EpsilonAlpha2Beta1Flat`)."""
    return Composite(
        (
            (First(DENSE, CONVOLUTION), Flat(stabilizer)),
            *epsilon_alpha2_beta1(epsilon, stabilizer).entries,
        )
    )


def attnlrp(epsilon: float = 1e-6, gamma: float | None = None) -> Composite:
    r"""AttnLRP for transformers (Achtibat et al. 2024, ICML).

    Epsilon on dense layers, convolutions (patch embeddings), sums, pooling and layer norms
    (standard deviation held constant); `rules.AttnSoftmax` on softmaxes;
    `rules.UniformProduct(epsilon)` on products of two activations ($QK^\top$, $PV$);
    `rules.EqualSplit` on elementwise products of two activations (SwiGLU's
    `silu(gate) * up`); RMSNorm and elementwise non-linearities pass relevance (identity).

    Arguments:
        epsilon: the stabilizer of every epsilon rule (default 1e-6).
        gamma: if given, `rules.Gamma(gamma)` on dense layers and convolutions instead of
            Epsilon, as the paper recommends for vision transformers.
    """
    linear = Epsilon(epsilon) if gamma is None else Gamma(gamma, epsilon)
    return Composite(
        (
            (DENSE, linear),
            (CONVOLUTION, linear),
            *_base(epsilon).items(),
            (SOFTMAX, AttnSoftmax()),
            (MATMUL, UniformProduct(epsilon)),
            (PRODUCT, EqualSplit()),
        )
    )


def cp_lrp(epsilon: float = 1e-6, gamma: float | None = None) -> Composite:
    r"""CP-LRP for transformers (Ali et al. 2022, ICML): attention weights and gates held
    constant.

    As `attnlrp`, except that no relevance enters a softmax (`rules.StopSoftmax`), the
    softmax operand of $PV$ is a constant (`rules.ConstantAttention(epsilon)`: all
    relevance to $V$), and of an elementwise product of two activations the gate is a
    constant (`rules.SignalTakesAll`: all relevance to the signal).

    Arguments:
        epsilon: the stabilizer of every epsilon rule (default 1e-6).
        gamma: if given, `rules.Gamma(gamma)` on dense layers and convolutions.
    """
    linear = Epsilon(epsilon) if gamma is None else Gamma(gamma, epsilon)
    return Composite(
        (
            (DENSE, linear),
            (CONVOLUTION, linear),
            *_base(epsilon).items(),
            (SOFTMAX, StopSoftmax()),
            (MATMUL, ConstantAttention(epsilon)),
            (PRODUCT, SignalTakesAll()),
        )
    )


def lstm_lrp(epsilon: float = 1e-3, equal_split: bool = False) -> Composite:
    r"""LRP for recurrent networks (Arras et al. 2017, WASSA; Arras et al. 2019, BlackboxNLP).

    Epsilon on the linear maps (the gate pre-activations $z_k = W_k [x_t; h_{t-1}] + b_k$,
    dense and convolution layers), on sums (the cell update $c_t = f c_{t-1} + i g$ and the
    GRU's $h_t = (1 - u) n + u h_{t-1}$ split in proportion to their terms) and on pooling;
    a gate x signal product gives all relevance to the signal (`rules.SignalTakesAll`) or,
    with `equal_split`, half to each (`rules.EqualSplit`); tanh and sigmoid pass relevance.

    Arguments:
        epsilon: the stabilizer of every epsilon rule (default 1e-3, the papers' value).
        equal_split: half of a product's relevance to the gate (default: none).
    """
    product = EqualSplit() if equal_split else SignalTakesAll()
    return Composite(
        (
            (DENSE, Epsilon(epsilon)),
            (CONVOLUTION, Epsilon(epsilon)),
            *_base(epsilon).items(),
            (PRODUCT, product),
        )
    )


def mamba_lrp(epsilon: float = 1e-6) -> Composite:
    r"""MambaLRP for selective state-space models (Jafari et al. 2024, NeurIPS).

    The selection parameters ($\Delta$, $B$, $C$) are held constant by the canonical pass
    (`lrpfn.capture.state_space`), so the selective scan is linear in its input and its
    sums and products take the rules below as any other op: Epsilon on dense layers, the
    causal depthwise convolution, sums (the state update $\bar A_t h_{t-1} + \bar B_t u_t$,
    $y + D u$, residuals) and pooling; `rules.UniformProduct(epsilon)` on $C_t h_t$ (with
    $C$ constant: LRP-$\epsilon$); the gate $y \odot \mathrm{silu}(z)$ splits half and
    half (`rules.EqualSplit`); SiLU and RMSNorm (its scale held constant) pass relevance.

    Arguments:
        epsilon: the stabilizer of every epsilon rule (default 1e-6).
    """
    return Composite(
        (
            (DENSE, Epsilon(epsilon)),
            (CONVOLUTION, Epsilon(epsilon)),
            *_base(epsilon).items(),
            (MATMUL, UniformProduct(epsilon)),
            (PRODUCT, EqualSplit()),
        )
    )


PRESETS: dict[str, Callable[..., Composite]] = {
    "epsilon_plus": epsilon_plus,
    "epsilon_plus_flat": epsilon_plus_flat,
    "epsilon_alpha2_beta1": epsilon_alpha2_beta1,
    "epsilon_alpha2_beta1_flat": epsilon_alpha2_beta1_flat,
    "epsilon_gamma_box": epsilon_gamma_box,
    "attnlrp": attnlrp,
    "cp_lrp": cp_lrp,
    "lstm_lrp": lstm_lrp,
    "mamba_lrp": mamba_lrp,
}
"""Preset composites by name (`epsilon_gamma_box` needs `low` and `high`)."""
