"""Normalisations with their statistic held constant, against float64 matrix references.

Group norm is, per sample with its statistics frozen, the affine map
$z = (x - \\bar{x}_g) \\sigma_g^{-1} w_c + b_c$; the reference builds that map as a plain
function of the flattened sample, reads its matrix off the Jacobian
(`reference.affine_matrix`) and applies the rules' paper formulas. Functional batch norm
must give exactly what the module form gives (folded into the convolution before it, or a
per-channel affine node). `F.normalize` and vector norms hold the norm constant, a
positive diagonal scaling: relevance passes unchanged.
"""

from __future__ import annotations

import pytest
import reference
import torch
import torch.nn.functional as F
from torch import nn

import lrpfn
from lrpfn import rules
from lrpfn.capture import FOLDED
from lrpfn.ops.functional import channel_affine

D = torch.float64  # every comparison in float64


def _group_norm_held(sample: torch.Tensor, groups: int, weight, bias, eps: float):
    """The affine map of one sample (shape (1, C, ...)) with its group standard deviation
    frozen (the centering stays: it is linear in the input)."""
    grouped = sample.reshape(1, groups, -1)
    inverse_std = 1.0 / torch.sqrt(grouped.var(-1, unbiased=False, keepdim=True) + eps)
    view = (1, -1) + (1,) * (sample.ndim - 2)

    def affine(v: torch.Tensor) -> torch.Tensor:
        grouped = v.reshape(1, groups, -1)
        normed = ((grouped - grouped.mean(-1, keepdim=True)) * inverse_std).reshape(v.shape)
        return normed * weight.reshape(view) + bias.reshape(view)

    return affine


def _reference(x, relevance, groups, weight, bias, eps, rule):
    results = []
    for sample, r in zip(x.split(1), relevance.split(1), strict=True):
        affine = _group_norm_held(sample, groups, weight, bias, eps)
        W, b = reference.affine_matrix(affine, sample)  # W from the Jacobian, b = f(0)
        results.append(rule(sample.reshape(1, -1), W, b, r.reshape(1, -1)).reshape(sample.shape))
    return torch.cat(results)


class GroupNormModule(nn.Module):
    def __init__(self, functional: bool):
        super().__init__()
        self.norm = nn.GroupNorm(2, 6, eps=1e-3)
        with torch.no_grad():
            self.norm.weight.normal_()
            self.norm.bias.normal_()
        self.functional = functional

    def forward(self, x):
        if self.functional:
            return F.group_norm(x, 2, self.norm.weight, self.norm.bias, 1e-3)
        return self.norm(x)


@pytest.mark.parametrize("functional", [False, True], ids=["nn.GroupNorm", "F.group_norm"])
@pytest.mark.parametrize(
    ("rule", "formula"),
    [
        (rules.Epsilon(0.1), lambda a, W, b, R: reference.epsilon(a, W, b, R, eps=0.1)),
        (rules.Epsilon(0.0), lambda a, W, b, R: reference.epsilon(a, W, b, R, eps=0.0)),
    ],
    ids=["epsilon", "lrp0"],
)
def test_group_norm_is_the_ln_rule_per_group_against_the_matrix_reference(
    functional, rule, formula
):
    """Epsilon and LRP-0 on the frozen-statistics map. (Sign-split rules modify the scale
    vector $w$, as for LayerNorm, not the full matrix with its centering: no matrix form.)"""
    torch.manual_seed(0)
    model = GroupNormModule(functional).double().eval()
    x = torch.randn(3, 6, 4, 5, dtype=D)
    relevance = torch.randn(3, 6, 4, 5, dtype=D)
    result = lrpfn.lrp(model, x, rule, output_relevance=relevance)
    norm = model.norm
    expected = _reference(x, relevance, 2, norm.weight.detach(), norm.bias.detach(), 1e-3, formula)
    torch.testing.assert_close(result, expected, rtol=1e-10, atol=1e-12)


def test_group_norm_without_bias_conserves_under_lrp0():
    torch.manual_seed(1)
    model = nn.GroupNorm(3, 6, affine=False).double().eval()
    x = torch.randn(2, 6, 3, 3, dtype=D)
    relevance = model(x)
    result = lrpfn.lrp(model, x, rules.Epsilon(0.0), output_relevance=relevance)
    torch.testing.assert_close(result.sum((1, 2, 3)), relevance.sum((1, 2, 3)))


# --- functional batch norm: the same fold as the module form ------------------------------


