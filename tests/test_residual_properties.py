"""Properties of LRP over generated residual networks (Hypothesis; see `strategies.py`).

The networks have a stem convolution, then blocks `x + f(x)` (also `torch.add`),
`cat([conv_a(x), conv_b(x)])` and `split`/`chunk` + `cat`, BatchNorm after convolutions
(folded into them) and after additions (kept as a per-channel affine node), with random
running statistics, then average pooling and a dense head.
"""

from __future__ import annotations

import operator

import pytest
import torch
from hypothesis import given, settings, strategies as st
from strategies import (
    ALL_ACTIVATIONS,
    RULES,
    ZERO_PRESERVING,
    assert_close64,
    assert_conserved,
    cases,
    explained_output,
    inputs,
    residual_networks,
)
from torch import fx, nn

import lrpfn
from lrpfn import rules

# The conservation warning (lrpfn.engine.conservation) is not what this module tests: its random
# toy nets have biases, which can add relevance as well as absorb it, and AlphaBeta(2, 1)
# gives alpha = 2 x R wherever a layer has no negative part, so sums past 2 x the logit
# are expected here; tests/test_rule_keys.py tests the warning itself.
pytestmark = pytest.mark.filterwarnings("ignore::lrpfn.errors.ConservationWarning")

TARGETS = st.one_of(st.none(), st.integers(0, 1))
RULE_NAMES = sorted(RULES)


def cut_nodes(graph: fx.Graph) -> list[fx.Node]:
    """The nodes every path from the input to the output passes through: in graph
    (topological) order, node i is such a cut when no edge jumps over it (from a node
    before i to a node after i). All relevance crosses a cut node."""
    nodes = [node for node in graph.nodes if node.op not in ("get_attr", "output")]
    position = {node: index for index, node in enumerate(nodes)}
    jumped = [False] * len(nodes)
    for node in nodes:
        for item in node.all_input_nodes:
            if item in position:
                for index in range(position[item] + 1, position[node]):
                    jumped[index] = True
    return [node for node, skip in zip(nodes, jumped, strict=True) if not skip]


def check_conservation_at_cuts(model, x, rule, target) -> int:
    """The input relevance and the relevance at every cut node sum to the explained
    logit; returns the number of cut nodes checked."""
    plan = lrpfn.prepare(model, rule)
    total = explained_output(model, x, target)
    every = lrpfn.relevances(plan, x, target=target)
    checked = 0
    for node in cut_nodes(plan.module.graph):
        relevance = every.get(node.name)
        if isinstance(relevance, torch.Tensor):
            assert_conserved(relevance, total, what=f"at node {node.name!r}")
            checked += 1
    return checked


@given(cases(residual_networks(batch_norm=True), inputs()))
def test_batch_norm_folding_preserves_the_output(case):
    """The canonical graph (BatchNorm folded into the convolution before it, or turned
    into a per-channel affine node after an addition) computes the model's output:
    $W' = W \\gamma / \\sqrt{\\sigma^2 + \\epsilon}$, $b' = (b - \\mu)\\gamma /
    \\sqrt{\\sigma^2 + \\epsilon} + \\beta$ is exact algebra, so only float64 rounding
    differs (1e-12 relative). No BatchNorm module is left in the graph; one affine node
    remains per BatchNorm after an addition."""
    plan = lrpfn.prepare(case.model, rules.Epsilon())
    with torch.no_grad():
        expected = case.model(case.x)
        actual = plan.module(case.x)
    assert_close64(actual, expected, rtol=1e-12)
    modules = [
        plan.module.get_submodule(node.target)
        for node in plan.module.graph.nodes
        if node.op == "call_module"
    ]
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules)
    unfoldable = sum(block.norm_after_add for block in case.network.blocks)
    affine = [
        node
        for node in plan.module.graph.nodes
        if getattr(node.target, "__name__", "") == "channel_affine"
    ]
    assert len(affine) == unfoldable


