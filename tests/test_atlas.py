"""`lrpfn.concepts.atlas`: the top-k samples of every concept over a data set, in a store.

The reference is a float64 NumPy computation over every sample at once: the relevance of
each layer from `lrpfn.relevances` (a full walk to the input, verified against zennit
elsewhere), the activation from torch forward hooks, the per-sample scores
$\\hat s_c = s_c / (\\sum_{c'} |s_{c'}| + 10^{-10})$ with $s_c$ the sum or the max over
positions, sorted by (score descending, index ascending). The atlas reduces batch by
batch into a running top-k, so the tests also vary the batch size, interrupt and resume
the run, and check what the store holds.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from hypothesis import given, strategies as st

import lrpfn
from lrpfn import composites, concepts
from lrpfn.concepts._topk import empty, merge, merge_batch
from lrpfn.datasets import DatasetError, Digits, ImageFolder, StoreMismatchError, digits_cnn

RULES = composites.epsilon_plus()
LAYERS = {"0": "_0", "3": "_3", "6": "_6"}  # module name -> fx node name
ORDERINGS = ("relevance_sum", "relevance_max", "activation_sum", "activation_max")
SAMPLES = 90


class DoubleDigits(torch.utils.data.Dataset):
    """The first `count` digits in float64."""

    def __init__(self, count: int = SAMPLES) -> None:
        digits = Digits()
        self.images = digits.images[:count].double()
        self.labels = digits.labels[:count]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index])


def small_digits() -> torch.utils.data.Dataset:
    """40 digits in float32, for the command line (`--data test_atlas:small_digits`)."""
    return torch.utils.data.Subset(Digits(), range(40))


def model() -> torch.nn.Module:
    return digits_cnn(seed=3).double()


def reference_scores(net, dataset, target) -> dict[tuple[str, str], np.ndarray]:
    """Every sample's normalised scores `(N, C)` per (layer, ordering), in float64."""
    x, labels = dataset.images, dataset.labels
    explained = {"label": labels, None: None}.get(target, target)
    recorded = lrpfn.relevances(net, x, RULES, target=explained)
    activations = {}
    handles = [
        net.get_submodule(name).register_forward_hook(
            lambda _, __, output, name=name: activations.__setitem__(name, output.detach())
        )
        for name in LAYERS
    ]
    with torch.no_grad():
        net(x)
    for handle in handles:
        handle.remove()
    found = {}
    for name, node in LAYERS.items():
        for source, value in (("relevance", recorded[node]), ("activation", activations[name])):
            flat = value.numpy().reshape(len(x), value.shape[1], -1)
            for reduction, score in (("sum", flat.sum(2)), ("max", flat.max(2))):
                normalised = score / (np.abs(score).sum(1, keepdims=True) + 1e-10)
                found[(name, f"{source}_{reduction}")] = normalised
    return found


def reference_top(scores: np.ndarray, k: int) -> np.ndarray:
    """Per channel, the k best sample indices by (score descending, index ascending)."""
    rows = np.arange(len(scores))
    return np.stack([np.lexsort((rows, -column))[:k] for column in scores.T])


def run(out: Path, dataset=None, **options):
    options = {"k": 7, "batch_size": 16, "progress": False, **options}
    options.setdefault("data_name", "digits")
    dataset = DoubleDigits() if dataset is None else dataset
    return concepts.atlas(model(), dataset, RULES, list(LAYERS), out, **options)


@pytest.mark.parametrize("target", ["label", None, 4])
def test_top_k_are_the_best_samples_of_every_concept(tmp_path, target) -> None:
    atlas = run(tmp_path / "a.zarr", target=target)
    reference = reference_scores(model(), DoubleDigits(), target)
    for (layer, ordering), scores in reference.items():
        indices, stored = atlas.top(layer, ordering)
        expected = reference_top(scores, 7)
        np.testing.assert_array_equal(indices, expected, err_msg=f"{layer} {ordering}")
        best = np.take_along_axis(scores.T, expected, axis=1)
        np.testing.assert_allclose(stored, best.astype(np.float32), rtol=1e-6, atol=1e-30)
        rows = zarr.open_group(str(tmp_path / "a.zarr"))[f"layers/{layer}/{ordering}/samples"]
        np.testing.assert_allclose(rows[...], scores, rtol=1e-12, atol=1e-15)


