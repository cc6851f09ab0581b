"""Functional ops that lrpfn's attention passes insert (they never appear in user code).

`nn.MultiheadAttention` and `F.scaled_dot_product_attention` are decomposed into ordinary
ops (linear layers, `torch.matmul`, `torch.softmax`) and these few helpers, each with a
relevance handler in `ops.attention` or `ops.rms_norm`.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "attention_mask",
    "gated_product",
    "masked_scores",
    "merge_heads",
    "repeat_heads",
    "rms_normalize",
    "split_heads",
]


def split_heads(x: Tensor, heads: int, batch_first: bool) -> Tensor:
    """`(batch, length, heads * d)` (or `(length, batch, ...)` unless `batch_first`, or
    `(length, ...)` unbatched) to `(batch, heads, length, d)` (unbatched: `(heads, length, d)`)."""
    x = x.unflatten(-1, (heads, -1))
    if x.ndim == 3:  # unbatched (length, heads, d)
        return x.transpose(0, 1)
    return x.permute(0, 2, 1, 3) if batch_first else x.permute(1, 2, 0, 3)


def merge_heads(x: Tensor, batch_first: bool) -> Tensor:
    """The inverse of `split_heads`."""
    if x.ndim == 3:
        return x.transpose(0, 1).flatten(-2)
    x = x.permute(0, 2, 1, 3) if batch_first else x.permute(2, 0, 1, 3)
    return x.flatten(-2)


def repeat_heads(x: Tensor, heads: int) -> Tensor:
    """Grouped-query attention: each of the key/value heads (axis -3) repeated to make
    `heads` heads, as many as the queries have."""
    return x.repeat_interleave(heads // x.shape[-3], dim=-3)


def masked_scores(
    scores: Tensor,
    scale: float | None,
    mask: Tensor | None = None,
    is_causal: bool = False,
    head_dim: int | None = None,
) -> Tensor:
    """`scores * scale` (`head_dim ** -0.5` when `scale` is None), then the attention mask: a boolean mask keeps `True` entries (the
    others become `-inf`), a float mask is added, `is_causal` keeps the lower triangle.

    For relevance the op is the identity on the kept entries: a constant factor and a
    constant mask move no relevance (as in the gradient x input form of AttnLRP).
    """
    scores = scores * (head_dim**-0.5 if scale is None else scale)
    if is_causal:
        length, source = scores.shape[-2], scores.shape[-1]
        keep = torch.ones(length, source, dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    return scores


def rms_normalize(x: Tensor, eps: float) -> Tensor:
    """$x / \\sqrt{\\overline{x^2} + \\epsilon}$ over the last axis (an RMSNorm without its weight)."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def gated_product(gate: Tensor, signal: Tensor) -> Tensor:
    """`gate * signal`, where `gate` is the output of an elementwise non-linearity (SwiGLU's
    `silu(x W_g) * (x W_u)`, a squeeze-excitation's `sigmoid(...) * x`)."""
    return gate * signal


def attention_mask(
    attn_mask: Tensor | None,
    key_padding_mask: Tensor | None,
    heads: int,
    dtype: torch.dtype | None = None,
) -> Tensor | None:
    """`nn.MultiheadAttention`'s masks (boolean `True` = not attended, or additive floats;
    `attn_mask` of shape `(L, S)` or `(batch * heads, L, S)`, `key_padding_mask` of shape
    `(batch, S)`) as one additive float mask broadcasting to `(batch, heads, L, S)`."""
    total = None
    for mask, padding in ((attn_mask, False), (key_padding_mask, True)):
        if mask is None:
            continue
        if mask.dtype == torch.bool:
            zeros = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
            mask = zeros.masked_fill(mask, float("-inf"))
        if padding and mask.ndim == 2:
            mask = mask[:, None, None, :]
        elif not padding and mask.ndim == 3:
            mask = mask.unflatten(0, (-1, heads))
        total = mask if total is None else total + mask
    return total
