"""The attention passes rewrite the graph into ops with handlers and compute the same function.

`nn.MultiheadAttention` and `F.scaled_dot_product_attention` are decomposed into
projections, `Q @ K.mT`, scale and mask, softmax and `P @ V`; the decomposed canonical
graph must reproduce the original module's output (float64, 1e-12) for every option the
pass accepts, and the nodes it cannot decompose must be reported, never guessed.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lrpfn
from lrpfn import composites
from lrpfn.errors import TrainingModeError, UnsupportedNodeError

DTYPE = torch.float64


class SelfAttention(nn.Module):
    def __init__(self, mha: nn.Module, **call):
        super().__init__()
        self.mha, self.call = mha, call

    def forward(self, x):
        out, _ = self.mha(x, x, x, need_weights=False, **self.call)
        return out


class CrossAttention(nn.Module):
    def __init__(self, mha: nn.Module, memory: torch.Tensor):
        super().__init__()
        self.mha = mha
        self.register_buffer("memory", memory)

    def forward(self, x):
        return self.mha(x, self.memory, self.memory, need_weights=False)[0]


def _targets(plan) -> set:
    return {node.target for node in plan.module.graph.nodes}


def _check(model, x):
    plan = lrpfn.prepare(model, composites.attnlrp())
    modules = [n for n in plan.module.graph.nodes if n.op == "call_module"]
    assert not any(
        isinstance(plan.module.get_submodule(n.target), nn.MultiheadAttention) for n in modules
    )
    assert F.scaled_dot_product_attention not in _targets(plan)
    assert torch.softmax in _targets(plan)
    torch.testing.assert_close(plan.module(x), model(x), rtol=1e-12, atol=1e-12)
    relevance = lrpfn.lrp(plan, x, output_relevance=torch.ones_like(model(x)))
    assert relevance.shape == x.shape and torch.isfinite(relevance).all()


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_multihead_attention_is_decomposed(batch_first, bias):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, bias=bias, batch_first=batch_first, dtype=DTYPE).eval()
    _check(SelfAttention(mha), torch.randn(3, 5, 8, dtype=DTYPE))


def test_multihead_attention_unbatched():
    mha = nn.MultiheadAttention(8, 2, dtype=DTYPE).eval()
    _check(SelfAttention(mha), torch.randn(5, 8, dtype=DTYPE))


def test_multihead_attention_with_masks():
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(8, 2, batch_first=True, dtype=DTYPE).eval()
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)  # True: not attended
    padding = torch.tensor([[False] * 4 + [True]] * 3)
    _check(
        SelfAttention(mha, attn_mask=causal, key_padding_mask=padding),
        torch.randn(3, 5, 8, dtype=DTYPE),
    )
    additive = torch.randn(2 * 3, 5, 5, dtype=DTYPE)  # per batch and head
    _check(SelfAttention(mha, attn_mask=additive), torch.randn(3, 5, 8, dtype=DTYPE))


def test_multihead_attention_with_other_key_dimensions():
    torch.manual_seed(2)
    mha = nn.MultiheadAttention(8, 2, kdim=6, vdim=6, batch_first=True, dtype=DTYPE).eval()
    memory = torch.randn(3, 7, 6, dtype=DTYPE)
    _check(CrossAttention(mha, memory), torch.randn(3, 5, 8, dtype=DTYPE))


def test_multihead_attention_whose_weights_are_used_is_reported():
    class Weights(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            out, weights = self.mha(x, x, x)
            return out.sum(-1) + weights.sum(-1)

    with pytest.raises(UnsupportedNodeError, match="MultiheadAttention"):
        lrpfn.prepare(Weights().eval(), composites.attnlrp())


def test_multihead_attention_in_training_mode_with_dropout_is_refused():
    mha = nn.MultiheadAttention(8, 2, dropout=0.1, batch_first=True)
    with pytest.raises(TrainingModeError, match="eval"):
        lrpfn.prepare(SelfAttention(mha).train(), composites.attnlrp())


class Sdpa(nn.Module):
    def __init__(self, heads: int, kv_heads: int, **options):
        super().__init__()
        self.heads, self.kv_heads, self.options = heads, kv_heads, options

    def forward(self, x):
        q = x[..., : 4 * self.heads].unflatten(-1, (self.heads, 4)).transpose(1, 2)
        rest = x[..., 4 * self.heads :].unflatten(-1, (2, self.kv_heads, 4))
        k = rest[..., 0, :, :].transpose(1, 2)
        v = rest[..., 1, :, :].transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, **self.options)
        return out.transpose(1, 2).flatten(-2)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"is_causal": True},
        {"scale": 0.3},
        {"attn_mask": torch.rand(5, 5) > 0.3},
        {"attn_mask": torch.randn(3, 1, 5, 5, dtype=DTYPE)},
        {"enable_gqa": True},
        {"enable_gqa": True, "is_causal": True, "scale": 0.5},
    ],
    ids=["plain", "causal", "scale", "bool_mask", "float_mask", "gqa", "gqa_causal_scale"],
)
def test_scaled_dot_product_attention_is_decomposed(options):
    torch.manual_seed(3)
    kv_heads = 1 if options.get("enable_gqa") else 2
    if "attn_mask" in options and options["attn_mask"].dtype == torch.bool:
        options["attn_mask"][:, 0] = True  # every query attends somewhere
    model = Sdpa(2, kv_heads, **options)
    _check(model, torch.randn(3, 5, 4 * 2 + 8 * kv_heads, dtype=DTYPE))


def test_scaled_dot_product_attention_with_dropout_is_refused():
    with pytest.raises(TrainingModeError, match="dropout_p"):
        lrpfn.prepare(Sdpa(2, 2, dropout_p=0.1), composites.attnlrp())
