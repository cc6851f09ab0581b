"""The folded walk (`lrpfn.engine.folding`, `engine.folded_walk`) explains exactly what the
plain walk explains, to float64 rounding, and keeps one factor per folded layer.

`lrpfn.lrp` takes the folded walk where the plan folds layers; the reference is the plain
walk on the same plan (`lrpfn.relevances(...)["x"]`, which never folds, itself checked
against zennit and matrix-form references in tests/test_zennit_oracle.py and
tests/test_rules_reference.py), or the plan with an empty `Folding`.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import lrpfn
from lrpfn import composites, rules
from lrpfn.engine.folded_walk import takes_folded_walk
from lrpfn.engine.folding import Folding


class Block(nn.Module):
    """A residual bottleneck: conv-relu-conv(-relu)-conv, plus the input, then a ReLU."""

    def __init__(self, channels: int, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels // 2, 1)
        self.conv2 = nn.Conv2d(channels // 2, channels // 2, 3, padding=1, groups=2)
        self.conv3 = nn.Conv2d(channels // 2, channels, 1)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv2(torch.relu(self.conv1(x))))
        return torch.relu(self.conv3(h) + x)


class Net(nn.Module):
    """A stem, max-pooling, residual blocks, a flatten, a dense head with dropout."""

    def __init__(self, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(3, 2, 1)  # overlapping windows
        self.blocks = nn.Sequential(Block(8, act), Block(8, act))
        self.down = nn.Conv2d(8, 8, 3, stride=2)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(8 * 2 * 2, 16), nn.ReLU(), nn.Dropout(), nn.Linear(16, 5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(torch.relu(self.stem(x)))
        return self.head(torch.relu(self.down(self.blocks(h))))


class Dense(nn.Module):
    """DenseNet's pattern: a concatenation, then BatchNorm (a channel-affine node: it cannot
    fold into a convolution), ReLU, convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(7)
        self.conv1 = nn.Conv2d(7, 4, 3, padding=1)
        self.head = nn.Linear(4 * 12 * 12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x, torch.relu(self.conv0(x))], 1)
        return self.head(torch.relu(self.conv1(torch.relu(self.norm(h)))).flatten(1))


def _model(act: type[nn.Module] = nn.ReLU) -> nn.Module:
    torch.manual_seed(0)
    model = Net(act).eval().double()
    with torch.no_grad():  # biases of both signs, so that ReLUs cut
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


RULES = {
    "epsilon": lambda: rules.Epsilon(1e-6),
    "epsilon 0.1": lambda: rules.Epsilon(0.1),
    "gamma box": lambda: composites.epsilon_gamma_box(low=-3.0, high=3.0),
    "gamma 0.25": lambda: rules.Gamma(0.25),
    "alpha2beta1": composites.epsilon_alpha2_beta1,
    "z+": lambda: {nn.Conv2d: rules.ZPlus(), nn.Linear: rules.Epsilon()},
}


def _plain(plan: lrpfn.Plan) -> lrpfn.Plan:
    return dataclasses.replace(plan, folding=Folding())


@pytest.mark.parametrize("act", [nn.ReLU, nn.ReLU6, nn.GELU], ids=["relu", "relu6", "gelu"])
@pytest.mark.parametrize("name", list(RULES))
def test_folded_walk_equals_plain_walk(name, act):
    model = _model(act)
    x = torch.randn(3, 3, 12, 12, dtype=torch.float64)
    plan = lrpfn.prepare(model, RULES[name]())
    folded = lrpfn.lrp(plan, x, target=[0, 2, 4])
    plain = lrpfn.lrp(_plain(plan), x, target=[0, 2, 4])
    assert plan.folding.fast, "the plan folds some layer"
    torch.testing.assert_close(folded, plain, rtol=1e-12, atol=1e-12 * float(plain.abs().max()))