@given(
    cases(
        residual_networks(bias=False, batch_norm_bias=False, activations=ZERO_PRESERVING),
        inputs(kinds=("mixed", "nonnegative", "zeros")),
    ),
    TARGETS,
)
def test_lrp0_conserves_in_bias_free_residual_networks(case, target):
    """LRP-0 (on convolutions, additions, pooling and the head) conserves relevance in
    residual networks without biases whose activations have act(0) = 0: at every cut
    node (stem, block outputs, pooling, head) and at the input.

    Derivation: as for sequential networks (`test_properties.py`), an addition
    $z = x_1 + x_2$ is a linear node without bias, $R_{x_k} = x_k R / z$, which sums to
    $R$ when $z \\ne 0$, and a node receiving relevance has a non-zero value. BatchNorm
    here has zero running mean and no shift (`affine=False`), so folding adds no bias:
    $b' = (0 - 0)\\gamma/\\sqrt{\\sigma^2 + \\epsilon} = 0$. Concatenations and splits
    route relevance. Relevance arriving at a value from several users is added.
    """
    checked = check_conservation_at_cuts(case.model, case.x, rules.Epsilon(0.0), target)
    assert checked >= 5  # input, stem, activation, pooling, flatten, head at least


@settings(max_examples=25)
@given(cases(residual_networks(activations=ALL_ACTIVATIONS)), TARGETS)
def test_flat_conserves_in_any_residual_network(case, target):
    """Flat conserves relevance in any residual network, with biases and BatchNorm:
    it ignores biases and activations, and on an addition (weights one) it splits each
    unit's relevance equally between the two summands; on an unfolded BatchNorm
    (a per-channel scale) it passes relevance unchanged. Stabilizer 1e-12."""
    check_conservation_at_cuts(case.model, case.x, rules.Flat(1e-12), target)


@settings(max_examples=25)
@given(cases(residual_networks()), st.sampled_from(RULE_NAMES))
def test_concatenation_splits_relevance_exactly(case, name):
    """The relevance of each input of a `torch.cat` is exactly (bit for bit) its slice
    of the concatenation's relevance, and the relevance of the input of a `split` or
    `chunk` is exactly the concatenation of its parts' relevances: these ops only move
    values, so they route relevance."""
    plan = lrpfn.prepare(case.model, RULES[name])
    every = lrpfn.relevances(plan, case.x)
    checked = 0
    for node in plan.module.graph.nodes:
        if node.target is torch.cat and node.name in every:
            parts, offset = node.args[0], 0
            for part in parts:
                size = _channels(plan, part, case.x)
                expected = every[node.name].narrow(1, offset, size)
                assert len(part.users) == 1  # the cat is its only user
                assert torch.equal(every[part.name], expected), (node.name, part.name)
                offset += size
            assert offset == every[node.name].shape[1]
            checked += 1
        elif _is_split(node) and node.name in every:
            source = node.args[0]
            getters = sorted(node.users, key=lambda user: user.args[1])
            assert [user.target for user in getters] == [operator.getitem] * len(getters)
            assert len(source.users) == 1
            joined = torch.cat([every[user.name] for user in getters], dim=1)
            assert torch.equal(every[source.name], joined)
            checked += 1
    concats = sum(block.kind in ("concat", "split") for block in case.network.blocks)
    splits = sum(block.kind == "split" for block in case.network.blocks)
    assert checked == concats + splits


def _is_split(node: fx.Node) -> bool:
    return node.target is torch.split or (node.op == "call_method" and node.target == "chunk")


def _channels(plan, node: fx.Node, x: torch.Tensor) -> int:
    """The channel count of `node`'s value, from a shape propagation of the graph."""
    from torch.fx.passes.shape_prop import ShapeProp

    if "tensor_meta" not in node.meta:
        ShapeProp(plan.module).propagate(x)
    return node.meta["tensor_meta"].shape[1]


@pytest.mark.parametrize("name", ["epsilon", "gamma", "alpha2beta1", "zbox", "gradient"])
@settings(max_examples=8)
@given(cases(residual_networks(batch_norm=True)))
def test_model_with_batch_norm_is_untouched(name, case):
    """After `prepare`, `lrp` and `relevances`, the parameters and buffers (BatchNorm
    running statistics and batch counters included) are bit-identical, the same
    objects, and every module keeps its mode and BatchNorm its eps."""
    model = case.model
    before = {key: value.clone() for key, value in model.state_dict(keep_vars=True).items()}
    objects = {key: value for key, value in model.state_dict(keep_vars=True).items()}
    eps = {key: m.eps for key, m in model.named_modules() if hasattr(m, "eps")}
    lrpfn.lrp(model, case.x, RULES[name])
    lrpfn.relevances(model, case.x, RULES[name])
    lrpfn.prepare(model, RULES[name])
    after = model.state_dict(keep_vars=True)
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert after[key] is objects[key], key
        assert torch.equal(after[key], value), key
    assert {key: m.eps for key, m in model.named_modules() if hasattr(m, "eps")} == eps
    assert not any(module.training for module in model.modules())
