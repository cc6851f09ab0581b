"""The most relevant channels, and where in the input a concept was found."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ._nodes import InvalidConditionError

__all__ = ["TopConcepts", "bounding_box", "receptive_field", "top"]


class TopConcepts(NamedTuple):
    """The k most relevant channels of each sample, most relevant first.

    Attributes:
        channels: `(batch, k)` channel indices.
        relevance: `(batch, k)` their relevance $\\sum_p R^l_{c,p}$.
        share: `(batch, k)` their relevance divided by the node's total relevance
            $\\sum_c \\sum_p R^l_{c,p}$ (0 where the total is 0).
    """

    channels: Tensor
    relevance: Tensor
    share: Tensor

    def conditions(self, node: str) -> list[dict[str, Tensor]]:
        """k conditions `{node: (batch, 1)}`: the j-th most relevant channel of each sample."""
        return [{node: self.channels[:, j : j + 1]} for j in range(self.channels.shape[1])]


def top(importance: Tensor, k: int) -> TopConcepts:
    """The `k` channels of largest relevance per sample (from `concepts.importance`).

    Arguments:
        importance: `(batch, channels)` channel relevances.
        k: how many channels, 1 <= k <= channels.

    Returns:
        A `TopConcepts` of `(batch, k)` tensors.
    """
    if not isinstance(importance, Tensor) or importance.ndim != 2:
        shape = getattr(importance, "shape", type(importance).__name__)
        raise InvalidConditionError(
            f"top expects channel relevances of shape (batch, channels), got {shape}. Fix: "
            "pass the result of concepts.importance (without conditions, or one of its k rows)."
        )
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= importance.shape[1]:
        raise InvalidConditionError(
            f"k must be an int in 1..{importance.shape[1]} (the number of channels), got {k!r}."
        )
    relevance, channels = importance.topk(k, dim=1)
    total = importance.sum(dim=1, keepdim=True)
    safe = torch.where(total == 0, torch.ones_like(total), total)
    share = torch.where(total == 0, torch.zeros_like(relevance), relevance / safe)
    return TopConcepts(channels, relevance, share)


def receptive_field(heatmap: Tensor, fraction: float = 0.2, *, spatial_dims: int = 2) -> Tensor:
    """Where in the input a concept was found: its relevance-weighted receptive field.

    The conditional heatmap is summed over its channel axis (the axis before the last
    `spatial_dims`); a position belongs to the field where its positive relevance reaches
    `fraction` of the map's largest: $R_p \\ge \\text{fraction} \\cdot \\max_q R_q > 0$. A
    map without positive relevance has an empty field.

    Arguments:
        heatmap: conditional input relevance `(..., channels, *spatial)`, e.g. the
            `(k, batch, C, H, W)` of `conditional`.
        fraction: the threshold, in (0, 1].
        spatial_dims: the number of trailing spatial axes (2 for images).

    Returns:
        A bool tensor `(..., *spatial)`.
    """
    if not 0.0 < fraction <= 1.0:
        raise InvalidConditionError(f"fraction must be in (0, 1], got {fraction!r}.")
    if heatmap.ndim < spatial_dims + 1:
        raise InvalidConditionError(
            f"heatmap of shape {tuple(heatmap.shape)} has no channel axis before its "
            f"{spatial_dims} spatial axes."
        )
    per_position = heatmap.sum(dim=-spatial_dims - 1)
    flat = per_position.flatten(-spatial_dims)
    largest = flat.amax(dim=-1).reshape(flat.shape[:-1] + (1,) * spatial_dims)
    return (per_position >= fraction * largest) & (largest > 0) & (per_position > 0)


def bounding_box(region: Tensor) -> Tensor:
    """The smallest box holding a 2-d region: `(..., 4)` as (top, left, bottom, right),
    bottom and right exclusive (`image[top:bottom, left:right]`); all zero if empty."""
    if region.ndim < 2 or region.dtype != torch.bool:
        raise InvalidConditionError("bounding_box expects a bool region (..., H, W).")
    height, width = region.shape[-2:]
    rows, columns = region.any(dim=-1), region.any(dim=-2)
    top_row = rows.float().argmax(dim=-1)
    bottom = height - rows.flip(-1).float().argmax(dim=-1)
    left = columns.float().argmax(dim=-1)
    right = width - columns.flip(-1).float().argmax(dim=-1)
    box = torch.stack([top_row, left, bottom, right], dim=-1)
    return torch.where(rows.any(dim=-1, keepdim=True), box, torch.zeros_like(box))
