"""The error of the evaluation functions and the checks they share."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import InvalidTargetError, LRPError

__all__ = ["InvalidEvaluationError", "explained_logit", "heatmaps", "target_index"]


class InvalidEvaluationError(LRPError, ValueError):
    """An argument of an evaluation function (order, patch, steps, perturbation,
    relevance shape, similarity) is invalid; the message names it and the fix."""


def heatmaps(relevance: Tensor, x: Tensor) -> Tensor:
    """The relevance of an image batch as one map per sample, `(batch, H, W)`: summed over
    the channel axis of a `(batch, C, H, W)` relevance; a `(batch, H, W)` one is kept."""
    if not isinstance(relevance, Tensor):
        raise InvalidEvaluationError(
            f"relevance must be a torch.Tensor, got {type(relevance).__name__}."
        )
    if relevance.ndim == 4:
        relevance = relevance.sum(1)
    if (
        relevance.ndim != 3
        or relevance.shape[0] != x.shape[0]
        or relevance.shape[1:] != x.shape[-2:]
    ):
        raise InvalidEvaluationError(
            f"relevance of shape {tuple(relevance.shape)} does not fit the input of shape "
            f"{tuple(x.shape)}: pass one map per sample, (batch, C, H, W) or (batch, H, W)."
        )
    if not bool(torch.isfinite(relevance).all()):
        raise InvalidEvaluationError(
            "relevance contains NaN or inf, so its order is undefined: clean it first "
            "(e.g. torch.nan_to_num) or fix the method that produced it."
        )
    return relevance


def check_images(x: Tensor) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InvalidEvaluationError(
            f"x must be a floating image batch of shape (batch, C, H, W), got {shape}."
        )


def target_index(target: int | Tensor | None, logits: Tensor) -> Tensor:
    """The explained class of each sample: the argmax for None, an int for all, or a
    LongTensor of shape `(batch,)`."""
    if logits.ndim != 2:
        raise InvalidTargetError(
            f"the model's output has shape {tuple(logits.shape)}, not (batch, classes)."
        )
    batch, classes = logits.shape
    if target is None:
        return logits.argmax(1)
    index = torch.as_tensor(target, device=logits.device)
    if index.is_floating_point() or index.dtype == torch.bool or index.ndim > 1:
        raise InvalidTargetError(f"target must be an int or a LongTensor (batch,), got {target!r}.")
    index = index.long().expand(batch)
    if bool(((index < 0) | (index >= classes)).any()):
        raise InvalidTargetError(f"target {index.tolist()} is out of range for {classes} classes.")
    return index


def explained_logit(logits: Tensor, index: Tensor) -> Tensor:
    """`logits[i, index[i]]` for every row."""
    return logits.gather(1, index[:, None]).squeeze(1)
