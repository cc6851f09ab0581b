"""Conservation properties of Concept Relevance Propagation (Hypothesis, float64).

Bias-free networks with ReLUs explained with LRP-0 conserve relevance at every step, so:

- the conditional heatmaps of a partition of a node's channels add up to the heatmap of
  all its channels; with `exclude_parallel=False` every conditional heatmap also holds
  the relevance bypassing the node (a residual skip around it: the heatmap of the empty
  condition), so the g parts add up to the unconditional heatmap plus g - 1 times that
  bypass (zero in a sequential network);
- each conditional heatmap sums to its concept's relevance at that node, the node's
  relevance (`lrpfn.relevances`) summed over the concept's channels, when relevance
  bypassing the node is excluded (the default).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st
from strategies import (
    assert_close64,
    assert_conserved,
    cases,
    inputs,
    residual_networks,
    sequential_networks,
)

import lrpfn
from lrpfn import concepts, rules

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")

LRP0 = rules.Epsilon(0.0)
NETWORKS = st.one_of(
    sequential_networks(bias=False, activations=("ReLU",), dims=(0, 1, 2)),
    residual_networks(bias=False, batch_norm_bias=False, activations=("ReLU",)),
)


def _channel_nodes(every: dict) -> list[str]:
    """Nodes with a channel axis (shape (batch, channels, ...)), not the input or output."""
    names = list(every)[1:-1]  # graph order: the input first, "output" last
    return [n for n in names if isinstance(every[n], torch.Tensor) and every[n].ndim >= 2]


@settings(max_examples=25)
@given(case=cases(NETWORKS, inputs(kinds=("mixed", "nonnegative"))), data=st.data())
def test_partition_of_channels_sums_to_the_heatmap(case, data) -> None:
    plan = lrpfn.prepare(case.model, LRP0)
    every = lrpfn.relevances(plan, case.x)
    name = data.draw(st.sampled_from(_channel_nodes(every)), label="node")
    channels = every[name].shape[1]
    groups = data.draw(st.integers(1, min(3, channels)), label="groups")
    owner = data.draw(st.lists(st.integers(0, groups - 1), min_size=channels, max_size=channels))
    partition = [[c for c in range(channels) if owner[c] == g] for g in range(groups)]
    conditions = [{name: part} for part in partition]

    kept = concepts.conditional(plan, case.x, None, conditions, exclude_parallel=False)
    assert kept.shape == (groups, *case.x.shape)
    bypass = concepts.conditional(plan, case.x, None, [{name: []}], exclude_parallel=False)[0]
    assert_close64(kept.sum(0) - (groups - 1) * bypass, lrpfn.lrp(plan, case.x))

    through = concepts.conditional(plan, case.x, None, conditions)
    everything = concepts.conditional(plan, case.x, None, [{name: list(range(channels))}])
    assert_close64(through.sum(0), everything[0])
    node_relevance = every[name].flatten(2).sum(2) if every[name].ndim > 2 else every[name]
    for part, heatmap in zip(partition, through, strict=True):
        concept_relevance = node_relevance[:, part].sum(1)
        assert_conserved(heatmap, concept_relevance, what=f"of concept {part} at {name}")


@settings(max_examples=15)
@given(case=cases(NETWORKS, inputs()), data=st.data())
def test_k_conditions_at_once_equal_each_alone(case, data) -> None:
    """The vmapped walk over k conditions gives what k separate calls give."""
    plan = lrpfn.prepare(case.model, LRP0)
    every = lrpfn.relevances(plan, case.x)
    name = data.draw(st.sampled_from(_channel_nodes(every)), label="node")
    channels = every[name].shape[1]
    subsets = st.lists(st.integers(0, channels - 1), min_size=1, max_size=channels, unique=True)
    conditions = [{name: c} for c in data.draw(st.lists(subsets, min_size=1, max_size=3))]
    together = concepts.conditional(plan, case.x, None, conditions)
    for condition, heatmap in zip(conditions, together, strict=True):
        alone = concepts.conditional(plan, case.x, None, [condition])[0]
        assert_close64(heatmap, alone)
