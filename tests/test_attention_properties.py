r"""Conservation properties of the attention rules (Hypothesis, float64).

- CP-LRP holds the attention weights and gates constant, so a bias-free attention block
  (projections, softmax attention by explicit ops, `F.scaled_dot_product_attention` or
  `nn.MultiheadAttention`, residual sums, RMSNorm, a SwiGLU MLP) is a composition of
  linear maps of the input with LRP-0 on each: $\sum_i R_{x,i}$ equals the explained logit.
- AttnLRP's uniform rule conserves per op: for $z = A B$ with $\epsilon = 0$, each operand
  receives $\sum R / 2$ (Euler: $\langle A, f_A^\top(s)\rangle = \langle s, z\rangle$).
- AttnLRP's softmax rule is the first-order Taylor term: per row,
  $\sum_i R_{x,i} = \sum_j R_j (x_j - \langle s, x\rangle)$, and it is unchanged when a
  constant is added to the row of $x$ (softmax is shift-invariant).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import nn

import lrpfn
from lrpfn import composites, rules

DTYPE = torch.float64


class Block(nn.Module):
    """A bias-free pre-norm decoder block; `attention` picks how attention is written."""

    def __init__(self, width: int, heads: int, attention: str, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.heads, self.attention = heads, attention
        self.scale = (width // heads) ** -0.5
        self.norm = nn.RMSNorm(width, dtype=DTYPE)
        self.qkv = nn.Linear(width, 3 * width, bias=False, dtype=DTYPE)
        self.out = nn.Linear(width, width, bias=False, dtype=DTYPE)
        self.mha = nn.MultiheadAttention(width, heads, bias=False, batch_first=True, dtype=DTYPE)
        self.gate = nn.Linear(width, 2 * width, bias=False, dtype=DTYPE)
        self.up = nn.Linear(width, 2 * width, bias=False, dtype=DTYPE)
        self.down = nn.Linear(2 * width, width, bias=False, dtype=DTYPE)
        self.head = nn.Linear(width, 3, bias=False, dtype=DTYPE)

    def _heads(self, t):
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, x):
        h = self.norm(x)
        if self.attention == "mha":
            attended, _ = self.mha(h, h, h, need_weights=False)
        else:
            qkv = self.qkv(h)
            width = qkv.shape[-1] // 3
            q, k, v = (self._heads(qkv[..., i * width : (i + 1) * width]) for i in range(3))
            if self.attention == "sdpa":
                a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                scores = q @ k.transpose(-2, -1) * self.scale
                a = torch.softmax(scores, dim=-1) @ v
            attended = self.out(a.transpose(1, 2).flatten(-2))
        x = x + attended
        x = x + self.down(F.silu(self.gate(self.norm(x))) * self.up(self.norm(x)))
        return self.head(x[:, -1])


@settings(max_examples=20)
@given(
    width=st.sampled_from([4, 8]),
    heads=st.sampled_from([1, 2]),
    length=st.integers(1, 5),
    batch=st.integers(1, 3),
    attention=st.sampled_from(["ops", "sdpa", "mha"]),
    seed=st.integers(0, 2**16),
)
def test_cp_lrp_conserves_on_bias_free_attention_blocks(
    width, heads, length, batch, attention, seed
):
    model = Block(width, heads, attention, seed).eval()
    x = torch.randn(batch, length, width, dtype=DTYPE)
    relevance = lrpfn.lrp(model, x, composites.cp_lrp(epsilon=0.0), target=0)
    logit = model(x)[:, 0].detach()
    torch.testing.assert_close(
        relevance.sum((1, 2)), logit, rtol=1e-9, atol=1e-9 * logit.abs().max()
    )


@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.integers(1, 5)),
    seed=st.integers(0, 2**16),
)
def test_uniform_rule_gives_each_operand_half(shape, seed):
    batch, i, inner, j = shape
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, i, inner, dtype=DTYPE, generator=generator)
    b = torch.randn(batch, inner, j, dtype=DTYPE, generator=generator)
    relevance = torch.randn(batch, i, j, dtype=DTYPE, generator=generator)

    class Product(nn.Module):
        def forward(self, x):
            return x[:, :i] @ x[:, i:].transpose(-2, -1)

    x = torch.cat([a, b.transpose(-2, -1)], 1)
    got = lrpfn.relevances(Product(), x, rules.UniformProduct(0.0), output_relevance=relevance)["x"]
    total = relevance.sum()
    torch.testing.assert_close(got[:, :i].sum(), total / 2, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got[:, i:].sum(), total / 2, rtol=1e-9, atol=1e-9)


@given(
    rows=st.integers(1, 4),
    length=st.integers(1, 7),
    shift=st.floats(-3, 3),
    seed=st.integers(0, 2**16),
)
def test_softmax_rule_is_the_first_order_taylor_term(rows, length, shift, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, length, dtype=DTYPE, generator=generator)
    relevance = torch.randn(rows, length, dtype=DTYPE, generator=generator)

    class Softmax(nn.Module):
        def forward(self, t):
            return torch.softmax(t, -1)

    def explain(t):
        return lrpfn.relevances(Softmax(), t, composites.attnlrp(), output_relevance=relevance)["t"]

    got = explain(x)
    s = torch.softmax(x, -1)
    expected = (relevance * (x - (s * x).sum(-1, keepdim=True))).sum(-1)
    torch.testing.assert_close(got.sum(-1), expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(explain(x + shift).sum(-1), expected, rtol=1e-9, atol=1e-9)
