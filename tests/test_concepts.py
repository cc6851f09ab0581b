"""`lrpfn.concepts`: the formula on a network small enough to derive by hand, how
conditions name nodes, per-sample conditions, importance, top and receptive fields, and
the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from strategies import assert_close64
from torch import nn

import lrpfn
from lrpfn import concepts, rules
from lrpfn.concepts import InvalidConditionError
from lrpfn.errors import InvalidTargetError

LRP0 = rules.Epsilon(0.0)


def two_dense_layers() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False)).double()
    return model.eval(), torch.randn(5, 3, dtype=torch.float64)


def test_conditional_on_hidden_neurons_matches_the_derivation() -> None:
    """x -> z1 = W1 x -> z2 = W2 z1, LRP-0, target t. The output relevance is z2_t; a
    hidden neuron gets R1_j = z1_j W2[t, j] / z2_t * z2_t = z1_j W2[t, j]; keeping the
    neurons j in theta, the input gets
    R0_i = sum_{j in theta} x_i W1[j, i] / z1_j * R1_j = x_i sum_{j in theta} W1[j, i] W2[t, j]."""
    model, x = two_dense_layers()
    w1, w2 = model[0].weight.detach(), model[1].weight.detach()
    target, thetas = 1, [[0], [1, 3], [0, 1, 2, 3]]
    heatmaps = concepts.conditional(model, x, LRP0, [{"0": t} for t in thetas], target=target)
    for theta, heatmap in zip(thetas, heatmaps, strict=True):
        expected = x * (w1[theta] * w2[target, theta][:, None]).sum(0)
        assert_close64(heatmap, expected)


def test_a_node_is_named_by_fx_name_or_module_name() -> None:
    model, x = two_dense_layers()
    by_node = concepts.conditional(model, x, LRP0, [{"_0": [2]}])
    by_module = concepts.conditional(model, x, LRP0, [{"0": [2]}])
    assert torch.equal(by_node, by_module)


class Blocks(nn.Module):
    """A stem container (conv, BatchNorm, ReLU), a residual block, a ReLU called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.tail = nn.Sequential(nn.ReLU())
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        a = self.stem(x)
        b = self.tail[0](a + self.block(a))
        return self.head(self.tail[0](b).mean(dim=(2, 3)))


def make_blocks(dtype: torch.dtype) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(1)
    model = Blocks().eval()
    with torch.no_grad():
        model.stem[1].running_mean.uniform_(-0.5, 0.5)
        model.stem[1].running_var.uniform_(0.5, 1.5)
    return model.to(dtype), torch.randn(3, 2, 6, 6).to(dtype)


@pytest.fixture(scope="module")
def blocks() -> tuple[lrpfn.Plan, torch.Tensor]:
    model, x = make_blocks(torch.float64)
    return lrpfn.prepare(model, rules.Epsilon(1e-9)), x


@pytest.mark.parametrize(
    ("name", "node"),
    [
        ("stem.0", "stem_0"),  # a leaf module
        ("stem.1", "stem_0"),  # a BatchNorm folded into the convolution before it
        ("stem_1", "stem_0"),  # the folded BatchNorm's fx name, as lrpfn.relevances reports it
        ("stem", "stem_2"),  # a container: its output node
        ("block", "block_1"),
    ],
)
def test_module_names_resolve_to_the_node_carrying_their_relevance(blocks, name, node) -> None:
    plan, x = blocks
    assert torch.equal(
        concepts.conditional(plan, x, None, [{name: [1, 3]}]),
        concepts.conditional(plan, x, None, [{node: [1, 3]}]),
    )
    assert torch.equal(
        concepts.importance(plan, x, None, name), concepts.importance(plan, x, None, node)
    )


def test_a_module_called_twice_must_be_named_by_its_node(blocks) -> None:
    plan, x = blocks
    with pytest.raises(InvalidConditionError, match=r"more than once.*tail_0, tail_1"):
        concepts.conditional(plan, x, None, [{"tail.0": [0]}])


