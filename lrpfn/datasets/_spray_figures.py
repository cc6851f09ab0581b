"""The figures of a spectral relevance analysis (matplotlib, imported here only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import image

__all__ = ["save_cluster_means", "save_embedding"]


def save_embedding(result: Any, path: Path, title: str = "") -> Path:
    """Two panels: the Laplacian's smallest eigenvalues (the eigengap), and the t-SNE
    embedding of the heatmaps coloured by cluster."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 3.4))
    spectrum, scatter = figure.subplots(1, 2, gridspec_kw={"width_ratios": (1, 1.4)})
    spectrum.plot(np.arange(len(result.eigenvalues)), result.eigenvalues, "o-", markersize=4)
    spectrum.set_xlabel("index")
    spectrum.set_ylabel("eigenvalue")
    spectrum.set_title("normalised Laplacian (a gap after k: k clusters)", fontsize=9)
    for cluster in range(len(result.means)):
        inside = result.clusters == cluster
        scatter.scatter(*result.embedding[inside].T, s=10, label=f"cluster {cluster}")
    scatter.set_title("t-SNE of the heatmaps", fontsize=9)
    scatter.set_xticks([])
    scatter.set_yticks([])
    scatter.legend(fontsize=7, markerscale=1.5)
    image.finish_figure(figure, path, title, title_size=10)
    return path


def save_cluster_means(result: Any, path: Path, title: str = "") -> Path:
    """Each cluster's mean heatmap, normalised symmetrically (`lrpfn.image.heatmap`)."""
    from matplotlib.figure import Figure

    count = len(result.means)
    heat = image.heatmap(result.means[:, None], "bwr")  # (k, 1, H, W): one map each
    figure = Figure(figsize=(1.8 * count, 2.2 if not title else 2.5))
    axes = figure.subplots(1, count, squeeze=False)[0]
    for cluster, axis in enumerate(axes):
        axis.imshow(heat[cluster], interpolation="nearest")
        size = int((result.clusters == cluster).sum())
        axis.set_title(f"cluster {cluster}\n{size} samples", fontsize=8)
        axis.set_xticks([])
        axis.set_yticks([])
    image.finish_figure(figure, path, title, title_size=10)
    return path
