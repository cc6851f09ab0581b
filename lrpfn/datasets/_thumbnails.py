r"""Small RGB pictures of the inputs, kept in the store so that a viewer (`lrpfn report`)
can show every sample without the files (digits have none) and without the
preprocessing.

An input `x` of shape `(C, H, W)` with one or three channels becomes uint8 RGB:
with the `normalization` `(mean, std)` the inputs were normalised with,
$p = \mathrm{clip}(x \cdot \mathrm{std} + \mathrm{mean}, 0, 1)$ per channel (the pixels
as they were read); without it each sample is scaled from its own minimum to its
maximum, $p = (x - \min x) / (\max x - \min x)$ (0 where the sample is constant). One
channel is repeated as grey. A picture larger than `longest` pixels a side is shrunk
(area averaging, the aspect ratio kept); a smaller one is kept as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["Normalization", "thumbnail_size", "thumbnails"]

Normalization = tuple[Sequence[float], Sequence[float]]


def thumbnail_size(input_shape: tuple[int, ...], longest: int | None) -> tuple[int, int] | None:
    """The `(h, w)` of the thumbnails of inputs of `input_shape`, or None where the inputs
    are no images (not `(1 or 3, H, W)`) or `longest` is None or 0."""
    if not longest or len(input_shape) != 3 or input_shape[0] not in (1, 3):
        return None
    height, width = input_shape[1:]
    scale = min(1.0, longest / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def thumbnails(x: Tensor, size: tuple[int, int], normalization: Normalization | None) -> np.ndarray:
    """uint8 RGB `(N, h, w, 3)` pictures of the inputs `x` `(N, 1 or 3, H, W)`."""
    values = x.detach().to("cpu", torch.float64)
    if normalization is not None:
        mean, std = (torch.tensor(v, dtype=torch.float64).reshape(-1, 1, 1) for v in normalization)
        pixels = values * std + mean
    else:
        low = values.amin(dim=(1, 2, 3), keepdim=True)
        span = values.amax(dim=(1, 2, 3), keepdim=True) - low
        pixels = (values - low) / torch.where(span > 0, span, torch.ones_like(span))
    pixels = pixels.clamp(0.0, 1.0)
    if tuple(pixels.shape[-2:]) != size:
        pixels = torch.nn.functional.interpolate(pixels, size=size, mode="area")
    if pixels.shape[1] == 1:
        pixels = pixels.expand(-1, 3, -1, -1)
    return torch.round(pixels * 255.0).to(torch.uint8).permute(0, 2, 3, 1).numpy()
