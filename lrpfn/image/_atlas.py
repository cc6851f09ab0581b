"""`plot_atlas`: concepts as rows, each with its reference crops and their heatmaps.

`lrpfn.concepts.plot_atlas` is the same function (the atlas's own name for it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..colormaps import Colormap
from ._figures import finish_figure, heatmap

__all__ = ["plot_atlas"]


def plot_atlas(
    images: Any,
    heatmaps: Any,
    path: str | Path | None = None,
    *,
    row_titles: Sequence[str] | None = None,
    indices: Any = None,
    cmap: str | Colormap = "bwr",
    cell_size: float = 0.9,
    title: str | None = None,
) -> Any:
    """A grid of m concepts (rows) by n reference samples: for each sample its crop and,
    right of it, the concept's conditional heatmap on the same crop (each on its own
    symmetric scale, see `lrpfn.image`). Needs matplotlib (imported here only).

    Arguments:
        images: uint8 RGB crops `(m, n, h, w, 3)` (`References.images`, or a store's
            `references/images` rows).
        heatmaps: `(m, n, h, w)` heatmaps on the crops (`References.crops`).
        path: where to save the figure (PNG); None to only return it.
        row_titles: m labels (e.g. "channel 312").
        indices: optional `(m, n)` data set indices, shown under each crop; cells with
            index -1 (fewer samples than n) are left empty.
        cmap: the heatmaps' colormap.
        cell_size: inches per panel.
        title: a title above the grid.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    from matplotlib.figure import Figure

    images, maps = np.asarray(images), np.asarray(heatmaps, dtype=np.float64)
    if images.ndim != 5 or images.shape[-1] != 3 or maps.shape != images.shape[:-1]:
        raise ValueError(
            "plot_atlas needs crops (m, n, h, w, 3) and heatmaps (m, n, h, w); got "
            f"{images.shape} and {maps.shape}."
        )
    rows, columns = images.shape[:2]
    if row_titles is not None and len(row_titles) != rows:
        raise ValueError(f"{len(row_titles)} row titles for {rows} concepts.")
    colored = heatmap(maps.reshape(rows * columns, 1, *maps.shape[2:]), cmap)
    colored = colored.reshape(*maps.shape, 3)
    shown = np.ones((rows, columns), bool) if indices is None else np.asarray(indices) >= 0
    figure = Figure(figsize=(cell_size * 2 * columns, cell_size * rows + (0.6 if title else 0.3)))
    axes = figure.subplots(rows, 2 * columns, squeeze=False)
    for row in range(rows):
        for column in range(columns):
            for offset, panel in enumerate((images[row, column], colored[row, column])):
                axis = axes[row, 2 * column + offset]
                axis.set_xticks([])
                axis.set_yticks([])
                if not shown[row, column]:
                    axis.set_axis_off()
                    continue
                axis.imshow(panel, interpolation="nearest")
                if offset == 0 and indices is not None:
                    axis.set_xlabel(f"#{int(indices[row, column])}", fontsize=6, labelpad=1)
        if row_titles is not None:
            axes[row, 0].set_ylabel(row_titles[row], fontsize=7)
    return finish_figure(figure, path, title or "")
