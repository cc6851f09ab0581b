"""`lrpfn.concepts.prune`: a copy of the model with the lowest-scoring channels removed.

The reference is built by hand: removing channel c of a convolution means zeroing its
filter and bias in a copy (then ReLU and max-pooling pass the zero on), and of a
convolution followed by BatchNorm zeroing the BatchNorm's scale and shift (its output is
then exactly zero in eval mode). The pruned model must compute the same function, and the
user's model must stay as it was.
"""

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lrpfn import concepts, datasets
from lrpfn.concepts import PruningError

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import report_stores  # noqa: E402

SCORES = {
    "_0": np.array([5.0, 1.0, 7.0, 0.5, 3.0, 3.0, 9.0, 2.0]),  # lowest two: 3, 1
    "_3": np.arange(16.0)[::-1].copy(),  # lowest four: 15, 14, 13, 12
}


@pytest.fixture(scope="module")
def x():
    return datasets.Digits().images[:64]


def _without(model: nn.Sequential, removed: dict[int, list[int]]) -> nn.Sequential:
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for index, channels in removed.items():
            reference[index].weight[channels] = 0
            reference[index].bias[channels] = 0
    return reference


def test_the_least_relevant_channels_are_removed_and_the_model_is_untouched(x):
    model = datasets.digits_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = concepts.prune(model, SCORES, 0.25)
    expected = _without(model, {0: [3, 1], 3: [15, 14, 13, 12]})
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), expected(x), rtol=0, atol=1e-6)
        assert not torch.allclose(pruned(x), model(x))
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert not pruned.training


def test_module_names_and_node_names_are_the_same_layer(x):
    model = datasets.digits_cnn()
    by_module = concepts.prune(model, {"0": SCORES["_0"], "3": SCORES["_3"]}, 0.25)
    by_node = concepts.prune(model, SCORES, 0.25)
    with torch.no_grad():
        assert torch.equal(by_module(x), by_node(x))


def test_after_a_batch_norm_the_mask_comes_after_it():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2)
    )
    x = torch.randn(5, 3, 7, 7)
    model(x)  # materialise the lazy layer
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].bias.uniform_(0.5, 1)  # a shift that masking the convolution alone would keep
    model.eval()
    pruned = concepts.prune(model, {"0": np.arange(6.0)}, 0.5)  # channels 0, 1, 2
    reference = copy.deepcopy(model)
    with torch.no_grad():
        reference[1].weight[:3] = 0
        reference[1].bias[:3] = 0
        torch.testing.assert_close(pruned(x), reference(x), rtol=0, atol=1e-6)


def test_global_scope_ranks_all_layers_together(x):
    model = datasets.digits_cnn()
    # 24 channels, a quarter is 6: the 6 lowest scores overall are _0's 0.5, 1, 2 and
    # _3's 0, 1, 2 (channels 15, 14, 13)
    pruned = concepts.prune(model, SCORES, 0.25, scope="global")
    expected = _without(model, {0: [3, 1, 7], 3: [15, 14, 13]})
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), expected(x), rtol=0, atol=1e-6)


def test_fractions_zero_and_one(x):
    model = datasets.digits_cnn()
    with torch.no_grad():
        assert torch.equal(concepts.prune(model, SCORES, 0.0)(x), model(x))
        everything = concepts.prune(model, {"_3": SCORES["_3"]}, 1.0)(x)
    # no channel of the second convolution left: every input gives the dense layer's bias
    torch.testing.assert_close(everything, model[7].bias.detach().expand(len(x), -1))


def test_scores_from_an_atlas_store_are_the_mean_class_relevance(x, tmp_path):
    labels = np.arange(30) % 10
    store = report_stores.atlas_store(
        tmp_path / "a.zarr", labels, None, {"_0": 8, "_3": 16}, seed=3
    )
    import zarr

    group = zarr.open_group(str(store), mode="r")
    model = datasets.digits_cnn()
    for classes in (None, [0, 2, 5]):
        table = {}
        for layer in ("_0", "_3"):
            relevance = group[f"layers/{layer}/class_relevance"][:].astype(np.float64)
            chosen = relevance if classes is None else relevance[classes]
            table[layer] = np.nanmean(chosen, axis=0)  # class 1 is all NaN: left out
        from_store = concepts.prune(model, store, 0.5, classes=classes)
        from_mapping = concepts.prune(model, table, 0.5)
        with torch.no_grad():
            assert torch.equal(from_store(x), from_mapping(x))


def test_weight_magnitude_is_the_l1_norm_of_each_filter():
    model = datasets.digits_cnn()
    table = concepts.weight_magnitude(model, ["_0", "7"])
    expected = np.abs(model[0].weight.detach().double().numpy()).reshape(8, -1).sum(1)
    np.testing.assert_allclose(table["_0"], expected)
    np.testing.assert_allclose(table["7"], np.abs(model[7].weight.detach().double().numpy()).sum(1))
    with pytest.raises(PruningError, match="not a convolution or linear layer"):
        concepts.weight_magnitude(model, ["_1"])


def test_bad_input_is_named(tmp_path):
    model = datasets.digits_cnn()
    with pytest.raises(PruningError, match=r"fraction must lie in \[0, 1\], got 1.5"):
        concepts.prune(model, SCORES, 1.5)
    with pytest.raises(PruningError, match=r"no layer 'conv9'.*_0, _1"):
        concepts.prune(model, {"conv9": [1.0]}, 0.5)
    with pytest.raises(PruningError, match="layer '_0' has 8 channels, its scores 3 values"):
        concepts.prune(model, {"_0": [1.0, 2.0, 3.0]}, 0.5)
    with pytest.raises(PruningError, match="scope must be"):
        concepts.prune(model, SCORES, 0.5, scope="model")
    with pytest.raises(PruningError, match="classes= selects classes of an atlas store"):
        concepts.prune(model, SCORES, 0.5, classes=[1])
    report_stores.digits_store(tmp_path / "d.zarr")
    with pytest.raises(PruningError, match="not an atlas store"):
        concepts.prune(model, tmp_path / "d.zarr", 0.5)


@pytest.mark.slow
def test_the_pruning_curve_script_runs():
    import subprocess

    script = HERE.parent / "benchmarks" / "prune_curve.py"
    result = subprocess.run(
        [sys.executable, str(script), "--smoke", "--no-write"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 0.")]
    assert [row.split("|")[1].strip() for row in rows] == ["0.0", "0.5", "0.9"]
    unpruned = {cell.strip() for cell in rows[0].split("|")[2:-1]}
    assert len(unpruned) == 1  # nothing removed: every criterion gives the same accuracy
