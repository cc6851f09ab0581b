r"""Spectral relevance analysis (SpRAy) of one class of an explained data set.

SpRAy groups the heatmaps of one class by where they put relevance, so that a class
explained by several strategies (one of them perhaps a Clever-Hans artefact, such as a
watermark) shows as several clusters:

1. take the valid rows of the store whose explained target (or label) is the class;
2. sum each heatmap over its channels, downsample it by average pooling to `size`, and
   divide it by its sum of absolute values (the clusters then compare where the
   relevance lies, not how much of it there is);
3. connect each heatmap to its `n_neighbors` nearest neighbours (Euclidean), symmetrise:
   the affinity $A_{ij} = 1$ if $i$ is among the neighbours of $j$ or $j$ among those of
   $i$, else 0;
4. the normalised Laplacian $L = I - D^{-1/2} A D^{-1/2}$ ($D$: the degrees): its
   smallest eigenvalues $\lambda_0 \le \lambda_1 \le \dots$ are returned: as many
   zeros as the graph has separate components, and a large gap after $\lambda_{k-1}$
   suggests $k$ clusters;
5. spectral clustering (scikit-learn, on $A$) into `n_clusters` groups; the mean
   full-resolution heatmap (channels summed) of each group;
6. for the picture, a 2-D t-SNE embedding of the pooled heatmaps.

Reference:
    Lapuschkin et al. 2019, "Unmasking Clever Hans predictors and assessing what machines
    really learn", Nature Communications 10, 1096.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ._errors import DatasetError
from ._spray_figures import save_cluster_means, save_embedding

__all__ = ["Spray", "spray"]


@dataclasses.dataclass(frozen=True)
class Spray:
    """The result of `spray`.

    Attributes:
        rows: the store rows analysed (dataset indices), in order.
        clusters: the cluster of each row, 0..n_clusters-1.
        eigenvalues: the smallest eigenvalues of the normalised Laplacian, ascending.
        embedding: `(rows, 2)`, a t-SNE embedding of the pooled heatmaps.
        means: `(n_clusters, H, W)`, each cluster's mean heatmap (channels summed).
        features: `(rows, h, w)`, the downsampled, normalised heatmaps clustered.
    """

    rows: np.ndarray
    clusters: np.ndarray
    eigenvalues: np.ndarray
    embedding: np.ndarray
    means: np.ndarray
    features: np.ndarray

    def save_figures(self, folder: str | Path, title: str = "") -> tuple[Path, Path]:
        """Write `embedding.png` (eigenvalues and the 2-D embedding, coloured by cluster)
        and `cluster_means.png` (each cluster's mean heatmap) into `folder`. Needs
        matplotlib."""
        folder = Path(folder)
        return (
            save_embedding(self, folder / "embedding.png", title),
            save_cluster_means(self, folder / "cluster_means.png", title),
        )


def spray(
    store: str | Path,
    target: int,
    n_clusters: int,
    *,
    by: Literal["target", "label"] = "target",
    size: tuple[int, int] | None = None,
    n_neighbors: int = 10,
    eigenvalues: int = 10,
    seed: int = 0,
) -> Spray:
    """Spectral relevance analysis of the rows of class `target` in an explained store.

    Arguments:
        store: a store written by `lrpfn.datasets.explain` (a path or an open Zarr group).
        target: the class.
        n_clusters: the number of clusters.
        by: select rows by the explained class ("target") or the data set's "label".
        size: `(h, w)` the heatmaps are pooled to (default: 32x32, or smaller inputs as
            they are); must divide the input size.
        n_neighbors: neighbours per heatmap in the affinity graph.
        eigenvalues: how many of the smallest Laplacian eigenvalues to return.
        seed: the random state of the clustering's k-means.

    Returns:
        A `Spray`.
    """
    import zarr

    group = zarr.open_group(str(store), mode="r") if isinstance(store, (str, Path)) else store
    relevance = group["relevance"]
    selected = (group["valid"][:]) & (group[by][:] == target)
    rows = np.flatnonzero(selected)
    if len(rows) <= max(n_clusters, n_neighbors):
        raise DatasetError(
            f"class {target} has {len(rows)} valid rows by {by!r}: too few for {n_clusters} "
            f"clusters with {n_neighbors} neighbours. Fix: lower n_neighbors / n_clusters."
        )
    height, width = relevance.shape[-2:]
    size = size or (min(32, height), min(32, width))
    if height % size[0] or width % size[1]:
        raise DatasetError(f"size {size} must divide the heatmaps' size {(height, width)}.")
    maps = _channel_sums(relevance, rows)
    features = _features(maps, size)
    affinity = _affinity(features.reshape(len(rows), -1), n_neighbors)
    values = _spectrum(affinity, eigenvalues)
    clusters = _cluster(affinity, n_clusters, seed)
    embedding = _embedding(features.reshape(len(rows), -1), seed)
    means = np.stack([maps[clusters == k].mean(axis=0) for k in range(n_clusters)])
    return Spray(rows, clusters, values, embedding, means, features)


def _channel_sums(relevance, rows: np.ndarray) -> np.ndarray:
    """The heatmaps of `rows`, channels summed, float64, read chunk by chunk."""
    step = relevance.chunks[0]
    maps = []
    for start in range(0, relevance.shape[0], step):
        inside = rows[(rows >= start) & (rows < start + step)]
        if len(inside):
            block = relevance[start : start + step][inside - start].astype(np.float64)
            maps.append(block.reshape(len(inside), -1, *block.shape[-2:]).sum(axis=1))
    return np.concatenate(maps)


def _features(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    pooled = torch.nn.functional.avg_pool2d(
        torch.from_numpy(maps)[:, None],
        (maps.shape[-2] // size[0], maps.shape[-1] // size[1]),
    )[:, 0].numpy()
    total = np.abs(pooled).sum(axis=(1, 2), keepdims=True)
    return pooled / np.where(total > 0, total, 1.0)


def _affinity(points: np.ndarray, n_neighbors: int) -> np.ndarray:
    from sklearn.neighbors import kneighbors_graph

    graph = kneighbors_graph(points, n_neighbors, include_self=False).toarray()
    return np.maximum(graph, graph.T)


def _spectrum(affinity: np.ndarray, count: int) -> np.ndarray:
    """The `count` smallest eigenvalues of $I - D^{-1/2} A D^{-1/2}$ (every degree is at
    least `n_neighbors`, so $D^{-1/2}$ exists)."""
    scale = 1.0 / np.sqrt(affinity.sum(axis=1))
    laplacian = np.eye(len(affinity)) - scale[:, None] * affinity * scale[None, :]
    return np.linalg.eigvalsh(laplacian)[:count]


def _embedding(points: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    perplexity = min(30.0, (len(points) - 1) / 3)
    return TSNE(2, perplexity=perplexity, random_state=seed).fit_transform(points)


def _cluster(affinity: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    from sklearn.cluster import SpectralClustering

    clustering = SpectralClustering(
        n_clusters, affinity="precomputed", random_state=seed, assign_labels="kmeans"
    )
    with warnings.catch_warnings():
        # a graph of several components is a finding (as many zero eigenvalues), not a fault
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        return clustering.fit_predict(affinity).astype(np.int64)