def test_class_relevance_is_the_mean_relevance_per_explained_class(tmp_path) -> None:
    atlas = run(tmp_path / "a.zarr", target=None)
    group = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")
    explained = group["target"][...]
    with torch.no_grad():
        np.testing.assert_array_equal(explained, model()(DoubleDigits().images).argmax(1))
    counts = np.bincount(explained, minlength=10)
    np.testing.assert_array_equal(group["class_count"][...], counts)
    scores = reference_scores(model(), DoubleDigits(), None)
    for layer in LAYERS:
        means = atlas.class_relevance(layer)
        for label in range(10):
            if counts[label] == 0:
                assert np.isnan(means[label]).all()
            else:
                expected = scores[(layer, "relevance_sum")][explained == label].mean(0)
                np.testing.assert_allclose(means[label], expected, rtol=1e-5, atol=1e-7)


def test_batch_size_and_k_do_not_change_the_order(tmp_path) -> None:
    small = run(tmp_path / "small.zarr", batch_size=7, k=5, target="label")
    whole = run(tmp_path / "whole.zarr", batch_size=SAMPLES, k=7, target="label")
    for layer in LAYERS:
        for ordering in ORDERINGS:
            a, b = small.top(layer, ordering), whole.top(layer, ordering)
            np.testing.assert_array_equal(a[0], b[0][:, :5])
            np.testing.assert_array_equal(a[1], b[1][:, :5])


@given(
    st.lists(st.integers(-3, 3), min_size=1, max_size=30),
    st.lists(st.integers(1, 29), max_size=4),
    st.integers(1, 8),
)
def test_merging_the_parts_gives_the_top_k_of_the_whole(values, cuts, k) -> None:
    scores = torch.tensor(values, dtype=torch.float64)[:, None]  # many ties
    indices = torch.arange(len(values))
    bounds = sorted({0, len(values), *(c for c in cuts if c < len(values))})
    parts = [
        merge_batch(empty(1, k, torch.float64, torch.device("cpu")), scores[a:b], indices[a:b])
        for a, b in itertools.pairwise(bounds)
    ]
    top = empty(1, k, torch.float64, torch.device("cpu"))
    for part in reversed(parts):  # any order
        top = merge(top, part)
    expected = reference_top(np.asarray(values, dtype=np.float64)[:, None], k)[0]
    filled = min(k, len(values))
    assert top.indices[0, :filled].tolist() == expected.tolist()
    assert (top.indices[0, filled:] == -1).all() and torch.isinf(top.scores[0, filled:]).all()


class Failing(DoubleDigits):
    """Sample 50 cannot be read (a corrupt file, say)."""

    def __getitem__(self, index: int):
        if index == 50:
            raise OSError("truncated file")
        return super().__getitem__(index)


def test_a_rerun_completes_an_interrupted_store(tmp_path) -> None:
    out = tmp_path / "a.zarr"
    with pytest.raises(DatasetError, match=r"sample 50 .*truncated file"):
        run(out, dataset=Failing(), model_name="cnn")
    assert zarr.open_group(str(out), mode="r")["complete"][...].tolist() == [
        True, True, True, False, False, False,
    ]  # fmt: skip
    resumed = run(out, model_name="cnn")
    run(tmp_path / "b.zarr", model_name="cnn")  # uninterrupted
    a, b = zarr.open_group(str(out), mode="r"), zarr.open_group(str(tmp_path / "b.zarr"))
    assert a.attrs["lrpfn"]["runs"][-1]["chunks_written"] == 3
    for name in ["label", "target", "logits", "class_count", "complete"] + [
        f"layers/{layer}/{ordering}/{part}"
        for layer in LAYERS
        for ordering in ORDERINGS
        for part in ("indices", "scores", "samples")
    ]:
        np.testing.assert_array_equal(a[name][...], b[name][...], err_msg=name)
    assert resumed.top("3", "relevance_max")[0].shape == (16, 7)