def test_epsilon_folds_every_layer_and_keeps_one_value_per_layer():
    """All-epsilon: every convolution, dense layer and sum is fast; every ReLU output,
    the max-pool and the flatten carry coefficients; the forward keeps no activation but
    the input and the logits (the output layer's own denominator, computed in the walk):
    each folded layer's factor is held apart, in `FoldedValues.terms`."""
    plan = lrpfn.prepare(_model(), rules.Epsilon())
    nodes = {node.name: node for node in plan.module.graph.nodes}
    linear = [n for n, h in plan.handlers.items() if h.kind in ("linear", "sum")]
    assert set(linear) == set(plan.folding.fast)
    assert plan.folding.routes == {nodes["pool"]: "max_pool2d", nodes["head_0"]: "reshape"}
    assert all(n in plan.folding.factored for n, h in plan.handlers.items() if h.kind == "pass")
    # the output layer is fast (its own z gives the denominator) but not folded
    assert nodes["head_4"] not in plan.folding.factored
    assert plan.folding.lazy == {nodes["head_4"]}
    assert plan.folding.keep == {nodes["x"], nodes["head_4"]}
    assert plan.folding.relations[nodes["stem"]] == "relu"
    assert plan.folding.relations[nodes["blocks_0_conv3"]] == "self"
    assert plan.folding.relations[nodes["head_1"]] == "zero_below"  # ReLU, then dropout


@pytest.mark.parametrize("name", ["epsilon", "gamma 0.25", "alpha2beta1"])
def test_channel_affine_nodes_fold(name):
    torch.manual_seed(0)
    model = Dense().double()
    with torch.no_grad():
        model.norm.running_mean.uniform_(-0.5, 0.5)
        model.norm.running_var.uniform_(0.5, 2.0)
        model.norm.weight.uniform_(-1.0, 1.0)
    model.eval()
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    plan = lrpfn.prepare(model, RULES[name]())
    norm = next(n for n in plan.module.graph.nodes if n.name == "norm")
    # the sign-split rules fold on inputs >= 0 only; the concatenation holds the raw input
    assert (norm in plan.folding.fast) == (name == "epsilon")
    folded = lrpfn.lrp(plan, x, target=[1, 3])
    plain = lrpfn.lrp(_plain(plan), x, target=[1, 3])
    torch.testing.assert_close(folded, plain, rtol=1e-12, atol=1e-12 * float(plain.abs().max()))


def test_several_targets_walk_each_in_turn():
    model = _model()
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    plan = lrpfn.prepare(model, rules.Epsilon())
    targets = torch.tensor([[0, 1, 2], [4, 3, 2]])
    folded = lrpfn.lrp(plan, x, target=targets)
    plain = lrpfn.lrp(_plain(plan), x, target=targets)
    assert folded.shape == (3, 2, 3, 12, 12)
    torch.testing.assert_close(folded, plain, rtol=1e-12, atol=1e-12 * float(plain.abs().max()))


def test_what_does_not_fold():
    """Epsilon(0) (LRP-0 guards exact zeros), signal rules, 16-bit inputs, `relevances`."""
    model = _model()
    assert not lrpfn.prepare(model, rules.Epsilon(0.0)).folding.fast
    assert not lrpfn.prepare(model, rules.Gradient()).folding.fast
    plan = lrpfn.prepare(model, rules.Epsilon())
    assert takes_folded_walk(plan, torch.zeros(1, dtype=torch.float64), keep_all=False)
    assert not takes_folded_walk(plan, torch.zeros(1, dtype=torch.float16), keep_all=False)
    assert not takes_folded_walk(plan, torch.zeros(1, dtype=torch.float64), keep_all=True)


def test_float32_folded_walk_is_the_float64_walk_to_rounding():
    model = _model()
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    reference = lrpfn.lrp(model, x, rules.Epsilon(), target=1)
    folded = lrpfn.lrp(lrpfn.prepare(model.float(), rules.Epsilon()), x.float(), target=1)
    assert float((folded.double() - reference).abs().max() / reference.abs().max()) < 1e-4