def test_importance_is_the_node_relevance_summed_over_positions(blocks) -> None:
    plan, x = blocks
    every = lrpfn.relevances(plan, x)
    for name in ("stem_0", "block_0", "add", "tail_1"):
        assert_close64(concepts.importance(plan, x, None, name), every[name].sum(dim=(2, 3)))


def test_importance_under_a_condition_on_a_later_layer(blocks) -> None:
    """Keeping every channel of a later node and its bypass changes nothing; keeping one
    channel gives the stem's relevance of what flows through that channel alone."""
    plan, x = blocks
    plain = concepts.importance(plan, x, None, "stem")
    kept = concepts.importance(
        plan, x, None, "stem", conditions=[{"block": range(4)}], exclude_parallel=False
    )
    assert kept.shape == (1, *plain.shape)
    assert_close64(kept[0], plain)
    parts = concepts.importance(plan, x, None, "stem", conditions=[{"add": [c]} for c in range(4)])
    assert_close64(parts.sum(0), plain)  # every path to the stem passes the addition


def test_per_sample_channels_equal_separate_calls(blocks) -> None:
    plan, x = blocks
    channels = torch.tensor([[0], [3], [1]])
    per_sample = concepts.conditional(plan, x, None, [{"block": channels}])[0]
    for sample, channel in enumerate(channels[:, 0].tolist()):
        alone = concepts.conditional(plan, x[sample : sample + 1], None, [{"block": [channel]}])
        assert_close64(per_sample[sample : sample + 1], alone[0])


def test_float32_agrees_with_float64(blocks) -> None:
    plan, x = blocks
    conditions = [{"block": [0, 1]}, {"stem": [2], "block": [3]}]
    exact = concepts.conditional(plan, x, None, conditions, target=1)
    model32, x32 = make_blocks(torch.float32)
    approximate = concepts.conditional(model32, x32, rules.Epsilon(1e-9), conditions, target=1)
    assert approximate.dtype == torch.float32
    assert float((approximate.double() - exact).abs().max()) <= 1e-4 * float(exact.abs().max())


