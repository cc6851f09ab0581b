r"""AttnLRP and CP-LRP rules against float64 matrix-form references written here.

Each reference is the paper's formula over explicit contributions, computed with NumPy-style
broadcasting in float64, independently of lrpfn's transposed ops:

- softmax (AttnLRP, Prop. 3.3): $R_x = x \odot J^\top (R / s)$ with the Jacobian $J$ taken by
  autograd, which must equal $x \odot (R - s \sum R)$;
- products of two activations (the uniform rule, Eq. 7): with contributions
  $c_{ilj} = A_{il} B_{lj}$ of $z_{ij} = \sum_l c_{ilj}$,
  $R_{A,il} = \sum_j c_{ilj} R_{ij} / \mathrm{st}(2 z_{ij})$ and
  $R_{B,lj} = \sum_i c_{ilj} R_{ij} / \mathrm{st}(2 z_{ij})$;
- CP-LRP's $P V$: $R_{V,lj} = \sum_i P_{il} V_{lj} R_{ij} / \mathrm{st}(z_{ij})$, $R_P = 0$.

The ops are explained inside tiny graphs (`lrpfn.relevances` with a given output
relevance), so the handlers, not only the rules, are under test.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lrpfn
from lrpfn import composites, rules
from lrpfn.errors import InvalidRuleError

DTYPE = torch.float64
EPS = 0.125


def _st(z: torch.Tensor, eps: float) -> torch.Tensor:
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def _uniform_reference(a, b, relevance, eps, scale=1.0, constant=0.0):
    """$z = \\text{constant} + \\text{scale} \\cdot A B$ per batch, the uniform rule over contributions."""
    contributions = scale * a[..., :, :, None] * b[..., None, :, :]  # (..., i, l, j)
    z = contributions.sum(-2) + constant
    share = relevance / _st(2 * z, eps)
    return (contributions * share[..., :, None, :]).sum(-1), (
        contributions * share[..., :, None, :]
    ).sum(-3)


class Split(nn.Module):
    """`x[:, 0] (op) x[:, 1]` so that the relevance of both operands is read at `x`."""

    def __init__(self, op):
        super().__init__()
        self.op = op

    def forward(self, x):
        return self.op(x[:, 0], x[:, 1])


def _relevance_at_input(model, x, relevance, rule_map):
    every = lrpfn.relevances(model, x, rule_map, output_relevance=relevance)
    return every["x"]


PRODUCTS = {
    "matmul": lambda a, b: torch.matmul(a, b),
    "operator": lambda a, b: a @ b,
    "bmm": lambda a, b: torch.bmm(a, b),
    "einsum": lambda a, b: torch.einsum("bil,blj->bij", a, b),
    "method": lambda a, b: a.matmul(b),
}


@pytest.mark.parametrize("name", sorted(PRODUCTS))
def test_uniform_rule_matches_the_contribution_form(name):
    torch.manual_seed(0)
    x = torch.randn(3, 2, 4, 4, dtype=DTYPE)
    relevance = torch.randn(3, 4, 4, dtype=DTYPE)
    got = _relevance_at_input(
        Split(PRODUCTS[name]), x, relevance, {composites.MATMUL: rules.UniformProduct(EPS)}
    )
    expected_a, expected_b = _uniform_reference(x[:, 0], x[:, 1], relevance, EPS)
    torch.testing.assert_close(got[:, 0], expected_a, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got[:, 1], expected_b, rtol=1e-10, atol=1e-12)


def test_uniform_rule_broadcasts_over_heads():
    """`(batch, heads, i, l) @ (batch, 1, l, j)`: the shared operand sums over heads."""
    torch.manual_seed(1)
    a = torch.randn(2, 3, 4, 5, dtype=DTYPE)
    b = torch.randn(2, 1, 5, 4, dtype=DTYPE)

    class Broadcast(nn.Module):
        def forward(self, x):
            return torch.matmul(x[..., :5], x[:, :1, :, 5:].transpose(-2, -1))

    x = torch.cat([a, b.transpose(-2, -1).expand(2, 3, 4, 5)], -1)
    relevance = torch.randn(2, 3, 4, 4, dtype=DTYPE)
    got = _relevance_at_input(
        Broadcast(), x, relevance, {composites.MATMUL: rules.UniformProduct(EPS)}
    )
    expected_a, expected_b = _uniform_reference(a, b, relevance, EPS)
    torch.testing.assert_close(got[..., :5], expected_a, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        got[:, :1, :, 5:], expected_b.sum(1, keepdim=True).transpose(-2, -1), rtol=1e-10, atol=1e-12
    )
    assert torch.all(got[:, 1:, :, 5:] == 0)


def test_baddbmm_with_a_constant_bias_matches_the_contribution_form():
    torch.manual_seed(2)
    constant = torch.randn(3, 4, 4, dtype=DTYPE)

    class Baddbmm(nn.Module):
        def forward(self, x):
            return torch.baddbmm(constant, x[:, 0], x[:, 1], beta=0.5, alpha=2.0)

    x = torch.randn(3, 2, 4, 4, dtype=DTYPE)
    relevance = torch.randn(3, 4, 4, dtype=DTYPE)
    got = _relevance_at_input(
        Baddbmm(), x, relevance, {composites.MATMUL: rules.UniformProduct(EPS)}
    )
    expected_a, expected_b = _uniform_reference(
        x[:, 0], x[:, 1], relevance, EPS, scale=2.0, constant=0.5 * constant
    )
    torch.testing.assert_close(got[:, 0], expected_a, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got[:, 1], expected_b, rtol=1e-10, atol=1e-12)


def test_product_with_a_constant_matrix_is_lrp_epsilon():
    """`x @ W` with W a parameter: one data operand, so the uniform rule is LRP-epsilon."""
    torch.manual_seed(3)

    class Project(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(5, 3, dtype=DTYPE))

        def forward(self, x):
            return x @ self.weight

    model = Project()
    x = torch.randn(4, 5, dtype=DTYPE)
    relevance = torch.randn(4, 3, dtype=DTYPE)
    got = _relevance_at_input(model, x, relevance, {composites.MATMUL: rules.UniformProduct(EPS)})
    contributions = x[:, :, None] * model.weight.detach()[None]
    expected = (contributions * (relevance / _st(contributions.sum(1), EPS))[:, None, :]).sum(-1)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


class Attention(nn.Module):
    """`softmax(x_q @ x_k.mT / 2) @ x_v` on three slices of the input."""

    def forward(self, x):
        weights = torch.softmax(x[:, 0] @ x[:, 1].transpose(-2, -1) / 2, dim=-1)
        return weights @ x[:, 2]


def test_softmax_rule_matches_the_jacobian_form():
    torch.manual_seed(4)
    scores = torch.randn(3, 4, 5, dtype=DTYPE)

    class Softmax(nn.Module):
        def forward(self, x):
            return F.softmax(x, dim=-1)

    relevance = torch.randn(3, 4, 5, dtype=DTYPE)
    got = _relevance_at_input(
        Softmax(), scores, relevance, {composites.SOFTMAX: rules.AttnSoftmax()}
    )
    s = torch.softmax(scores, -1)
    jacobian = torch.autograd.functional.jacobian(lambda t: torch.softmax(t, -1), scores)
    # jacobian[b, i, j, b', i', k] = d s[b, i, j] / d x[b', i', k]
    expected = scores * torch.einsum("bij,bijbik->bik", relevance / s, jacobian)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "softmax",
    [
        lambda t: torch.softmax(t, -1),
        lambda t: t.softmax(dim=-1),
        nn.Softmax(dim=-1),
    ],
    ids=["torch", "method", "module"],
)
def test_every_softmax_form_has_the_rule(softmax):
    torch.manual_seed(5)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.softmax = softmax if isinstance(softmax, nn.Module) else None

        def forward(self, x):
            return self.softmax(x) if self.softmax is not None else softmax(x)

    x = torch.randn(2, 6, dtype=DTYPE)
    relevance = torch.randn(2, 6, dtype=DTYPE)
    got = _relevance_at_input(Model(), x, relevance, composites.attnlrp())
    s = torch.softmax(x, -1)
    torch.testing.assert_close(got, x * (relevance - s * relevance.sum(-1, keepdim=True)))


def test_masked_softmax_entries_get_no_relevance_and_no_nan():
    mask = torch.tensor([[True, True, False, False]])

    class Masked(nn.Module):
        def forward(self, x):
            return torch.softmax(x.masked_fill(~mask, float("-inf")), -1)

    x = torch.randn(3, 4, dtype=DTYPE)
    relevance = torch.randn(3, 4, dtype=DTYPE) * mask
    got = _relevance_at_input(Masked(), x, relevance, composites.attnlrp())
    assert torch.isfinite(got).all()
    assert torch.all(got[:, 2:] == 0)
    s = torch.softmax(x[:, :2], -1)
    expected = x[:, :2] * (relevance[:, :2] - s * relevance[:, :2].sum(-1, keepdim=True))
    torch.testing.assert_close(got[:, :2], expected)


def test_attnlrp_attention_head_matches_the_chained_references():
    """Q K^T (uniform), softmax (AttnLRP), P V (uniform), chained by hand in float64."""
    torch.manual_seed(6)
    x = torch.randn(2, 3, 4, 5, dtype=DTYPE)
    relevance = torch.randn(2, 4, 5, dtype=DTYPE)
    got = _relevance_at_input(Attention(), x, relevance, composites.attnlrp(epsilon=EPS))
    q, k, v = x[:, 0], x[:, 1], x[:, 2]
    logits = q @ k.transpose(-2, -1)
    p = torch.softmax(logits / 2, -1)
    r_p, r_v = _uniform_reference(p, v, relevance, EPS)
    r_scaled = (logits / 2) * (r_p - p * r_p.sum(-1, keepdim=True))  # the constant /2 passes R
    r_q, r_kt = _uniform_reference(q, k.transpose(-2, -1), r_scaled, EPS)
    torch.testing.assert_close(got[:, 0], r_q, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got[:, 1], r_kt.transpose(-2, -1), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got[:, 2], r_v, rtol=1e-10, atol=1e-12)


def test_cp_lrp_holds_the_attention_weights_constant():
    torch.manual_seed(7)
    x = torch.randn(2, 3, 4, 5, dtype=DTYPE)
    relevance = torch.randn(2, 4, 5, dtype=DTYPE)
    got = _relevance_at_input(Attention(), x, relevance, composites.cp_lrp(epsilon=EPS))
    p = torch.softmax(x[:, 0] @ x[:, 1].transpose(-2, -1) / 2, -1)
    v = x[:, 2]
    contributions = p[..., :, :, None] * v[..., None, :, :]
    share = relevance / _st(contributions.sum(-2), EPS)
    torch.testing.assert_close(got[:, 2], (contributions * share[..., :, None, :]).sum(-3))
    assert torch.all(got[:, :2] == 0)


def test_cp_lrp_finds_the_softmax_operand_through_dropout_and_casts():
    class Attention2(nn.Module):
        def __init__(self):
            super().__init__()
            self.dropout = nn.Dropout(0.1)

        def forward(self, x):
            scores = x[:, 0] @ x[:, 1].transpose(-2, -1)
            weights = self.dropout(torch.softmax(scores, -1).float()).to(x.dtype)
            return torch.matmul(x[:, 2].transpose(-2, -1), weights.transpose(-2, -1))

    x = torch.randn(2, 3, 4, 4, dtype=DTYPE)
    relevance = torch.randn(2, 4, 4, dtype=DTYPE)
    got = _relevance_at_input(Attention2().eval(), x, relevance, composites.cp_lrp(epsilon=0.0))
    assert torch.all(got[:, :2] == 0)
    torch.testing.assert_close(got[:, 2].sum(), relevance.sum())


def test_masked_fill_and_where_route_relevance_to_the_kept_entries():
    mask = torch.tensor([True, False, True, False, True])

    class Masks(nn.Module):
        def forward(self, x):
            return torch.where(mask, x, torch.zeros(())) + x.masked_fill(mask, 3.0)

    x = torch.randn(2, 5, dtype=DTYPE)
    relevance = torch.randn(2, 5, dtype=DTYPE)
    every = lrpfn.relevances(Masks(), x, rules.Epsilon(0.0), output_relevance=relevance)
    # the sum's two operands are x (kept) and 0 or 3 (masked): proportional split
    z = torch.where(mask, x, 0.0) + torch.where(mask, 3.0, x)
    expected = torch.where(mask, x / z * relevance, x / z * relevance)
    torch.testing.assert_close(every["x"], expected)


def test_gated_product_rules_know_the_gate():
    """SwiGLU `silu(x W_g) * (x W_u)`: AttnLRP splits equally, CP-LRP gives all to the signal."""
    torch.manual_seed(8)

    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate = nn.Linear(4, 6, bias=False, dtype=DTYPE)
            self.up = nn.Linear(4, 6, bias=False, dtype=DTYPE)

        def forward(self, x):
            return F.silu(self.gate(x)) * self.up(x)

    model = Gated()
    x = torch.randn(3, 4, dtype=DTYPE)
    relevance = torch.randn(3, 6, dtype=DTYPE)
    equal = lrpfn.relevances(model, x, composites.attnlrp(0.0), output_relevance=relevance)
    torch.testing.assert_close(equal["up"], relevance / 2)
    torch.testing.assert_close(equal["gate"], relevance / 2)  # silu passes (identity rule)
    constant = lrpfn.relevances(model, x, composites.cp_lrp(0.0), output_relevance=relevance)
    torch.testing.assert_close(constant["up"], relevance)
    assert "gate" not in constant or torch.all(constant["gate"] == 0)


@pytest.mark.parametrize(
    "norm",
    [
        lambda: nn.RMSNorm(6, eps=1e-5, dtype=DTYPE),
        lambda: lambda t: F.rms_norm(t, (6,), torch.linspace(0.5, 2, 6, dtype=DTYPE), 1e-5),
        lambda: (
            lambda t: (
                torch.linspace(0.5, 2, 6, dtype=DTYPE)
                * (t.float() * torch.rsqrt(t.float().pow(2).mean(-1, keepdim=True) + 1e-5)).to(
                    t.dtype
                )
            )
        ),
    ],
    ids=["module", "functional", "computed"],
)
def test_rms_norm_passes_relevance(norm):
    """The rms is held constant: $y = x \\odot w / \\mathrm{rms}$ is diagonal, so $R_x = R$."""
    layer = norm()

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = layer if isinstance(layer, nn.Module) else None

        def forward(self, x):
            return self.norm(x) if self.norm is not None else layer(x)

    x = torch.randn(2, 3, 6, dtype=DTYPE)
    relevance = torch.randn(2, 3, 6, dtype=DTYPE)
    plan = lrpfn.prepare(Model(), composites.attnlrp())
    torch.testing.assert_close(plan.module(x), Model()(x))
    every = lrpfn.relevances(plan, x, output_relevance=relevance)
    torch.testing.assert_close(every["x"], relevance)


def test_rule_hyperparameters_are_validated():
    with pytest.raises(InvalidRuleError, match="epsilon"):
        rules.UniformProduct(epsilon=-1.0)
    with pytest.raises(InvalidRuleError, match="epsilon"):
        rules.ConstantAttention(epsilon=float("nan"))


def test_presets_assign_the_attention_rules_by_family():
    plan = lrpfn.prepare(Attention(), composites.cp_lrp())
    assert set(map(type, plan.rules.values())) >= {rules.StopSoftmax, rules.ConstantAttention}
    plan = lrpfn.prepare(Attention(), rules.Epsilon())  # a single rule: linear nodes only
    assert {type(rule) for name, rule in plan.rules.items() if "matmul" in name} == {
        rules.UniformProduct
    }
    assert isinstance(plan.rules["softmax"], rules.AttnSoftmax)
    assert "attnlrp" in composites.PRESETS and "cp_lrp" in composites.PRESETS