def test_a_crash_between_a_chunks_writes_and_its_mark_rewrites_that_chunk(
    tmp_path, monkeypatch
) -> None:
    """The process dies after chunk 2's arrays are written and before it is marked
    complete: the rerun writes chunk 2 again and the store equals an uninterrupted one."""
    from lrpfn.concepts import _atlas_store

    marked = _atlas_store.mark_complete

    def dies_at_chunk_2(group, chunk):
        if chunk == 2:
            raise KeyboardInterrupt  # what a kill looks like from here: nothing after it runs
        marked(group, chunk)

    out = tmp_path / "a.zarr"
    with monkeypatch.context() as patch:
        patch.setattr(_atlas_store, "mark_complete", dies_at_chunk_2)
        with pytest.raises(KeyboardInterrupt):
            run(out, model_name="cnn")
    group = zarr.open_group(str(out), mode="r")
    assert group["complete"][...].tolist() == [True, True, False, False, False, False]
    assert not np.isnan(group["layers/3/relevance_sum/samples"][32:48]).any()  # written
    run(out, model_name="cnn")
    run(tmp_path / "b.zarr", model_name="cnn")
    a, b = zarr.open_group(str(out), mode="r"), zarr.open_group(str(tmp_path / "b.zarr"))
    assert a.attrs["lrpfn"]["runs"][-1]["chunks_written"] == 4
    for name in ["complete", "class_count", "layers/3/class_relevance"] + [
        f"layers/{layer}/{ordering}/{part}"
        for layer in LAYERS
        for ordering in ORDERINGS
        for part in ("indices", "scores")
    ]:
        np.testing.assert_array_equal(a[name][...], b[name][...], err_msg=name)


def test_a_store_of_other_settings_is_refused_naming_what_differs(tmp_path) -> None:
    run(tmp_path / "a.zarr")
    with pytest.raises(StoreMismatchError) as raised:
        run(tmp_path / "a.zarr", k=8)
    message = str(raised.value)
    assert "k: store has 7, this run has 8" in message
    assert "batch_size" not in message and "model_sha256" not in message


def _load(path: Path) -> torch.Tensor:
    return torch.load(path)


def test_the_store_holds_paths_class_names_and_the_layout(tmp_path) -> None:
    generator = torch.Generator().manual_seed(0)
    for name in ("cat", "dog"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(3):
            torch.save(
                torch.rand((1, 8, 8), generator=generator), tmp_path / "images" / name / f"{i}.pt"
            )
    folder = ImageFolder(tmp_path / "images", _load, (".pt",))
    net = digits_cnn(seed=1)
    concepts.atlas(
        net, folder, RULES, ["3", "6"], tmp_path / "a.zarr", k=4, batch_size=4, progress=False
    )
    group = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")
    attributes = group.attrs["lrpfn"]
    assert attributes["format"] == "lrpfn.atlas/1" and attributes["complete"] is True
    assert attributes["class_names"] == ["cat", "dog"] and attributes["layers"] == ["3", "6"]
    assert group["path"][...].tolist() == [str(path) for path, _ in folder.samples]
    assert group["label"][...].tolist() == [0, 0, 0, 1, 1, 1]
    assert group["logits"].shape == (6, 10) and group["logits"].dtype == np.float32
    assert dict(group["layers/3"].attrs) == {
        "channels": 16,
        "kind": "channel",
        "k": 4,
        "concept_axis": 1,
    }
    assert group["layers/6"].attrs["kind"] == "neuron" and group["layers/6"].attrs["channels"] == 64
    indices = group["layers/3/relevance_sum/indices"]
    assert indices.shape == (16, 4) and indices.dtype == np.int64
    assert group["layers/3/relevance_sum/scores"].dtype == np.float32
    assert group["layers/3/class_relevance"].shape == (10, 16)


def test_fewer_samples_than_k_leave_minus_one(tmp_path) -> None:
    atlas = run(tmp_path / "a.zarr", dataset=DoubleDigits(5), k=7)
    indices, scores = atlas.top("3", "activation_max")
    assert (np.sort(indices[:, :5], axis=1) == np.arange(5)).all()
    assert (indices[:, 5:] == -1).all() and np.isnan(scores[:, 5:]).all()


def test_references_are_the_conditional_heatmaps_of_the_top_samples(tmp_path) -> None:
    atlas = run(tmp_path / "a.zarr", target="label")
    refs = atlas.references("3", [2, 9], n=4, size=(12, 12))
    indices, _ = atlas.top("3", "relevance_sum")
    np.testing.assert_array_equal(refs.indices, indices[[2, 9], :4])
    data = DoubleDigits()
    for row, channel in enumerate((2, 9)):
        x = data.images[refs.indices[row]]
        expected = concepts.conditional(
            model(), x, RULES, [{"3": [channel]}], target=data.labels[refs.indices[row]]
        )[0]
        torch.testing.assert_close(refs.heatmaps[row], expected, rtol=1e-12, atol=1e-14)
        field = concepts.receptive_field(expected)
        boxes = concepts.bounding_box(field)
        boxes[~field.flatten(1).any(1)] = torch.tensor([0, 0, 8, 8])
        assert refs.boxes[row].tolist() == boxes.tolist()
    assert refs.images.shape == (2, 4, 12, 12, 3) and refs.images.dtype == np.uint8
    assert refs.crops.shape == (2, 4, 12, 12)


def test_render_references_writes_the_layout_arrays(tmp_path) -> None:
    atlas = run(tmp_path / "a.zarr", dataset=DoubleDigits(20))
    atlas.render_references(["6"], n=3, size=(8, 8), batch_size=16)
    group = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")
    assert group["layers/6/references/images"].shape == (64, 3, 8, 8, 3)
    assert group["layers/6/references/heatmaps"].dtype == np.float16
    np.testing.assert_array_equal(
        group["layers/6/references/indices"][...], atlas.top("6")[0][:, :3]
    )


def test_load_atlas_reads_a_store_back(tmp_path) -> None:
    run(tmp_path / "a.zarr")
    loaded = concepts.load_atlas(tmp_path / "a.zarr", model(), DoubleDigits(), RULES)
    assert loaded.layers == list(LAYERS) and loaded.kind("0") == "channel"
    assert loaded.references("0", 1, n=2).images.shape[:2] == (1, 2)
    with pytest.raises(DatasetError, match="need the model and the data set"):
        concepts.load_atlas(tmp_path / "a.zarr").references("0", 1)
    with pytest.raises(DatasetError, match="no atlas store at"):
        concepts.load_atlas(tmp_path / "missing.zarr")
    with pytest.raises(DatasetError, match=r"the atlas has no layer 'features\.1'"):
        loaded.top("features.1")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"layers": []}, "non-empty list of layer names"),
        ({"layers": "3"}, "non-empty list of layer names"),
        ({"layers": ["3", "3"]}, "listed twice"),
        ({"k": 0}, "k must be a positive int"),
        ({"batch_size": 2.5}, "batch_size must be a positive int"),
        ({"target": "labels"}, "target must be None, 'label' or a class index"),
    ],
)
def test_bad_options_are_refused(tmp_path, options, message) -> None:
    layers = options.pop("layers", ["3"])
    with pytest.raises(DatasetError, match=message):
        concepts.atlas(model(), DoubleDigits(5), RULES, layers, tmp_path / "a.zarr", **options)


