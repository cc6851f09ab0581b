r"""Heatmaps for the report: a sign-aware colormap with percentile clipping.

A relevance map $R$ is divided by the `percentile`-th percentile of its absolute values,
$s = P_{q}(|R|)$, and clipped: $r = \mathrm{clip}(R / s, -1, 1)$. Zero relevance stays at
the colormap's centre (white for `bwr`), positive relevance is red and negative blue, and
a few extreme values (q = 99.5 by default) no longer wash the rest of the map out, as
they do with the plain $R / \max |R|$ of `lrpfn.image.heatmap` (which is q = 100). A map
whose percentile is zero falls back to its largest absolute value; an all-zero map stays
zero.

The overlay blends each pixel with the colour of its relevance, weighted by its
magnitude: $p' = (1 - \alpha |r|)\, p + \alpha |r|\, \mathrm{cmap}(r)$, so irrelevant
pixels keep the input's own colour (a plain blend with white at zero would fade them).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import image

__all__ = ["clip_normalize", "heat_pixels", "overlay_pixels", "token_colors"]


def clip_normalize(maps: Any, percentile: float) -> np.ndarray:
    """Each map (the last two axes; a 1-d array is one map) divided by the `percentile`-th
    percentile of its absolute values and clipped to [-1, 1]."""
    values = np.asarray(maps, dtype=np.float64)
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must lie in (0, 100], got {percentile!r}.")
    axes = (-1,) if values.ndim == 1 else (-2, -1)
    magnitude = np.abs(np.nan_to_num(values))
    scale = np.percentile(magnitude, percentile, axis=axes, keepdims=True)
    largest = magnitude.max(axis=axes, keepdims=True)
    scale = np.where(scale > 0, scale, largest)
    return np.clip(np.nan_to_num(values) / np.where(scale > 0, scale, 1.0), -1.0, 1.0)


def heat_pixels(maps: Any, percentile: float, cmap: str = "bwr") -> np.ndarray:
    """uint8 RGB `(..., H, W, 3)` of relevance maps `(..., H, W)`."""
    return image.colorize(clip_normalize(maps, percentile), cmap)


def overlay_pixels(
    pixels: Any, maps: Any, percentile: float, cmap: str = "bwr", alpha: float = 0.8
) -> np.ndarray:
    """uint8 RGB: the input `pixels` `(..., H, W, 3)` under its relevance `maps`
    `(..., H, W)`, each pixel weighted by its relevance's magnitude."""
    r = clip_normalize(maps, percentile)
    colors = image.colorize(r, cmap).astype(np.float64)
    weight = alpha * np.abs(r)[..., None]
    blended = (1.0 - weight) * np.asarray(pixels, dtype=np.float64) + weight * colors
    return np.round(blended).astype(np.uint8)


def token_colors(values: Any, percentile: float, cmap: str = "bwr") -> list[str]:
    """One CSS colour `#rrggbb` per token relevance (a 1-d array)."""
    rgb = image.colorize(clip_normalize(np.asarray(values, dtype=np.float64), percentile), cmap)
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in rgb.reshape(-1, 3).tolist()]
