"""Every rule on every linear layer type equals its float64 matrix-form reference.

The reference (`tests/reference.py`) reads the layer's matrix $W$ and bias $b$ off its
Jacobian and writes each rule from the paper formula over the contributions
$c_{ji} = a_i W_{ji}$; lrpfn computes the same relevance with the layer's own forward
and transposed ops. They must agree to rtol 1e-10 in float64.

Inputs of mixed sign exercise the sign-split terms (generalized Gamma, AlphaBeta and ZPlus
on $a^-$); non-negative inputs behind a ReLU exercise the path where the graph proves
$a \\ge 0$ and the $a^-$ terms are skipped. Output relevance is random and of mixed sign.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from functools import cache, partial
from typing import NamedTuple

import pytest
import reference
import torch
from torch import nn

import lrpfn
from lrpfn.errors import InvalidRuleError
from lrpfn.rules import (
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    Gradient,
    Pass,
    WSquare,
    ZBox,
    ZPlus,
)

DTYPE = torch.float64
BATCH = 3
# Stabilizers exactly representable in float32 (powers of two), so that these tests check the
# rules' algebra; `test_stabilizer_keeps_float64_precision` checks eps = 0.1 on its own.
EPS = 0.125
STAB = 2.0**-7

# name -> (layer factory, input shape of one sample); small, with stride, padding,
# dilation, groups, no-bias variants, padding modes and parameter-free linear layers.
LAYERS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "linear": (lambda: nn.Linear(6, 5), (6,)),
    "linear_square_nobias": (lambda: nn.Linear(5, 5, bias=False), (5,)),
    "conv1d_stride_dilation_groups": (
        lambda: nn.Conv1d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2),
        (4, 11),
    ),
    "conv1d_same_even_kernel": (lambda: nn.Conv1d(2, 3, 4, padding="same"), (2, 9)),
    "conv2d_stride_groups": (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), (4, 7, 6)),
    "conv2d_dilation_nobias": (
        lambda: nn.Conv2d(3, 4, (3, 2), stride=(1, 2), padding=(2, 1), dilation=(2, 1), bias=False),
        (3, 7, 6),
    ),
    "conv2d_same_shape": (lambda: nn.Conv2d(3, 3, 3, padding=1), (3, 5, 5)),
    "conv2d_reflect_same_shape": (
        lambda: nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect"),
        (3, 5, 5),
    ),
    "conv2d_reflect_stride": (
        lambda: nn.Conv2d(2, 4, 3, stride=2, padding=(1, 2), padding_mode="reflect"),
        (2, 6, 5),
    ),
    "conv2d_circular_groups": (
        lambda: nn.Conv2d(4, 2, 3, padding=(2, 1), padding_mode="circular", groups=2),
        (4, 5, 4),
    ),
    "conv2d_replicate": (
        lambda: nn.Conv2d(2, 3, 2, padding=1, padding_mode="replicate"),
        (2, 4, 3),
    ),
    "conv3d_stride_groups": (
        lambda: nn.Conv3d(2, 4, 2, stride=(1, 2, 1), padding=1, groups=2),
        (2, 3, 4, 3),
    ),
    "conv3d_reflect": (lambda: nn.Conv3d(1, 2, 3, padding=1, padding_mode="reflect"), (1, 3, 3, 4)),
    "convtranspose1d_dilation_groups": (
        lambda: nn.ConvTranspose1d(
            4, 6, 3, stride=2, padding=1, output_padding=1, groups=2, dilation=2
        ),
        (4, 5),
    ),
    "convtranspose2d_stride_groups": (
        lambda: nn.ConvTranspose2d(
            4, 2, (3, 2), stride=(2, 1), padding=(1, 0), output_padding=(1, 0), groups=2
        ),
        (4, 4, 3),
    ),
    "convtranspose2d_dilation_nobias": (
        lambda: nn.ConvTranspose2d(3, 4, 3, stride=2, dilation=2, bias=False),
        (3, 3, 3),
    ),
    "convtranspose3d_stride": (
        lambda: nn.ConvTranspose3d(2, 2, 2, stride=2, padding=1),
        (2, 3, 3, 2),
    ),
    "avgpool2d": (lambda: nn.AvgPool2d(2), (3, 4, 6)),
    "avgpool2d_padded_overlapping": (
        lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=True),
        (2, 5, 5),
    ),
    "avgpool2d_exclude_pad": (
        lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        (2, 5, 5),
    ),
    "avgpool2d_same_shape": (lambda: nn.AvgPool2d(3, stride=1, padding=1), (2, 4, 4)),
    "adaptiveavgpool2d_overlapping": (lambda: nn.AdaptiveAvgPool2d((3, 2)), (2, 5, 7)),
}


class Case(NamedTuple):
    layer: nn.Module
    form: reference.DenseForm
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]

    @property
    def parameter_free(self) -> bool:
        return not list(self.layer.parameters())


@cache
def case(name: str) -> Case:
    """The layer (float64, seeded) and its matrix form, built once per name."""
    factory, input_shape = LAYERS[name]
    torch.manual_seed(sorted(LAYERS).index(name))
    layer = factory().to(DTYPE).eval()
    with torch.no_grad():  # biases of clearly non-zero size, both signs
        if getattr(layer, "bias", None) is not None:
            layer.bias.copy_(torch.randn_like(layer.bias) * 0.5)
    sample = torch.randn(1, *input_shape, dtype=DTYPE)
    with torch.no_grad():
        output_shape = tuple(layer(sample).shape[1:])
    return Case(layer, reference.dense_form(layer, sample), input_shape, output_shape)


def _bounds(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel bounds, shaped (1, C, 1, ...) to broadcast against the input."""
    channels = shape[0]
    view = (1, channels) + (1,) * (len(shape) - 1)
    low = (-1.0 - 0.25 * torch.arange(channels, dtype=DTYPE)).reshape(view)
    high = (1.5 + 0.5 * torch.arange(channels, dtype=DTYPE)).reshape(view)
    return low, high


