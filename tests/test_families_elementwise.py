"""Elementwise powers pass relevance, as every elementwise activation does (StarReLU)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lrpfn
from lrpfn import rules

D = torch.float64


class StarReLU(nn.Module):
    """MetaFormer's activation, s * relu(x) ** 2 (its bias zero here)."""

    def __init__(self, form: str):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.8, dtype=D))
        self.form = form

    def forward(self, x):
        y = torch.relu(x)
        if self.form == "operator":
            y = y**2
        elif self.form == "method":
            y = y.pow(2)
        elif self.form == "square":
            y = torch.square(y)
        else:  # shape-dependent Python: captured by torch.export (aten.pow)
            y = y**2 if x.shape[-1] > 1 else y
        return self.scale * y


@pytest.mark.parametrize("form", ["operator", "method", "square", "export"])
def test_power_passes_relevance_like_an_elementwise_activation(form):
    x, relevance = torch.randn(2, 5, dtype=D), torch.randn(2, 5, dtype=D)
    model = StarReLU(form).eval()
    plan = lrpfn.prepare(model, rules.Epsilon(0.0), example_input=x)
    assert plan.front_end == ("export" if form == "export" else "fx")
    result = lrpfn.lrp(plan, x, output_relevance=relevance)
    # the scale is a constant factor (relevance passes), the power and the ReLU pass it
    torch.testing.assert_close(result, relevance, rtol=0, atol=0)
