"""timm's Sequencer (bidirectional LSTMs over the rows and columns of a feature map),
random weights, a small input: explained, the unrolled graph computing what the model
computes, and LRP-0 conserving relevance on its bias-free copy (float32 rounding only)."""

from __future__ import annotations

import copy

import pytest
import torch

import lrpfn
from lrpfn import composites

timm = pytest.importorskip("timm")


def _sequencer() -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("sequencer2d_s", pretrained=False, num_classes=10).eval()
    with torch.no_grad():  # timm zero-initialises the head: every logit would be 0
        model.head.fc.weight.normal_(0.0, 0.02)
    return model


def _bias_free(model: torch.nn.Module) -> torch.nn.Module:
    model = copy.deepcopy(model)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.rsplit(".", 1)[-1].startswith("bias"):  # bias, bias_ih_l0, bias_hh_l0, ...
                parameter.zero_()
    return model


def test_sequencer2d_s_is_explained():
    model = _sequencer()
    x = torch.randn(2, 3, 32, 32)
    plan = lrpfn.prepare(model, composites.lstm_lrp(), example_input=x)
    with torch.no_grad():
        torch.testing.assert_close(plan.module(x), model(x), rtol=1e-4, atol=1e-5)
    relevance = lrpfn.lrp(plan, x, target=3)
    assert relevance.shape == x.shape and bool(torch.isfinite(relevance).all())
    bias_free = _bias_free(model)
    conserved = lrpfn.lrp(bias_free, x, composites.cp_lrp(epsilon=0.0), target=3)
    with torch.no_grad():
        logits = bias_free(x)[:, 3]
    torch.testing.assert_close(conserved.sum(dim=(1, 2, 3)), logits, rtol=1e-4, atol=1e-7)