def test_an_unknown_layer_is_named(tmp_path) -> None:
    with pytest.raises(concepts.InvalidConditionError, match=r"named 'features\.9'"):
        concepts.atlas(model(), DoubleDigits(5), RULES, ["features.9"], tmp_path / "a.zarr")


def test_the_command_line_writes_the_store_references_and_figures(tmp_path, capsys) -> None:
    from lrpfn.cli import main

    out = tmp_path / "d.zarr"
    status = main([
        "atlas", "--model", "lrpfn.datasets:digits_cnn", "--data", "test_atlas:small_digits",
        "--rules", "epsilon_plus", "--layer", "3", "--layer", "6", "--out", str(out),
        "--k", "5", "--batch-size", "16", "--references", "3", "--size", "10", "--quiet",
    ])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    group = zarr.open_group(str(out), mode="r")
    assert group["layers/3/references/images"].shape == (16, 3, 10, 10, 3)
    assert sorted(p.name for p in (tmp_path / "d.zarr.figures").iterdir()) == ["3.png", "6.png"]
    assert "wrote the atlas of 2 layer(s)" in capsys.readouterr().out


def mlp() -> torch.nn.Module:
    """A dense network on 6 features (a `module:attr` for the command line)."""
    torch.manual_seed(4)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()


def vectors() -> torch.utils.data.TensorDataset:
    generator = torch.Generator().manual_seed(5)
    return torch.utils.data.TensorDataset(
        torch.randn((12, 6), generator=generator), torch.arange(12) % 3
    )


def test_the_command_line_on_feature_vectors_keeps_references_without_figures(
    tmp_path, capsys
) -> None:
    from lrpfn.cli import main

    out = tmp_path / "v.zarr"
    status = main([
        "atlas", "--model", f"{Path(__file__).resolve()}:mlp", "--data", "test_atlas:vectors",
        "--rules", "epsilon", "--layer", "1", "--out", str(out), "--k", "4",
        "--batch-size", "5", "--references", "2", "--quiet",
    ])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    group = zarr.open_group(str(out), mode="r")
    assert group["layers/1/references/indices"].shape == (8, 2)
    assert "images" not in group["layers/1/references"]
    assert "no figure of layer 1: the inputs are not images" in capsys.readouterr().out
