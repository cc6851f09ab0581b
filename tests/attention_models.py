"""Tiny transformer blocks written twice in one class: plain ops (what lrpfn explains) and,
with `lxt=` set, with lxt 2.1's efficient-mode rules inserted where lxt's own patches of
Hugging Face models put them (the oracle computes relevance as input x modified gradient).

- `Decoder`: a Llama-style decoder (RMSNorm, rotary embeddings, grouped-query causal
  attention, a SwiGLU MLP, final norm and a head on the last token);
- `Encoder`: a BERT-style encoder (post-norm LayerNorm, biased projections, GELU MLP,
  padding mask, a tanh pooler and a classifier).

Weights are random and float64; no downloads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DTYPE = torch.float64


def _lxt_rules():
    from lxt.efficient import rules

    return rules


def _lxt_attention_inputs(lxt: str | None, q, k, v):
    """lxt's efficient rules on the attention's inputs: AttnLRP divides the gradient of q
    and k by 4 and of v by 2 (two products in a row), CP-LRP stops it at q and k (the
    attention weights are constants); without lxt they pass unchanged."""
    if lxt == "attnlrp":
        rules = _lxt_rules()
        return rules.divide_gradient(q, 4), rules.divide_gradient(k, 4), rules.divide_gradient(v, 2)
    if lxt == "cp_lrp":
        rules = _lxt_rules()
        return rules.stop_gradient(q), rules.stop_gradient(k), v
    return q, k, v


class RMSNorm(nn.Module):
    def __init__(self, width: int, lxt: str | None):
        super().__init__()
        self.weight = nn.Parameter(1 + 0.1 * torch.randn(width, dtype=DTYPE))
        self.lxt = lxt

    def forward(self, x):
        h = x.float().to(x.dtype)
        inverse = torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        if self.lxt:
            inverse = _lxt_rules().stop_gradient(inverse)
        return self.weight * (h * inverse).to(x.dtype)


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class DecoderLayer(nn.Module):
    def __init__(self, width: int, heads: int, kv_heads: int, lxt: str | None):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim, self.lxt = heads, kv_heads, width // heads, lxt
        linear = dict(bias=False, dtype=DTYPE)
        self.input_norm = RMSNorm(width, lxt)
        self.q_proj = nn.Linear(width, heads * self.head_dim, **linear)
        self.k_proj = nn.Linear(width, kv_heads * self.head_dim, **linear)
        self.v_proj = nn.Linear(width, kv_heads * self.head_dim, **linear)
        self.o_proj = nn.Linear(width, width, **linear)
        self.post_norm = RMSNorm(width, lxt)
        self.gate_proj = nn.Linear(width, 2 * width, **linear)
        self.up_proj = nn.Linear(width, 2 * width, **linear)
        self.down_proj = nn.Linear(2 * width, width, **linear)

    def _attention(self, x, cos, sin, mask):
        q = self.q_proj(x).unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)
        k = self.k_proj(x).unflatten(-1, (self.kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).unflatten(-1, (self.kv_heads, self.head_dim)).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        q, k, v = _lxt_attention_inputs(self.lxt, q, k, v)
        groups = self.heads // self.kv_heads
        k = k[:, :, None].expand(-1, -1, groups, -1, -1).flatten(1, 2)
        v = v[:, :, None].expand(-1, -1, groups, -1, -1).flatten(1, 2)
        scores = torch.matmul(q, k.transpose(2, 3)) * self.head_dim**-0.5 + mask
        weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        out = torch.matmul(weights, v).transpose(1, 2).flatten(-2)
        return self.o_proj(out)

    def _mlp(self, x):
        gate = self.gate_proj(x)
        if self.lxt == "attnlrp":
            rules = _lxt_rules()
            return self.down_proj(
                rules.divide_gradient(
                    rules.identity_rule_implicit(F.silu, gate) * self.up_proj(x), 2
                )
            )
        if self.lxt == "cp_lrp":
            gate = _lxt_rules().stop_gradient(gate)
        return self.down_proj(F.silu(gate) * self.up_proj(x))

    def forward(self, x, cos, sin, mask):
        x = x + self._attention(self.input_norm(x), cos, sin, mask)
        return x + self._mlp(self.post_norm(x))


class Decoder(nn.Module):
    """A Llama-style decoder explained at its input embeddings; returns the last token's logits."""

    def __init__(
        self, width=16, heads=4, kv_heads=2, layers=2, vocab=11, length=6, lxt=None, seed=0
    ):
        super().__init__()
        torch.manual_seed(seed)
        self.layers = nn.ModuleList(
            DecoderLayer(width, heads, kv_heads, lxt) for _ in range(layers)
        )
        self.norm = RMSNorm(width, lxt)
        self.head = nn.Linear(width, vocab, bias=False, dtype=DTYPE)
        head_dim = width // heads
        frequencies = 1.0 / 10000 ** (torch.arange(0, head_dim, 2, dtype=DTYPE) / head_dim)
        angles = torch.arange(length, dtype=DTYPE)[:, None] * frequencies[None]
        angles = torch.cat([angles, angles], -1)
        self.register_buffer("cos", angles.cos())
        self.register_buffer("sin", angles.sin())
        causal = torch.full((length, length), torch.finfo(DTYPE).min, dtype=DTYPE).triu(1)
        self.register_buffer("mask", causal)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x, self.cos, self.sin, self.mask)
        return self.head(self.norm(x)[:, -1])