class ModuleBN(nn.Module):
    """conv -> BatchNorm2d -> relu -> (+ x) -> BatchNorm2d: one folded, one not."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(3)
        self.bn2 = nn.BatchNorm2d(3)
        for bn in (self.bn1, self.bn2):
            with torch.no_grad():
                bn.running_mean.normal_()
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.normal_()
                bn.bias.normal_()

    def forward(self, x):
        return self.bn2(torch.relu(self.bn1(self.conv(x))) + x)


class FunctionalBN(ModuleBN):
    """The same model with `F.batch_norm` in the argument forms timm uses."""

    def __init__(self, form: str):
        super().__init__()
        self.form = form

    def _bn(self, bn, x):
        if self.form == "positional":  # timm's BatchNormAct2d
            return F.batch_norm(
                x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.1, bn.eps
            )
        if self.form == "keywords":
            return F.batch_norm(
                x, bn.running_mean, bn.running_var, weight=bn.weight, bias=bn.bias,
                training=False, momentum=0.1, eps=bn.eps,
            )  # fmt: skip
        # "computed": statistics that are not module attributes, made affine at run time
        return F.batch_norm(x, bn.running_mean * 1.0, bn.running_var + 0.0, bn.weight, bn.bias)

    def forward(self, x):
        return self._bn(self.bn2, torch.relu(self._bn(self.bn1, self.conv(x))) + x)


@pytest.mark.parametrize("form", ["positional", "keywords", "computed"])
@pytest.mark.parametrize("rule", [rules.Epsilon(1e-3), rules.ZPlus(), rules.Gamma(0.5)])
def test_functional_batch_norm_is_explained_exactly_like_the_module_form(form, rule):
    torch.manual_seed(2)
    module_model = ModuleBN().double().eval()
    functional_model = FunctionalBN(form).double().eval()
    functional_model.load_state_dict(module_model.state_dict())
    x = torch.randn(2, 3, 5, 5, dtype=D)
    relevance = torch.randn(2, 3, 5, 5, dtype=D)
    expected = lrpfn.lrp(module_model, x, rule, output_relevance=relevance)
    result = lrpfn.lrp(functional_model, x, rule, output_relevance=relevance)
    torch.testing.assert_close(result, expected, rtol=1e-12, atol=1e-12)


def test_functional_batch_norm_after_a_convolution_is_folded_into_it():
    plan = lrpfn.prepare(FunctionalBN("positional").eval(), rules.Epsilon())
    targets = [node.target for node in plan.module.graph.nodes]
    assert F.batch_norm not in targets
    assert targets.count(channel_affine) == 1  # the second follows an addition
    conv = next(node for node in plan.module.graph.nodes if node.target is F.conv2d)
    assert FOLDED in conv.meta


def test_functional_batch_norm_in_training_mode_is_refused():
    class Training(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            return F.batch_norm(x, self.bn.running_mean, self.bn.running_var, training=True)

    with pytest.raises(lrpfn.errors.TrainingModeError, match="training=True"):
        lrpfn.prepare(Training().eval(), rules.Epsilon())


# --- norms held constant ---------------------------------------------------------------


class Normalize(nn.Module):
    def forward(self, x):
        return F.normalize(x, p=2.0, dim=1)


class ResponseNorm(nn.Module):
    """ConvNeXt-V2's global response normalisation, as timm writes it."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(channels, dtype=D))
        self.bias = nn.Parameter(torch.randn(channels, dtype=D))

    def forward(self, x):
        x_g = x.norm(p=2, dim=(2, 3), keepdim=True)
        x_n = x_g / (x_g.mean(dim=1, keepdim=True) + 1e-6)
        shape = (1, -1, 1, 1)
        return x + torch.addcmul(self.bias.view(shape), self.weight.view(shape), x * x_n)


def test_normalize_holds_the_norm_constant_so_relevance_passes():
    x, relevance = torch.randn(2, 5, 3, dtype=D), torch.randn(2, 5, 3, dtype=D)
    result = lrpfn.lrp(Normalize(), x, rules.Epsilon(0.0), output_relevance=relevance)
    torch.testing.assert_close(result, relevance, rtol=0, atol=0)


def test_response_norm_with_the_norm_held_constant_against_the_matrix_reference():
    """With $n = \\lVert x \\rVert$ frozen, GRN is $z = x + (x \\odot k) w + b$, $k = n /
    (\\bar{n} + 10^{-6})$: an affine map whose matrix the reference reads off; LRP-0 and
    epsilon through the graph (a sum of the residual and an affine branch) are checked
    against the chained matrix rules: affine branch, then the sum."""
    torch.manual_seed(3)
    model = ResponseNorm(4).double().eval()
    x = torch.randn(2, 4, 3, 3, dtype=D)
    relevance = torch.randn(2, 4, 3, 3, dtype=D)
    eps = 0.01
    result = lrpfn.lrp(model, x, rules.Epsilon(eps), output_relevance=relevance)
    w, b = model.weight.detach().reshape(1, -1, 1, 1), model.bias.detach().reshape(1, -1, 1, 1)
    x_g = x.norm(p=2, dim=(2, 3), keepdim=True)
    k = x_g / (x_g.mean(dim=1, keepdim=True) + 1e-6)
    branch = x * k * w + b
    z = x + branch
    # the sum: R splits between x and the branch by their shares of z (epsilon stabilised)
    s = relevance / torch.where(z >= 0, z + eps, z - eps)
    from_residual, to_branch = x * s, branch * s
    # the affine branch, diagonal: R_x = x k w R_branch / st(x k w + b)
    s_branch = to_branch / torch.where(branch >= 0, branch + eps, branch - eps)
    expected = from_residual + x * k * w * s_branch
    torch.testing.assert_close(result, expected, rtol=1e-10, atol=1e-12)


def test_vector_norm_nodes_carry_no_relevance():
    plan = lrpfn.prepare(ResponseNorm(4).eval(), rules.Epsilon())
    norm = next(node for node in plan.module.graph.nodes if node.target == "norm")
    # a constant, like a shape query: no node passes relevance to it
    assert all(norm not in inputs for inputs in plan.data_inputs.values())
    assert plan.handlers[norm].kind == "none"
