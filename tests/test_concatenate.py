"""A concatenation routes relevance by splitting it, exactly as its vector-Jacobian product.

`ops.handler._concatenate` splits the relevance back into the parts instead of re-running
the concatenation under `torch.func.vjp` (the generic route). Both must agree bit for bit,
for parts that are data, constants or the same node twice, and for negative axes.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import lrpfn
from lrpfn import composites, rules
from lrpfn.ops.handler import CONCATENATE, ROUTE


class Concatenating(nn.Module):
    """Dense-net style: every layer reads the concatenation of all earlier features."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.layer1 = nn.Conv2d(4, 2, 3, padding=1)
        self.layer2 = nn.Conv2d(6, 2, 3, padding=1)
        self.head = nn.Linear(8 + 3, 3)
        self.register_buffer("constant", torch.ones(1, 3))

    def forward(self, x):
        a = torch.relu(self.stem(x))
        b = torch.relu(self.layer1(a))
        c = torch.relu(self.layer2(torch.cat([a, b], 1)))
        features = torch.cat((a, b, c), dim=-3).mean((2, 3))
        both = torch.cat([features, self.constant.expand(3, 3)], dim=1)  # batch 3
        first = both[:, :1]
        return self.head(both + torch.cat([first, first], 1).sum(1, keepdim=True))  # twice


@pytest.mark.parametrize(
    "mapping",
    [rules.Epsilon(1e-6), composites.epsilon_gamma_box(low=-3.0, high=3.0)],
    ids=["epsilon", "epsilon_gamma_box"],
)
def test_split_concatenation_equals_the_generic_route_bit_for_bit(mapping):
    torch.manual_seed(0)
    model = Concatenating().eval().double()
    x = torch.randn(3, 3, 6, 6, dtype=torch.float64)
    plan = lrpfn.prepare(model, mapping)
    concatenations = [node for node, h in plan.handlers.items() if h is CONCATENATE]
    assert len(concatenations) == 4
    generic = dataclasses.replace(
        plan,
        handlers={node: ROUTE if h is CONCATENATE else h for node, h in plan.handlers.items()},
    )
    for target in (torch.tensor([0, 2, 1]), torch.tensor([[0, 1], [2, 0], [1, 2]])):
        expected = lrpfn.lrp(generic, x, target=target)
        assert torch.equal(lrpfn.lrp(plan, x, target=target), expected)
    assert lrpfn.relevances(plan, x).keys() == lrpfn.relevances(generic, x).keys()
