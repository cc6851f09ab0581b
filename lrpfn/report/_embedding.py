"""The SpRAy part of the report: per class, the 2-D embedding of its heatmaps, the
clusters, and each row's heatmap pooled small enough for the page to average any
selection of them (the mean heatmap of a cluster or of points picked in the scatter).

The analysis itself is `lrpfn.datasets.spray` (spectral clustering of the heatmaps of one
explained class, Lapuschkin et al. 2019); it is run here on every class with enough rows,
or on the classes asked for.
"""

from __future__ import annotations

import numpy as np

from ..datasets import spray
from ._errors import ReportError
from ._samples import BLOCK, maps_at
from ._stores import Store, class_name, read_rows

__all__ = ["MAP_SIDE", "spray_classes", "spray_sections"]

MAP_SIDE = 32  # the pooled maps of the mean heatmap: at most this many pixels a side


def spray_classes(store: Store, n_clusters: int, n_neighbors: int) -> list[int]:
    """The explained classes with enough valid rows for the analysis."""
    group = store.group
    targets = group["target"][:][group["valid"][:]]
    classes, counts = np.unique(targets[targets >= 0], return_counts=True)
    return [
        int(c) for c, n in zip(classes, counts, strict=True) if n > max(n_clusters, n_neighbors)
    ]


def spray_sections(
    store: Store, classes: list[int], n_clusters: int, n_neighbors: int, seed: int
) -> list[dict]:
    """One section per class: rows, clusters, embedding, eigenvalues and pooled maps."""
    relevance = store.group["relevance"]
    if relevance.ndim != 4 and classes:
        raise ReportError(
            f"SpRAy needs image heatmaps (N, C, H, W); {store.location} holds relevance of "
            f"shape {relevance.shape}. Fix: pass spray_classes=[] (--no-spray)."
        )
    height, width = relevance.shape[-2:]
    size = (min(MAP_SIDE, height), min(MAP_SIDE, width))
    sections = []
    for target in classes:
        result = spray(store.group, target, n_clusters, n_neighbors=n_neighbors, seed=seed)
        maps = np.concatenate(
            [
                maps_at(read_rows(relevance, result.rows[i : i + BLOCK]), size)
                for i in range(0, len(result.rows), BLOCK)
            ]
        )
        scale = float(np.abs(maps).max()) or 1.0
        sections.append(
            {
                "class": target,
                "name": class_name(store.class_names, target),
                "rows": result.rows.tolist(),
                "clusters": result.clusters.tolist(),
                "x": np.round(result.embedding[:, 0], 3).tolist(),
                "y": np.round(result.embedding[:, 1], 3).tolist(),
                "eigenvalues": np.round(result.eigenvalues, 5).tolist(),
                "size": list(size),
                "scale": scale,
                "maps": np.round(maps.reshape(len(maps), -1) / scale, 4).tolist(),
            }
        )
    return sections
