"""The ops Swin's shifted-window attention is decomposed into (`capture.window_attention`).

They move values (window partition and reverse, head splits: routes) or add constants to
the scores (the relative position bias and the shift mask: relevance passes); their
handlers are in `ops.attention`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "merge_window_heads",
    "window_heads",
    "window_partition",
    "window_reverse",
    "window_scores",
]


def _geometry(shape, window_size, shift_size):
    """Padded height and width, and the shift (0 where the window covers the whole axis)."""
    height, width = shape[1], shape[2]
    padded_height = height + (window_size[0] - height % window_size[0]) % window_size[0]
    padded_width = width + (window_size[1] - width % window_size[1]) % window_size[1]
    shift = [
        0 if window_size[0] >= padded_height else shift_size[0],
        0 if window_size[1] >= padded_width else shift_size[1],
    ]
    return padded_height, padded_width, shift


def window_partition(x: Tensor, window_size: list[int], shift_size: list[int]) -> Tensor:
    """`(B, H, W, C)` padded to whole windows, shifted cyclically, as `(B * windows, N, C)`."""
    batch, height, width, channels = x.shape
    padded_height, padded_width, shift = _geometry(x.shape, window_size, shift_size)
    x = F.pad(x, (0, 0, 0, padded_width - width, 0, padded_height - height))
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    rows, columns = padded_height // window_size[0], padded_width // window_size[1]
    x = x.view(batch, rows, window_size[0], columns, window_size[1], channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size[0] * window_size[1], channels)


def window_heads(qkv: Tensor, num_heads: int, index: int) -> Tensor:
    """Query (0), key (1) or value (2) of `(B * windows, N, 3 C)` as `(B * windows, heads, N, d)`."""
    windows, tokens, width = qkv.shape
    qkv = qkv.reshape(windows, tokens, 3, num_heads, width // (3 * num_heads))
    return qkv[:, :, index].transpose(1, 2)


def merge_window_heads(x: Tensor) -> Tensor:
    """`(B * windows, heads, N, d)` to `(B * windows, N, heads * d)`."""
    return x.transpose(1, 2).flatten(-2)


def _shift_mask(shape, window_size, shift, device, dtype) -> Tensor:
    """-100 between tokens of a window that came from different regions of the shifted map."""
    padded_height, padded_width, _ = _geometry(shape, window_size, shift)
    regions = torch.zeros((padded_height, padded_width), device=device, dtype=dtype)
    count = 0
    for rows in ((0, -window_size[0]), (-window_size[0], -shift[0]), (-shift[0], None)):
        for columns in ((0, -window_size[1]), (-window_size[1], -shift[1]), (-shift[1], None)):
            regions[rows[0] : rows[1], columns[0] : columns[1]] = count
            count += 1
    regions = regions.view(
        padded_height // window_size[0],
        window_size[0],
        padded_width // window_size[1],
        window_size[1],
    )
    regions = regions.permute(0, 2, 1, 3).reshape(-1, window_size[0] * window_size[1])
    different = regions.unsqueeze(1) != regions.unsqueeze(2)
    return torch.zeros(different.shape, device=device, dtype=dtype).masked_fill(different, -100.0)


def window_scores(
    scores: Tensor,
    bias: Tensor,
    shape: tuple[int, ...],
    window_size: list[int],
    shift_size: list[int],
    scale: float,
) -> Tensor:
    """`scores * scale + bias`, plus the shift mask of shifted windows (constants: the
    relevance of the scores passes unchanged, see `ops.attention_functional.masked_scores`)."""
    scores = scores * scale + bias
    _, _, shift = _geometry(shape, window_size, shift_size)
    if sum(shift) == 0:
        return scores
    mask = _shift_mask(shape, window_size, shift, scores.device, scores.dtype)
    windows = mask.shape[0]
    grouped = scores.view(-1, windows, *scores.shape[1:]) + mask[None, :, None]
    return grouped.view(scores.shape)


def window_reverse(
    x: Tensor, shape: tuple[int, ...], window_size: list[int], shift_size: list[int]
) -> Tensor:
    """The inverse of `window_partition` back to `shape` `(B, H, W, C)`."""
    batch, height, width, channels = shape
    padded_height, padded_width, shift = _geometry(shape, window_size, shift_size)
    rows, columns = padded_height // window_size[0], padded_width // window_size[1]
    x = x.view(batch, rows, columns, window_size[0], window_size[1], channels)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, padded_height, padded_width, channels)
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
    return x[:, :height, :width, :].contiguous()
