"""A running top-k per channel over a data set, merged exactly in any order.

For each channel $c$, the k samples of largest score $s_{i,c}$, ordered by score
(largest first) and, among equal scores, by data set index (smallest first). That is a
total order on (score, index) pairs, so the top-k of a union is the top-k of the top-ks
of its parts: batches, chunks of a resumed run and ranks of `torchrun` merge to the same
result, bit for bit, whatever the split.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["TopK", "empty", "merge", "merge_batch"]

PAD = -1  # the index of an empty slot (fewer than k samples so far); its score is -inf


class TopK(NamedTuple):
    """The k best (score, index) pairs of each channel, best first.

    Attributes:
        scores: `(channels, k)`; -inf in empty slots.
        indices: `(channels, k)` int64 data set indices; -1 in empty slots.
    """

    scores: Tensor
    indices: Tensor


def empty(channels: int, k: int, dtype: torch.dtype, device: torch.device) -> TopK:
    """k empty slots per channel."""
    scores = torch.full((channels, k), -torch.inf, dtype=dtype, device=device)
    return TopK(scores, torch.full((channels, k), PAD, dtype=torch.int64, device=device))


def merge(top: TopK, other: TopK) -> TopK:
    """The top-k of the union of two top-k sets of the same channels."""
    scores = torch.cat([top.scores, other.scores.to(top.scores)], dim=1)
    indices = torch.cat([top.indices, other.indices.to(top.indices.device)], dim=1)
    by_index = indices.argsort(dim=1, stable=True)
    scores, indices = scores.gather(1, by_index), indices.gather(1, by_index)
    order = scores.argsort(dim=1, descending=True, stable=True)[:, : top.scores.shape[1]]
    return TopK(scores.gather(1, order), indices.gather(1, order))


def merge_batch(top: TopK, scores: Tensor, indices: Tensor) -> TopK:
    """Merge one batch's scores `(batch, channels)` of the samples `indices` `(batch,)`."""
    channels = scores.shape[1]
    batch = TopK(scores.T, indices.to(top.indices.device)[None].expand(channels, -1))
    return merge(top, batch)
