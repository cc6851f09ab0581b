"""Properties of unrolled recurrent layers over random sizes, lengths, layers, directions.

- agreement: lrpfn equals the float64 NumPy reference of Arras's equations
  (`recurrent_reference`) for any LSTM (with or without projections), GRU or RNN shape;
- conservation on bias-free networks from zero states. What is conservative, and checked
  exactly here: a bias-free linear map and a sum pass on all relevance but the stabilizer's
  share, $\\sum_i R_i = R \\cdot z / (z + \\epsilon\\,\\mathrm{sign}(z))$; a gate x signal product
  under `SignalTakesAll` passes all of it to the signal; tanh passes it on. So with
  $\\epsilon = 10^{-12}$ the input relevance of a bias-free LSTM, GRU or tanh RNN with a
  bias-free linear head sums to the explained logit (to float64 rounding). Biases, given
  initial states and the constant 1 of a GRU's $1 - u$ (which `EqualSplit` reaches) absorb
  their shares: they are not conservative, and not checked here.
"""

from __future__ import annotations

import numpy as np
import pytest
import recurrent_reference as reference
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

import lrpfn
from lrpfn import composites

# The conservation warning (lrpfn.engine.conservation) is not what this module tests: its
# random toy nets have biases, which can add relevance as well as absorb it, so sums past
# 2 x the logit occur; tests/test_rule_keys.py tests the warning itself.
pytestmark = pytest.mark.filterwarnings("ignore::lrpfn.errors.ConservationWarning")

KINDS = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN": nn.RNN}


class Sequence(nn.Module):
    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x)[0]


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(sorted(KINDS)),
    inputs=st.integers(1, 5),
    hidden=st.integers(1, 6),
    steps=st.integers(1, 6),
    batch=st.integers(1, 3),
    layers=st.integers(1, 3),
    bidirectional=st.booleans(),
    bias=st.booleans(),
    share=st.sampled_from([0.0, 0.5]),
    projection=st.integers(0, 5),
    seed=st.integers(0, 2**16),
)
def test_any_shape_matches_the_reference(
    kind, inputs, hidden, steps, batch, layers, bidirectional, bias, share, projection, seed
):
    torch.manual_seed(seed)
    options = {"bias": bias, "bidirectional": bidirectional}
    if kind == "LSTM" and projection < hidden:  # proj_size: 0 (none) or below hidden_size
        options["proj_size"] = projection
    rnn = KINDS[kind](inputs, hidden, layers, **options).double().eval()
    x = torch.randn(steps, batch, inputs, dtype=torch.float64)
    width = options.get("proj_size") or hidden
    output = torch.randn(steps, batch, width * (2 if bidirectional else 1), dtype=torch.float64)
    mapping = composites.lstm_lrp(epsilon=1e-3, equal_split=share == 0.5)
    plan = lrpfn.prepare(Sequence(rnn), mapping, example_input=x)
    torch.testing.assert_close(plan.module(x), rnn(x)[0], rtol=1e-12, atol=1e-12)
    got = lrpfn.lrp(plan, x, output_relevance=output)
    _, expected = reference.sequence_relevance(rnn, x.numpy(), output.numpy(), 1e-3, share)
    scale = max(np.abs(expected).max(), 1.0)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-8, atol=1e-9 * scale)


class Classifier(nn.Module):
    """A bias-free recurrent layer and a bias-free linear head on the last step."""

    def __init__(self, kind, inputs, hidden, layers, bidirectional) -> None:
        super().__init__()
        self.rnn = kind(inputs, hidden, layers, bias=False, bidirectional=bidirectional)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), 3, bias=False)

    def forward(self, x):
        return self.head(self.rnn(x)[0][-1])


@settings(max_examples=20, deadline=None)
@given(
    kind=st.sampled_from(sorted(KINDS)),
    hidden=st.integers(1, 6),
    steps=st.integers(1, 6),
    layers=st.integers(1, 2),
    bidirectional=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_bias_free_networks_conserve_relevance(kind, hidden, steps, layers, bidirectional, seed):
    torch.manual_seed(seed)
    model = Classifier(KINDS[kind], 3, hidden, layers, bidirectional).double().eval()
    x = torch.randn(steps, 2, 3, dtype=torch.float64)
    logits = model(x)
    relevance = lrpfn.lrp(model, x, composites.lstm_lrp(epsilon=1e-12), target=0)
    totals = relevance.sum(dim=(0, 2))  # per sample
    torch.testing.assert_close(totals, logits[:, 0], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kind", [nn.LSTM, nn.RNN])
def test_equal_split_conserves_where_gates_feed_bias_free_maps(kind):
    """Half of each product goes to its gate, whose bias-free linear map passes it on."""
    torch.manual_seed(0)
    model = Classifier(kind, 3, 5, 2, True).double().eval()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    relevance = lrpfn.lrp(model, x, composites.lstm_lrp(1e-12, equal_split=True), target=1)
    torch.testing.assert_close(relevance.sum(dim=(0, 2)), model(x)[:, 1], rtol=1e-6, atol=1e-9)


def test_biases_absorb_relevance():
    """With biases the sum misses the bias shares (the test above is not vacuous)."""
    torch.manual_seed(0)
    model = Classifier(nn.LSTM, 3, 5, 1, False).double().eval()
    model.rnn = nn.LSTM(3, 5).double().eval()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    relevance = lrpfn.lrp(model, x, composites.lstm_lrp(1e-12), target=0)
    assert not torch.allclose(relevance.sum(dim=(0, 2)), model(x)[:, 0], rtol=1e-3)