class LayerNorm(nn.LayerNorm):
    """`nn.LayerNorm`, or with `lxt` lxt's form with the standard deviation held constant."""

    def __init__(self, width: int, lxt: str | None):
        super().__init__(width, eps=1e-12, dtype=DTYPE)
        nn.init.normal_(self.weight, 1.0, 0.1)
        nn.init.normal_(self.bias, 0.0, 0.1)
        self.lxt = lxt

    def forward(self, x):
        if not self.lxt:
            return super().forward(x)
        from lxt.efficient.patches import layer_norm_forward

        return layer_norm_forward(self, x)


class EncoderLayer(nn.Module):
    def __init__(self, width: int, heads: int, lxt: str | None):
        super().__init__()
        self.heads, self.lxt = heads, lxt
        self.query = nn.Linear(width, width, dtype=DTYPE)
        self.key = nn.Linear(width, width, dtype=DTYPE)
        self.value = nn.Linear(width, width, dtype=DTYPE)
        self.output = nn.Linear(width, width, dtype=DTYPE)
        self.attention_norm = LayerNorm(width, lxt)
        self.intermediate = nn.Linear(width, 2 * width, dtype=DTYPE)
        self.mlp_output = nn.Linear(2 * width, width, dtype=DTYPE)
        self.output_norm = LayerNorm(width, lxt)

    def _heads(self, x):
        return x.unflatten(-1, (self.heads, -1)).permute(0, 2, 1, 3)

    def forward(self, x, mask):
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        q, k, v = _lxt_attention_inputs(self.lxt, q, k, v)
        scores = torch.matmul(q, k.transpose(-1, -2)) / (q.shape[-1] ** 0.5) + mask
        context = torch.matmul(torch.softmax(scores, dim=-1), v).permute(0, 2, 1, 3).flatten(-2)
        x = self.attention_norm(self.output(context) + x)
        hidden = self.intermediate(x)
        gelu = _lxt_rules().identity_rule_implicit if self.lxt else (lambda f, t: f(t))
        hidden = gelu(F.gelu, hidden)
        return self.output_norm(self.mlp_output(hidden) + x)


class Encoder(nn.Module):
    """A BERT-style encoder explained at its input embeddings; returns class logits."""

    def __init__(self, width=16, heads=2, layers=2, classes=3, length=6, lxt=None, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.lxt = lxt
        self.embedding_norm = LayerNorm(width, lxt)
        self.layers = nn.ModuleList(EncoderLayer(width, heads, lxt) for _ in range(layers))
        self.pooler = nn.Linear(width, width, dtype=DTYPE)
        self.classifier = nn.Linear(width, classes, dtype=DTYPE)
        padding = torch.zeros(1, 1, 1, length, dtype=DTYPE)
        padding[..., -1] = torch.finfo(DTYPE).min  # the last token is padding
        self.register_buffer("mask", padding)

    def forward(self, x):
        x = self.embedding_norm(x)
        for layer in self.layers:
            x = layer(x, self.mask)
        pooled = self.pooler(x[:, 0])
        tanh = _lxt_rules().identity_rule_implicit if self.lxt else (lambda f, t: f(t))
        pooled = tanh(torch.tanh, pooled)
        return self.classifier(pooled)


def tiny_vit(seed: int = 0) -> nn.Module:
    """torchvision's VisionTransformer at 32 x 32 pixels (patches of 8, 2 layers, width 16),
    with a random head (torchvision initialises it to zero). A `module:attr` factory for
    the command line."""
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    model = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
        num_classes=5,
    )  # fmt: skip
    nn.init.normal_(model.heads.head.weight, std=0.5)
    return model.eval()


def tiny_swin(seed: int = 0) -> nn.Module:
    """torchvision's SwinTransformer with windows of 4 and two stages of width 16 and 32."""
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(seed)
    return SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4],
        num_classes=5,
    ).eval()  # fmt: skip
