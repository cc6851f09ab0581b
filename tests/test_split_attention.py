"""Softmax over branches (SKNet, ResNeSt "split attention") is a gate.

`out = sum_p(x_p * softmax(a)_p)` with the attention `a` computed from the branches: the
product `x_p * softmax(a)_p` is a gate for the product rule (`rules.SignalTakesAll`, Arras
et al. 2017): the branches take all relevance and the softmax none, so the sum over
branches splits the output relevance by each branch's share of the output, and the
relevance that reaches the softmax is zero.
"""

from __future__ import annotations

import torch
from torch import nn

import lrpfn
from lrpfn import rules

D = torch.float64


class SplitAttention(nn.Module):
    def __init__(self, channels: int = 3, paths: int = 2):
        super().__init__()
        self.paths = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False) for _ in range(paths)
        )
        self.select = nn.Conv2d(channels, channels * paths, 1, bias=False)
        self.shape = (paths, channels)

    def forward(self, x):
        branches = torch.stack([torch.relu(path(x)) for path in self.paths], dim=1)  # (B,P,C,H,W)
        pooled = branches.sum(1).mean((2, 3), keepdim=True)
        attention = self.select(pooled).reshape(x.shape[0], *self.shape, 1, 1)
        attention = torch.softmax(attention, dim=1)  # over the branches
        return (branches * attention).sum(1)


def test_split_attention_gives_the_branches_all_relevance_and_the_softmax_none():
    torch.manual_seed(0)
    model = SplitAttention().double().eval()
    x = torch.randn(2, 3, 4, 4, dtype=D)
    relevance = torch.randn(2, 3, 4, 4, dtype=D)
    recorded = lrpfn.relevances(model, x, rules.Epsilon(0.0), output_relevance=relevance)
    # reference: the sum over branches shares R by each branch's contribution, the product
    # passes it all to the branch (the softmax is a gate)
    with torch.no_grad():
        branches = torch.stack([torch.relu(path(x)) for path in model.paths], dim=1)
        pooled = branches.sum(1).mean((2, 3), keepdim=True)
        attention = torch.softmax(model.select(pooled).reshape(2, 2, 3, 1, 1), dim=1)
        contributions = branches * attention
    expected = contributions / contributions.sum(1, keepdim=True) * relevance[:, None]
    expected = torch.where(contributions.sum(1, keepdim=True) == 0, 0.0, expected)
    torch.testing.assert_close(recorded["stack"], expected, rtol=1e-10, atol=1e-12)
    softmax_relevance = recorded.get("softmax")
    assert softmax_relevance is None or not bool(softmax_relevance.any())
