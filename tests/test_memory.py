"""The forward keeps one activation per layer: elementwise activations are recomputed.

An elementwise activation $a = g(z)$ whose input $z$ is kept for its own layer's rule is
dropped by the forward pass and recomputed by the walk (`lrpfn.engine.memory`). The walk must
give exactly the result of a walk that kept every activation.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision
from torch import nn

import lrpfn
from lrpfn import composites, rules
from lrpfn.engine import forward

# The conservation warning (lrpfn.engine.conservation) is not what this module tests: its
# random toy nets have biases, which can add relevance as well as absorb it, so sums past
# 2 x the logit occur; tests/test_rule_keys.py tests the warning itself.
pytestmark = pytest.mark.filterwarnings("ignore::lrpfn.errors.ConservationWarning")


class Residual(nn.Module):
    """conv - relu - conv, plus the block input, then relu, max-pool, dense."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        a = torch.relu(self.stem(x))
        b = self.conv2(nn.functional.gelu(self.conv1(a))) + a
        return self.head(nn.functional.max_pool2d(torch.relu(b), 2).flatten(1))


def _names(nodes) -> set[str]:
    return {node.name for node in nodes}


def test_activations_after_linear_and_sum_nodes_are_recomputed_not_kept():
    plan = lrpfn.prepare(Residual().eval(), rules.Epsilon())
    recomputed = _names(plan.recomputed)
    # relu (after stem), gelu (after conv1), relu_1 (after the sum): each input is a node
    # whose own rule reads its output; flatten is a route, not an elementwise activation
    assert recomputed == {"relu", "gelu", "relu_1"}
    env, _ = forward(plan, torch.randn(2, 3, 8, 8, dtype=torch.float64).float())
    kept = _names(env)
    assert not kept & recomputed
    assert {"stem", "conv1", "conv2", "add"} <= kept  # the pre-activations stay


@pytest.mark.parametrize(
    "mapping",
    [
        rules.Epsilon(1e-6),
        composites.epsilon_gamma_box(low=-3.0, high=3.0),
        composites.epsilon_alpha2_beta1(),
    ],
    ids=["epsilon", "epsilon_gamma_box", "epsilon_alpha2_beta1"],
)
@pytest.mark.parametrize("model_name", ["Residual", "resnet18"])
def test_recomputing_activations_gives_exactly_the_kept_activations_result(mapping, model_name):
    torch.manual_seed(0)
    if model_name == "resnet18":
        model = torchvision.models.resnet18(weights=None).eval().double()
        x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    else:
        model = Residual().eval().double()
        x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    plan = lrpfn.prepare(model, mapping)
    assert plan.recomputed
    keeping_all = dataclasses.replace(plan, recomputed=frozenset())
    target = torch.tensor([0, 2, 1][: x.shape[0]])
    assert torch.equal(lrpfn.lrp(plan, x, target=target), lrpfn.lrp(keeping_all, x, target=target))
    several = torch.tensor([[0, 1], [2, 0], [1, 2]][: x.shape[0]])
    assert torch.equal(
        lrpfn.lrp(plan, x, target=several), lrpfn.lrp(keeping_all, x, target=several)
    )


class LayerScale(nn.Module):
    """ConvNeXt-like: conv, a per-channel scale (a parameter), an identity, plus the input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.gamma = nn.Parameter(torch.rand(3, 1, 1) + 0.5)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(3 * 6 * 6, 4)

    def forward(self, x):
        return self.head((x + self.drop(self.gamma * self.conv(x))).flatten(1))


@pytest.mark.parametrize(
    "mapping",
    [rules.Epsilon(1e-6), composites.epsilon_gamma_box(low=-3.0, high=3.0)],
    ids=["epsilon", "epsilon_gamma_box"],
)
def test_a_constant_scale_is_recomputed_and_gives_exactly_the_kept_result(mapping):
    torch.manual_seed(0)
    model = LayerScale().eval().double()
    x = torch.randn(3, 3, 6, 6, dtype=torch.float64)
    plan = lrpfn.prepare(model, mapping)
    # the scale's own step reads only its input's shape; the sum reads the scaled value
    # (through the dropout), which the walk recomputes from the kept conv output
    assert {"mul", "drop"} <= _names(plan.recomputed)
    env, _ = forward(plan, x)
    assert not {"mul", "drop"} & _names(env) and "conv" in _names(env)
    keeping_all = dataclasses.replace(plan, recomputed=frozenset())
    for target in (torch.tensor([0, 3, 1]), torch.tensor([[0, 1], [3, 2], [1, 0]])):
        assert torch.equal(
            lrpfn.lrp(plan, x, target=target), lrpfn.lrp(keeping_all, x, target=target)
        )