def _element_bounds(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds for every input element, shaped (1, *shape)."""
    generator = torch.Generator().manual_seed(11)
    low = -1.0 - torch.rand(1, *shape, dtype=DTYPE, generator=generator)
    return low, low + 3.0


def _zbox(low, high, stabilizer: float, c: Case):
    """ZBox with `low`, `high` (numbers or tensors), and its reference on the lifted bounds."""
    full = (1, *c.input_shape)
    low_in = torch.as_tensor(low, dtype=DTYPE).expand(full).reshape(1, -1)
    high_in = torch.as_tensor(high, dtype=DTYPE).expand(full).reshape(1, -1)
    ref = partial(
        reference.zbox,
        low=c.form.lift(low_in),
        high=c.form.lift(high_in),
        stabilizer=stabilizer,
    )
    return ZBox(low, high, stabilizer), ref


# name -> (case -> (lrpfn rule, reference rule or None for Pass))
RULES: dict[str, Callable[[Case], tuple]] = {
    "epsilon": lambda c: (Epsilon(EPS), partial(reference.epsilon, eps=EPS)),
    "epsilon_0": lambda c: (Epsilon(0.0), partial(reference.epsilon, eps=0.0)),
    "gamma": lambda c: (
        Gamma(0.5, stabilizer=STAB),
        partial(reference.gamma, g=0.5, stabilizer=STAB),
    ),
    "gamma_default": lambda c: (Gamma(), partial(reference.gamma, g=0.25, stabilizer=1e-6)),
    "alpha2beta1": lambda c: (
        AlphaBeta(2, 1, stabilizer=STAB),
        partial(reference.alpha_beta, alpha=2, beta=1, stabilizer=STAB),
    ),
    "alpha2beta1_ignore_bias": lambda c: (
        AlphaBeta(2, 1, stabilizer=STAB, ignore_bias=True),
        partial(reference.alpha_beta, alpha=2, beta=1, stabilizer=STAB, ignore_bias=True),
    ),
    "alpha1beta0": lambda c: (
        AlphaBeta(1, 0, stabilizer=STAB),
        partial(reference.alpha_beta, alpha=1, beta=0, stabilizer=STAB),
    ),
    "alpha1beta0_ignore_bias": lambda c: (
        AlphaBeta(1, 0, stabilizer=STAB, ignore_bias=True),
        partial(reference.alpha_beta, alpha=1, beta=0, stabilizer=STAB, ignore_bias=True),
    ),
    "zplus": lambda c: (
        ZPlus(stabilizer=STAB),
        partial(reference.alpha_beta, alpha=1, beta=0, stabilizer=STAB),
    ),
    "zplus_ignore_bias": lambda c: (
        ZPlus(stabilizer=STAB, ignore_bias=True),
        partial(reference.alpha_beta, alpha=1, beta=0, stabilizer=STAB, ignore_bias=True),
    ),
    "zbox_scalar": lambda c: _zbox(-1.5, 2.0, STAB, c),
    "zbox_per_channel": lambda c: _zbox(*_bounds(c.input_shape), STAB, c),
    "zbox_per_element": lambda c: _zbox(*_element_bounds(c.input_shape), STAB, c),
    "flat": lambda c: (
        Flat(STAB),
        partial(reference.flat, stabilizer=STAB, parameter_free=c.parameter_free),
    ),
    "wsquare": lambda c: (
        WSquare(STAB / 8),
        partial(reference.wsquare, stabilizer=STAB / 8, parameter_free=c.parameter_free),
    ),
    "gradient": lambda c: (Gradient(), reference.gradient),
    "pass": lambda c: (Pass(), None),
}


def _inputs(kind: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, *shape, dtype=DTYPE, generator=generator)
    return x if kind == "mixed" else x.clamp(min=0)  # about half exact zeros


def _assert_matches(actual: torch.Tensor, expected: torch.Tensor) -> None:
    # rtol 1e-10 elementwise; the absolute floor (1e-12 of the largest entry) only covers
    # entries that are zero up to rounding (e.g. sums of contributions that cancel).
    floor = 1e-12 * float(expected.abs().max().clamp(min=1e-300))
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=floor)


# torch warns that an even kernel with padding="same" needs a padded copy (asymmetric padding)
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("inputs", ["mixed", "nonnegative"])
@pytest.mark.parametrize("rule_name", list(RULES))
@pytest.mark.parametrize("layer_name", list(LAYERS))
def test_rule_equals_matrix_reference(layer_name: str, rule_name: str, inputs: str) -> None:
    """lrpfn.lrp on `layer` (behind a ReLU for non-negative inputs) equals the matrix form."""
    c = case(layer_name)
    rule, ref = RULES[rule_name](c)
    seed = zlib.crc32(f"{layer_name}/{inputs}".encode())
    x = _inputs(inputs, c.input_shape, seed)
    relevance = torch.randn(
        BATCH, *c.output_shape, dtype=DTYPE, generator=torch.Generator().manual_seed(seed + 1)
    )
    model = nn.Sequential(c.layer) if inputs == "mixed" else nn.Sequential(nn.ReLU(), c.layer)

    if rule_name == "pass" and c.output_shape != c.input_shape:
        with pytest.raises(InvalidRuleError, match="Pass\\(\\) needs the output"):
            lrpfn.lrp(model, x, rule, output_relevance=relevance)
        return
    actual = lrpfn.lrp(model, x, rule, output_relevance=relevance)

    expected = relevance if ref is None else c.form.explain(ref, x, relevance)  # Pass: R
    if rule_name == "gradient" and inputs == "nonnegative":
        # a signal rule makes the ReLU propagate by its derivative: 1[x > 0]
        expected = expected * (x > 0)
    assert actual.dtype == DTYPE
    _assert_matches(actual, expected)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("layer_name", list(LAYERS))
def test_relu_input_is_known_nonnegative(layer_name: str) -> None:
    """Behind a ReLU, the layer's input is marked non-negative, so the tests above with
    non-negative inputs run the path that skips the $a^-$ terms."""
    model = nn.Sequential(nn.ReLU(), case(layer_name).layer)
    plan = lrpfn.prepare(model, Gamma())
    (layer_node,) = [node for node in plan.module.graph.nodes if node.name in plan.rules]
    data_input = plan.data_inputs[layer_node][0]
    assert data_input in plan.nonnegative
    # and without the ReLU it is not
    bare = lrpfn.prepare(nn.Sequential(case(layer_name).layer), Gamma())
    (bare_node,) = [node for node in bare.module.graph.nodes if node.name in bare.rules]
    assert bare.data_inputs[bare_node][0] not in bare.nonnegative


def test_reference_sign_split_differs_on_merged_padding_matrix() -> None:
    """Why the reference keeps reflect padding as a separate copy matrix: on the merged
    matrix $W\\,\\text{route}$ an input copied twice into one receptive field has the summed
    weight $w_1 + w_2$, and $(w_1 + w_2)^+ \\ne w_1^+ + w_2^+$ when the signs differ, so the
    sign-split rules would differ; LRP-epsilon does not split and agrees either way."""
    c = case("conv2d_reflect_same_shape")
    x = _inputs("mixed", c.input_shape, 0)
    relevance = torch.randn(BATCH, *c.output_shape, dtype=DTYPE)
    merged = reference.DenseForm(c.form.weight @ c.form.route, c.form.bias)
    eps = partial(reference.epsilon, eps=0.1)
    zplus = partial(reference.alpha_beta, alpha=1, beta=0, stabilizer=STAB)
    _assert_matches(merged.explain(eps, x, relevance), c.form.explain(eps, x, relevance))
    difference = merged.explain(zplus, x, relevance) - c.form.explain(zplus, x, relevance)
    assert difference.abs().max() > 1e-3


@pytest.mark.parametrize(
    "layer_name", [name for name in LAYERS if name.startswith(("avgpool", "adaptive"))]
)
@pytest.mark.parametrize("rule", [Flat(0.0), WSquare(0.0)], ids=["flat", "wsquare"])
def test_flat_and_wsquare_on_pooling_share_like_the_matrix_form(layer_name: str, rule) -> None:
    """Without a stabilizer, Flat and WSquare on a pooling layer give exactly the shares of
    the matrix form ($[W_{ji} \\ne 0]$ resp. $W_{ji}^2$, uniform within a window); with
    one, lrpfn's denominators are those of the pooling operator itself (see
    `reference.flat`)."""
    c = case(layer_name)
    x = _inputs("mixed", c.input_shape, 1)
    relevance = torch.randn(BATCH, *c.output_shape, dtype=DTYPE)
    ref = reference.flat if isinstance(rule, Flat) else reference.wsquare
    expected = c.form.explain(partial(ref, stabilizer=0.0), x, relevance)
    _assert_matches(
        lrpfn.lrp(nn.Sequential(c.layer), x, rule, output_relevance=relevance), expected
    )


@pytest.mark.parametrize("rule_name", ["epsilon", "alpha2beta1", "flat"])
def test_stabilizer_keeps_float64_precision(rule_name: str) -> None:
    """eps = 0.1 (not a float32 number) must reach float64 denominators unrounded."""
    c = case("linear")
    rule, ref = {
        "epsilon": (Epsilon(0.1), partial(reference.epsilon, eps=0.1)),
        "alpha2beta1": (
            AlphaBeta(2, 1, stabilizer=0.1),
            partial(reference.alpha_beta, alpha=2, beta=1, stabilizer=0.1),
        ),
        "flat": (Flat(0.1), partial(reference.flat, stabilizer=0.1)),
    }[rule_name]
    x = _inputs("mixed", c.input_shape, 2)
    relevance = torch.randn(BATCH, *c.output_shape, dtype=DTYPE)
    actual = lrpfn.lrp(nn.Sequential(c.layer), x, rule, output_relevance=relevance)
    _assert_matches(actual, c.form.explain(ref, x, relevance))
