"""The closed forms of Gamma and AlphaBeta on convolutions and dense layers equal the
generic step over their terms (`LinearRule.__call__` with the rule's `groups`), in float64.

`Gamma` computes both masks with one quotient, one forward op on $(|a|, |W|, |b|)$ and two
transposed ops; `AlphaBeta` (and `ZPlus`) the same four (two for $a \\ge 0$) forward and
transposed ops as the generic step with fewer elementwise passes. The generic step writes
each term of the paper's formula as its own forward and transposed op, so it is the
reference. The cases include exact zeros of $z$ (a zero input patch: Gamma passes nothing
there) and of $z^-$ (all-positive weights: $\\mathrm{st}(0) = +\\epsilon$), inputs of both
signs and non-negative ones, and relevance that is zero wherever $z \\le 0$.
"""

from __future__ import annotations

import pytest
import torch

from lrpfn.layers import Convolution, Dense, Layer
from lrpfn.rules import AlphaBeta, Gamma, ZPlus
from lrpfn.rules._base import Activations, LinearRule

DTYPE = torch.float64


def _conv(groups: int, stride: int) -> tuple[Layer, tuple[int, ...]]:
    generator = torch.Generator().manual_seed(10 * groups + stride)
    weight = torch.randn(6, 6 // groups, 3, 3, dtype=DTYPE, generator=generator)
    weight[0].abs_()  # output channel 0: all weights positive, so z^- = 0 on a >= 0
    bias = 0.1 * torch.randn(6, dtype=DTYPE, generator=generator)
    op = Convolution(
        dims=2, stride=(stride, stride), padding=(1, 1), dilation=(1, 1), groups=groups
    )
    return Layer(op, weight, bias, name="conv"), (6, 9, 9)


def _dense() -> tuple[Layer, tuple[int, ...]]:
    generator = torch.Generator().manual_seed(7)
    weight = torch.randn(5, 8, dtype=DTYPE, generator=generator)
    weight[0].abs_()
    return Layer(Dense(), weight, 0.1 * torch.randn(5, dtype=DTYPE, generator=generator)), (8,)


LAYERS = {
    "conv": lambda: _conv(1, 1),
    "conv_stride2": lambda: _conv(1, 2),
    "conv_groups2": lambda: _conv(2, 1),
    "depthwise_stride2": lambda: _conv(6, 2),
    "dense": _dense,
}
RULES = {
    "gamma": Gamma(0.25),
    "gamma_unstabilized": Gamma(0.5, stabilizer=0.0),
    "gamma_zero": Gamma(0.0),
    "alpha2beta1": AlphaBeta(2.0, 1.0),
    "alpha2beta1_unstabilized": AlphaBeta(2.0, 1.0, stabilizer=0.0),
    "alpha1beta0_ignore_bias": AlphaBeta(1.0, 0.0, ignore_bias=True),
    "zplus": ZPlus(),
}


def _assert_matches(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """rtol 1e-9: both compute z from different sums (rounding amplified by |terms| / |z|
    where z is near 0); a wrong term differs by O(1). The absolute floor (1e-12 of the
    largest entry) covers entries that are zero up to rounding."""
    floor = 1e-12 * float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=floor)


def _case(layer_name: str, inputs: str, zero_where_nonpositive: bool, bias: bool = True):
    layer, shape = LAYERS[layer_name]()
    if not bias:
        layer = Layer(layer.op, layer.weight, None, name=layer.name)
    generator = torch.Generator().manual_seed(len(layer_name) + 3 * len(inputs))
    a = torch.randn(2, *shape, dtype=DTYPE, generator=generator)
    if inputs == "nonnegative":
        a = a.clamp(min=0)
    if a.ndim == 4:
        a[0, :, :4, :4] = 0  # a zero patch: z = bias there; with no bias z = 0
    else:
        a[0] = 0
    z = layer.forward(a)
    relevance = torch.randn(z.shape, dtype=DTYPE, generator=generator)
    if zero_where_nonpositive:
        relevance = relevance * (z > 0)
    activations = Activations(a, z, inputs == "nonnegative", zero_where_nonpositive)
    return layer, activations, relevance


@pytest.mark.parametrize("zero_where_nonpositive", [False, True], ids=["any_R", "R_zero_at_z<=0"])
@pytest.mark.parametrize("inputs", ["mixed", "nonnegative"])
@pytest.mark.parametrize("rule_name", list(RULES))
@pytest.mark.parametrize("layer_name", list(LAYERS))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_closed_form_equals_generic_step(
    layer_name: str, rule_name: str, inputs: str, zero_where_nonpositive: bool, bias: bool
) -> None:
    layer, activations, relevance = _case(layer_name, inputs, zero_where_nonpositive, bias)
    rule = RULES[rule_name]
    actual = rule(layer, activations, relevance)
    expected = LinearRule.__call__(rule, layer, activations, relevance)
    assert actual.shape == activations.input.shape and expected.abs().max() > 0
    _assert_matches(actual, expected)


def test_gamma_passes_nothing_where_z_is_exactly_zero() -> None:
    """With no bias, a zero input patch gives z = 0 there, where both masks are 0."""
    layer, activations, relevance = _case("conv", "mixed", False, bias=False)
    assert bool((activations.output == 0).any())
    only_at_zero = relevance * (activations.output == 0)
    result = Gamma(0.25)(layer, activations, only_at_zero)
    assert torch.equal(result, torch.zeros_like(result))


def test_input_nonnegative_shortcut_equals_the_full_formula() -> None:
    """On a >= 0 the shortcut (no a^- terms) equals the rule told nothing about the sign."""
    for rule in (Gamma(0.25), AlphaBeta(2.0, 1.0)):
        layer, activations, relevance = _case("conv", "nonnegative", False)
        full = rule(layer, activations._replace(input_nonnegative=False), relevance)
        short = rule(layer, activations, relevance)
        _assert_matches(short, full)
