"""Reference samples of a concept: its top samples, their conditional heatmaps, crops.

For concept $c$ of layer $l$, the heatmap of a reference sample is the conditional input
relevance $R^0(x \\mid \\theta = \\{c\\})$ (`conditional`): the walk starts from the explained
output (the class stored for that sample) and keeps at $l$ only channel $c$'s relevance,
so the map is the part of the explanation that passes through the concept (zennit-crp
starts its reference heatmaps from the activation instead). The crop is the bounding box
of the concept's relevance-weighted receptive field (`receptive_field`: positions whose
relevance reaches 20% of the map's largest), resized to a fixed size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ._atlas_data import read_sample
from ._conditional import conditional
from ._nodes import InvalidConditionError
from ._record import fitted
from ._regions import bounding_box, receptive_field

__all__ = ["References", "default_pixels", "reference_batch"]


class References(NamedTuple):
    """The n reference samples of each of m concepts (best first; index -1: no sample).

    Attributes:
        indices: `(m, n)` data set indices.
        scores: `(m, n)` their scores in the ordering the references were chosen by.
        heatmaps: `(m, n, *input_shape)` the conditional input relevance (zeros for -1).
        boxes: `(m, n, 4)` the crop boxes (top, left, bottom, right; exclusive ends);
            None for inputs that are not images `(C, H, W)` (3-d inputs are read as token
            embeddings `(tokens, features)`).
        images: `(m, n, h, w, 3)` uint8 crops of the inputs (None for non-images).
        crops: `(m, n, h, w)` the heatmaps summed over the input's channels, cropped alike
            (None for non-images).
        token_relevance: for token embeddings `(tokens, features)`, `(m, n, tokens)`: the
            heatmaps summed over the features (which tokens the concept reacts to); else
            None.
    """

    indices: np.ndarray
    scores: np.ndarray
    heatmaps: Tensor
    boxes: Tensor | None
    images: np.ndarray | None
    crops: np.ndarray | None
    token_relevance: np.ndarray | None = None


def default_pixels(x: Tensor) -> Tensor:
    """Inputs `(b, C, H, W)` as RGB in [0, 1]: each sample scaled from its own min..max;
    one channel is shown as grey."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise InvalidConditionError(
            f"reference crops need image inputs (batch, 1 or 3, H, W), got {tuple(x.shape)}."
        )
    low = x.flatten(1).amin(1).reshape(-1, 1, 1, 1)
    high = x.flatten(1).amax(1).reshape(-1, 1, 1, 1)
    scaled = (x - low) / torch.where(high > low, high - low, torch.ones_like(high))
    return scaled.expand(-1, 3, -1, -1)


def reference_batch(
    plan,
    dataset: Any,
    node: Any,
    channels: Tensor,
    indices: np.ndarray,
    scores: np.ndarray,
    targets: np.ndarray,
    *,
    size: tuple[int, int],
    to_pixels: Callable[[Tensor], Tensor] | None,
    batch_size: int,
) -> References:
    """The references of concepts `channels` `(m,)` of `node` (a name, `Neurons` or
    `Heads`), whose top samples are `indices` `(m, n)` (with `scores`; explained as
    `targets`, both `(m, n)`)."""
    m, n = indices.shape
    flat = indices.reshape(-1)
    present = np.flatnonzero(flat >= 0)
    heatmaps, inputs = None, None
    if plan.input_shape is not None:  # a torch.export plan explains its batch size at most
        batch_size = min(batch_size, plan.input_shape[0])
    for first in range(0, len(present), batch_size):
        rows = present[first : first + batch_size]
        x = torch.stack([_read(dataset, int(flat[row])) for row in rows])
        x = x.to(_device_of(plan), _dtype_of(plan, x))
        kept = channels.repeat_interleave(n)[torch.as_tensor(rows)].reshape(-1, 1)
        target = torch.as_tensor(targets.reshape(-1)[rows], device=x.device)
        rows_here = len(x)
        x = fitted(plan, x)
        kept, target = fitted_like(kept, x), fitted_like(target, x)
        maps = conditional(plan, x, None, [{node: kept.to(x.device)}], target=target)[0]
        maps, x = maps[:rows_here], x[:rows_here]
        if heatmaps is None:
            heatmaps = torch.zeros((m * n, *x.shape[1:]), dtype=maps.dtype, device="cpu")
            inputs = torch.zeros_like(heatmaps)
        heatmaps[torch.as_tensor(rows)] = maps.cpu()
        inputs[torch.as_tensor(rows)] = x.cpu().to(maps.dtype)
    if heatmaps is None:
        raise InvalidConditionError(f"node {node!r}: these concepts have no reference samples.")
    maps = heatmaps.reshape(m, n, *heatmaps.shape[1:])
    if heatmaps.ndim == 3:  # token embeddings (tokens, features)
        tokens = heatmaps.sum(dim=-1).reshape(m, n, -1).numpy()
        return References(indices, scores, maps, None, None, None, tokens)
    if heatmaps.ndim != 4:  # neither images nor tokens: the heatmaps alone
        return References(indices, scores, maps, None, None, None)
    boxes, images, crops = _crops(inputs, heatmaps, size, to_pixels or default_pixels)
    return References(
        indices,
        scores,
        maps,
        boxes.reshape(m, n, 4),
        images.reshape(m, n, *images.shape[1:]),
        crops.reshape(m, n, *crops.shape[1:]),
    )


def fitted_like(values: Tensor, x: Tensor) -> Tensor:
    """Per-sample `values` padded like `fitted` pads `x` (repeating the last one)."""
    if len(values) == len(x):
        return values
    return torch.cat([values, values[-1:].expand(len(x) - len(values), *values.shape[1:])])


def _read(dataset: Any, index: int) -> Tensor:
    return read_sample(dataset, index)[0]


def _device_of(plan) -> torch.device:
    parameter = next(iter(plan.module.parameters()), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _dtype_of(plan, x: Tensor) -> torch.dtype:
    parameter = next(iter(plan.module.parameters()), None)
    return parameter.dtype if parameter is not None else x.dtype


def _crops(
    inputs: Tensor, heatmaps: Tensor, size, to_pixels
) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """Per sample: the receptive field's box, and the input and heatmap cropped to it and
    resized to `size` (bilinear). An empty field (no positive relevance) keeps the whole
    image."""
    if heatmaps.ndim != 4:
        raise InvalidConditionError(
            f"reference crops need image inputs (batch, C, H, W), got {tuple(heatmaps.shape)}."
        )
    height, width = heatmaps.shape[-2:]
    boxes = bounding_box(receptive_field(heatmaps))
    whole = torch.tensor([0, 0, height, width], dtype=boxes.dtype)
    boxes = torch.where((boxes == 0).all(dim=-1, keepdim=True), whole, boxes)
    pixels = to_pixels(inputs).float()
    summed = heatmaps.sum(dim=1, keepdim=True).float()
    images, crops = [], []
    for sample, (top, left, bottom, right) in enumerate(boxes.tolist()):
        window = (slice(None), slice(top, bottom), slice(left, right))
        images.append(_resize(pixels[sample][window], size))
        crops.append(_resize(summed[sample][window], size)[0])
    rgb = (torch.stack(images).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    return boxes, rgb.numpy(), torch.stack(crops).numpy()


def _resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    return torch.nn.functional.interpolate(
        image[None], size=size, mode="bilinear", align_corners=False
    )[0]
