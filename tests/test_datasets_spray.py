"""`lrpfn.datasets.spray` on a store whose clusters are known by construction: heatmaps
of class 0 put their relevance either in the top-left or in the bottom-right quarter."""

import numpy as np
import pytest
import zarr
from PIL import Image
from scipy.sparse.csgraph import laplacian
from sklearn.neighbors import kneighbors_graph

from lrpfn import datasets
from lrpfn.datasets import DatasetError

GROUP = 20  # heatmaps per strategy


@pytest.fixture
def store(tmp_path):
    """Rows 0..39 class 0 (even rows top-left, odd rows bottom-right), rows 40..49 class
    1, row 50 class 0 but invalid (NaN relevance)."""
    rng = np.random.default_rng(0)
    relevance = rng.uniform(0, 0.01, (51, 3, 16, 16)).astype(np.float32)
    relevance[0:40:2, :, :8, :8] += rng.uniform(0.5, 1.0, (GROUP, 3, 8, 8))
    relevance[1:40:2, :, 8:, 8:] += rng.uniform(0.5, 1.0, (GROUP, 3, 8, 8))
    relevance[50] = np.nan
    target = np.array([0] * 40 + [1] * 10 + [0])
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    group.create_array("relevance", data=relevance, chunks=(16, 3, 16, 16))
    group.create_array("target", data=target)
    group.create_array("label", data=1 - target)
    group.create_array("valid", data=np.arange(51) < 50)
    return tmp_path / "s.zarr", relevance


def test_spray_finds_the_two_strategies(store):
    path, relevance = store
    result = datasets.spray(path, target=0, n_clusters=2, size=(4, 4), n_neighbors=5)
    assert result.rows.tolist() == list(range(40))  # the invalid row 50 is left out
    first = result.clusters[0]
    assert (result.clusters[0::2] == first).all() and (result.clusters[1::2] == 1 - first).all()
    maps = relevance[:40].astype(np.float64).sum(axis=1)  # channels summed
    np.testing.assert_allclose(result.means[first], maps[0::2].mean(axis=0))
    np.testing.assert_allclose(result.means[1 - first], maps[1::2].mean(axis=0))
    # features: 4x4 average pools of the maps, each divided by its sum of |values|
    pooled = maps.reshape(40, 4, 4, 4, 4).mean(axis=(2, 4))
    expected = pooled / np.abs(pooled).sum(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(result.features, expected)
    assert result.embedding.shape == (40, 2)


def test_eigenvalues_are_those_of_the_normalised_laplacian(store):
    path, _ = store
    result = datasets.spray(path, target=0, n_clusters=2, size=(4, 4), n_neighbors=5)
    graph = kneighbors_graph(result.features.reshape(40, -1), 5).toarray()
    affinity = np.maximum(graph, graph.T)
    reference = np.linalg.eigvalsh(laplacian(affinity, normed=True))[:10]
    np.testing.assert_allclose(result.eigenvalues, reference, atol=1e-12)
    # two strategies that share no neighbours: two components, so two zero eigenvalues
    np.testing.assert_allclose(result.eigenvalues[:2], 0.0, atol=1e-12)
    assert result.eigenvalues[2] > 0.1


def test_rows_by_label(store):
    path, _ = store
    result = datasets.spray(path, target=1, n_clusters=2, by="label", size=(4, 4), n_neighbors=5)
    assert result.rows.tolist() == list(range(40))


def test_too_few_rows_and_bad_sizes_are_named(store):
    path, _ = store
    with pytest.raises(DatasetError, match="class 1 has 10 valid rows"):
        datasets.spray(path, target=1, n_clusters=2, n_neighbors=10)
    with pytest.raises(DatasetError, match=r"size \(5, 5\) must divide"):
        datasets.spray(path, target=0, n_clusters=2, size=(5, 5), n_neighbors=5)


def test_figures(store, tmp_path):
    path, _ = store
    result = datasets.spray(path, target=0, n_clusters=2, size=(4, 4), n_neighbors=5)
    embedding, means = result.save_figures(tmp_path / "figures", title="class 0")
    for png in (embedding, means):
        with Image.open(png) as picture:
            assert picture.format == "PNG" and picture.size[0] > 100
