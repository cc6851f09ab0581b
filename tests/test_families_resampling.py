"""Resampling and elementwise affine ops against float64 matrix references.

Each op is linear (affine) in its data input, so the reference reads its matrix off the
Jacobian (`reference.affine_matrix`, no lrpfn code) and applies the rules' paper
formulas: epsilon, and z+ / alpha-beta, which see the sign of every weight (bicubic
resampling has negative weights; nearest and bilinear have none).
"""

from __future__ import annotations

import pytest
import reference
import torch
import torch.nn.functional as F
from torch import nn

import lrpfn
from lrpfn import rules

D = torch.float64


class Interpolate(nn.Module):
    def __init__(self, **options):
        super().__init__()
        self.options = options

    def forward(self, x):
        return F.interpolate(x, **self.options)


RESAMPLERS = {
    "nearest x2": Interpolate(scale_factor=2, mode="nearest"),
    "bilinear x2": Interpolate(scale_factor=2, mode="bilinear", align_corners=False),
    "bilinear to 7x5, corners": Interpolate(size=(7, 5), mode="bilinear", align_corners=True),
    "bicubic to 7x9": Interpolate(size=(7, 9), mode="bicubic", align_corners=False),
    "nn.Upsample bicubic x2": nn.Upsample(scale_factor=2, mode="bicubic"),
    "nn.Upsample nearest x2": nn.Upsample(scale_factor=2),
    "linear 1d": Interpolate(scale_factor=1.5, mode="linear"),
}
RULES = {
    "epsilon": (rules.Epsilon(0.01), lambda a, W, b, R: reference.epsilon(a, W, b, R, eps=0.01)),
    "alpha2beta1": (
        rules.AlphaBeta(2.0, 1.0, stabilizer=1e-6),
        lambda a, W, b, R: reference.alpha_beta(a, W, b, R, alpha=2.0, beta=1.0, stabilizer=1e-6),
    ),
}


def _per_sample_reference(op, x, relevance, formula):
    """The rule on each sample's matrix; channels are resampled independently."""
    results = []
    for sample, r in zip(x.split(1), relevance.split(1), strict=True):
        W, b = reference.affine_matrix(op, sample)
        results.append(formula(sample.reshape(1, -1), W, b, r.reshape(1, -1)).reshape(sample.shape))
    return torch.cat(results)


@pytest.mark.parametrize("rule_name", list(RULES))
@pytest.mark.parametrize("name", list(RESAMPLERS))
def test_resampling_is_a_linear_op_under_the_rule(name, rule_name):
    op = RESAMPLERS[name]
    rule, formula = RULES[rule_name]
    generator = torch.Generator().manual_seed(0)
    shape = (2, 2, 5) if "1d" in name else (2, 2, 4, 3)
    x = torch.randn(shape, generator=generator, dtype=D)
    with torch.no_grad():
        out_shape = op(x).shape
    relevance = torch.randn(out_shape, generator=generator, dtype=D)
    result = lrpfn.lrp(op, x, rule, output_relevance=relevance)
    expected = _per_sample_reference(op, x, relevance, formula)
    torch.testing.assert_close(result, expected, rtol=1e-10, atol=1e-12)


def test_bicubic_weights_take_both_signs_so_the_sign_split_rules_see_them():
    """Where the cubic kernel's negative lobes matter, z+ differs from epsilon: the
    reference (with W's real signs) and lrpfn agree, which a non-negative-weight
    treatment of bicubic resampling would not."""
    op = RESAMPLERS["bicubic to 7x9"]
    x = torch.rand(1, 1, 4, 3, dtype=D)  # non-negative inputs, as after a ReLU
    W, _ = reference.affine_matrix(op, x)
    assert bool((W < 0).any())
    relevance = torch.rand(1, 1, 7, 9, dtype=D)
    zplus = lrpfn.lrp(op, x, rules.ZPlus(), output_relevance=relevance)
    expected = reference.alpha_beta(
        x.reshape(1, -1), W, torch.zeros(W.shape[0], dtype=D), relevance.reshape(1, -1),
        alpha=1.0, beta=0.0, stabilizer=1e-6,
    ).reshape(x.shape)  # fmt: skip
    torch.testing.assert_close(zplus, expected, rtol=1e-10, atol=1e-12)


# --- torch.addcmul: an elementwise affine layer ------------------------------------------


class Affine(nn.Module):
    """ResMLP's affine layer: `torch.addcmul(beta, alpha, x)` = x * alpha + beta."""

    def __init__(self, data_in_input: bool = False):
        super().__init__()
        self.alpha = nn.Parameter(torch.randn(1, 1, 4, dtype=D))
        self.beta = nn.Parameter(torch.randn(1, 1, 4, dtype=D))
        self.data_in_input = data_in_input

    def forward(self, x):
        if self.data_in_input:  # x + 0.5 * alpha * beta: a sum with a constant
            return torch.addcmul(x, self.alpha, self.beta, value=0.5)
        return torch.addcmul(self.beta, self.alpha, x)


@pytest.mark.parametrize("data_in_input", [False, True], ids=["x as factor", "x as input"])
@pytest.mark.parametrize("rule_name", list(RULES))
def test_addcmul_is_an_elementwise_affine_layer(data_in_input, rule_name):
    torch.manual_seed(4)
    model = Affine(data_in_input).eval()
    rule, formula = RULES[rule_name]
    x = torch.randn(2, 3, 4, dtype=D)
    relevance = torch.randn(2, 3, 4, dtype=D)
    result = lrpfn.lrp(model, x, rule, output_relevance=relevance)
    expected = _per_sample_reference(model, x, relevance, formula)
    torch.testing.assert_close(result, expected, rtol=1e-10, atol=1e-12)


def test_addcmul_of_several_activations_is_a_named_error():
    class Product(nn.Module):
        def forward(self, x):
            return torch.addcmul(x, x, x)

    with pytest.raises(lrpfn.errors.LRPError, match="addcmul of 3 activations is not an affine op"):
        lrpfn.lrp(
            Product(),
            torch.randn(2, 3, dtype=D),
            rules.Epsilon(),
            output_relevance=torch.ones(2, 3, dtype=D),
        )


def test_bicubic_resampling_of_a_full_image_under_epsilon_needs_no_matrix():
    """Epsilon is exact with the op and its transpose: no (H W) x (H' W') matrix is built
    (240 -> 224 pixels would need 2.9e9 entries); a sign-split rule there is a named error."""
    op = Interpolate(size=(224, 224), mode="bicubic", align_corners=False)
    x = torch.rand(1, 1, 240, 240)
    relevance = torch.rand(1, 1, 224, 224)
    result = lrpfn.lrp(op, x, rules.Epsilon(0.0), output_relevance=relevance)
    torch.testing.assert_close(result.sum(), relevance.sum(), rtol=1e-4, atol=0)
    with pytest.raises(lrpfn.errors.UnsupportedNodeError, match=r"give this node rules\.Epsilon"):
        lrpfn.lrp(op, x, rules.ZPlus(), output_relevance=relevance)