def test_top_picks_the_most_relevant_channels() -> None:
    importance = torch.tensor([[0.1, 0.5, -0.2, 0.6], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    best = concepts.top(importance, 2)
    assert best.channels[0].tolist() == [3, 1]
    assert best.relevance[0].tolist() == [0.6, 0.5]
    np.testing.assert_allclose(best.share[0].numpy(), [0.6 / 1.0, 0.5 / 1.0])
    assert best.share[1].tolist() == [0.0, 0.0]  # no relevance: no share, no NaN
    conditions = best.conditions("layer4")
    assert len(conditions) == 2 and conditions[1]["layer4"].tolist() == [[1], [best.channels[1, 1]]]


def test_receptive_field_thresholds_the_channel_sum() -> None:
    # channel sums: [[1, 0.1, -2], [0.5, 0, 0.25]]; the largest is 1, so 0.25 passes at 0.2
    heatmap = torch.tensor(
        [[[[0.5, 0.1, -1.0], [0.5, 0.0, 0.0]], [[0.5, 0.0, -1.0], [0.0, 0.0, 0.25]]]]
    )
    field = concepts.receptive_field(heatmap, 0.2)
    assert field.tolist() == [[[True, False, False], [True, False, True]]]
    assert concepts.receptive_field(-heatmap.abs(), 0.2).sum() == 0  # no positive relevance
    assert concepts.bounding_box(field).tolist() == [[0, 0, 2, 3]]
    empty = torch.zeros(2, 4, dtype=torch.bool)
    assert concepts.bounding_box(empty).tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize(
    ("conditions", "message"),
    [
        ([], "non-empty sequence"),
        ({"block": [0]}, "non-empty sequence"),
        ([{"block": [4]}], "lists channel 4 of node 'block_1', which has 4 channels"),
        ([{"block": [-1]}], "must be >= 0"),
        ([{"block": [0.5]}], "must be integers"),
        ([{"block": torch.zeros(2, 1, dtype=torch.long)}], r"\(batch, m\) = \(3, m\)"),
        ([{"nowhere": [0]}], "no relevance-carrying graph node or module is named 'nowhere'"),
        ([{"block": [0], "block_1": [1]}], "names node 'block_1' twice"),
        ([["block"]], "each condition is a dict"),
    ],
)
def test_invalid_conditions_are_reported(blocks, conditions, message) -> None:
    plan, x = blocks
    with pytest.raises(InvalidConditionError, match=message):
        concepts.conditional(plan, x, None, conditions)


def test_nodes_on_parallel_paths_cannot_be_excluded_together() -> None:
    class Parallel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.left, self.right = nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, x):
            return self.left(x) + self.right(x)

    model, x = Parallel().double().eval(), torch.randn(2, 3, dtype=torch.float64)
    conditions = [{"left": [0], "right": [1]}]
    with pytest.raises(InvalidConditionError, match="parallel paths"):
        concepts.conditional(model, x, LRP0, conditions)
    both = concepts.conditional(model, x, LRP0, conditions, exclude_parallel=False)
    assert both.shape == (1, 2, 3)


def test_several_targets_per_sample_are_refused(blocks) -> None:
    plan, x = blocks
    with pytest.raises(InvalidTargetError, match="one target per sample"):
        concepts.conditional(plan, x, None, [{"block": [0]}], target=torch.zeros(3, 2).long())


def test_plot_concepts_draws_the_input_and_one_titled_panel_per_concept(tmp_path) -> None:
    from lrpfn import image

    relevance = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    fields = concepts.receptive_field(relevance[:, None], 0.5)[:, 0]
    figure = image.plot_concepts(
        np.zeros((8, 8, 3), np.uint8),
        relevance,
        torch.tensor([0.5, 0.25, 0.125]),
        ["channel 4", "channel 0", "channel 9"],
        tmp_path / "row.png",
        fields=fields,
    )
    titles = [axis.get_title() for axis in figure.axes]
    assert titles == ["input", "channel 4\n50.0% of the layer", "channel 0\n25.0% of the layer",
                      "channel 9\n12.5% of the layer"]  # fmt: skip
    assert (tmp_path / "row.png").stat().st_size > 0
    with pytest.raises(ValueError, match="k labels and k shares"):
        image.plot_concepts(np.zeros((8, 8, 3), np.uint8), relevance, [0.5], ["a"])


def test_plot_concepts_is_legible_at_its_defaults(tmp_path) -> None:
    """Four concepts at the defaults: at least 1000 px wide and 200 px high, 9-point titles,
    and each receptive field marked by its bounding box (a rectangle around the pixels of
    the field, computed here from the mask), not a contour over the field."""
    from lrpfn import image

    pytest.importorskip("matplotlib")
    relevance = torch.randn(4, 16, 16, generator=torch.Generator().manual_seed(1))
    fields = torch.zeros(4, 16, 16, dtype=torch.bool)
    fields[0, 3:5, 6:7] = True  # a 2 x 1 field
    fields[2, 0:16, 2:9] = True
    figure = image.plot_concepts(
        np.zeros((16, 16, 3), np.uint8), relevance, [0.4, 0.3, 0.2, 0.1],
        ["a", "b", "c", "d"], tmp_path / "row.png", fields=fields,
    )  # fmt: skip
    width, height = figure.get_size_inches() * figure.dpi
    assert width >= 1000 and height >= 200
    assert all(axis.title.get_fontsize() == 9 for axis in figure.axes)
    boxes = [[patch.get_bbox().bounds for patch in axis.patches] for axis in figure.axes[1:]]
    assert boxes == [[(5.5, 2.5, 1.0, 2.0)], [], [(1.5, -0.5, 7.0, 16.0)], []]
    assert not any(axis.collections for axis in figure.axes)  # no contour lines


def test_the_benchmark_reference_is_one_forward_and_k_plain_walks(blocks, monkeypatch) -> None:
    """benchmarks/bench_concepts.py times conditional against this budget; each of its k
    walks must be the plain explanation."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import bench_concepts

    plan, x = blocks
    walks = bench_concepts.reference(plan, x, 3)
    assert len(walks) == 3
    for walk in walks:
        assert_close64(walk, lrpfn.lrp(plan, x))
