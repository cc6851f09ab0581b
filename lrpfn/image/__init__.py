r"""Heatmaps of relevance: symmetric normalisation, diverging colormaps, PNG files.

    from lrpfn import image

    rgb = image.heatmap(R)                         # (N, C, H, W) relevance -> (N, H, W, 3) uint8
    image.save_png(rgb[0], "heatmap.png")
    both = image.overlay(image.to_pixels(x, mean, std), rgb, alpha=0.6)
    image.plot_grid(pixels, {"epsilon": rgb_eps, "gamma": rgb_gamma}, "grid.png")
    image.plot_concepts(pixels[0], maps[:, 0], top.share[0], labels, "concepts.png")

A relevance map is shown on a symmetric scale: each map is divided by the 99.5th
percentile $q$ of its absolute values and clipped, $r = \mathrm{clip}(R / q, -1, 1)$ (as
captum clips; `percentile=100` divides by the largest value), so zero relevance always
lands on the colormap's centre (white for `bwr` and `seismic`, black for `coldhot`),
whatever the map's sign balance, and a few extreme pixels do not fade the rest. An
all-zero map stays zero (no NaN).

The colormaps (`lrpfn.colormaps`) are piecewise-linear tables of colours at positions in
$[-1, 1]$; any matplotlib colormap, object or name, is accepted as well. Only NumPy is
needed; matplotlib is imported by `plot_grid` alone, and PNG files are written by a small
encoder here (zlib), so this module imports and writes heatmaps without matplotlib or
Pillow.
"""

from ._atlas import plot_atlas
from ._figures import (
    BWR,
    COLDHOT,
    COLORMAPS,
    SEISMIC,
    Colormap,
    colorize,
    finish_figure,
    heatmap,
    overlay,
    plot_concepts,
    plot_explanation,
    plot_grid,
    reduce_channels,
    save_figure,
    save_png,
    symmetric_normalize,
    to_pixels,
    upscale,
)

__all__ = [
    "BWR",
    "COLDHOT",
    "COLORMAPS",
    "SEISMIC",
    "Colormap",
    "colorize",
    "finish_figure",
    "heatmap",
    "overlay",
    "plot_atlas",
    "plot_concepts",
    "plot_explanation",
    "plot_grid",
    "reduce_channels",
    "save_figure",
    "save_png",
    "symmetric_normalize",
    "to_pixels",
    "upscale",
]
