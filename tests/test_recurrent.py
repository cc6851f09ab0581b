"""Recurrent layers: unrolled per step, explained as Arras et al. 2017 / 2019 prescribe.

Every relevance is compared, in float64, with `recurrent_reference` (NumPy, written from
the papers' equations, independent of lrpfn); every unrolled graph must compute what the
module computes.
"""

from __future__ import annotations

import numpy as np
import pytest
import recurrent_reference as reference
import torch
from torch import nn

import lrpfn
from lrpfn import composites, rules
from lrpfn.errors import InvalidInputError, TrainingModeError

# The conservation warning (lrpfn.engine.conservation) is not what this module tests: its
# random toy nets have biases, which can add relevance as well as absorb it, so sums past
# 2 x the logit occur; tests/test_rule_keys.py tests the warning itself.
pytestmark = pytest.mark.filterwarnings("ignore::lrpfn.errors.ConservationWarning")

EPS = 1e-3  # large enough that a misplaced stabilizer would show


def arras_rules(share: float):
    """Epsilon(EPS) on linear maps and sums; the product rule by the gate's `share`."""
    return composites.lstm_lrp(epsilon=EPS, equal_split=share == 0.5)


class Sequence(nn.Module):
    """The output sequence of a recurrent module (relevance given at every step)."""

    def __init__(self, rnn: nn.Module, initial=None) -> None:
        super().__init__()
        self.rnn = rnn
        self.initial = initial

    def forward(self, x):
        if self.initial is None:
            return self.rnn(x)[0]
        return self.rnn(x, self.initial)[0]


def _explained(model, x, share, output=None):
    torch.manual_seed(1)
    relevance = torch.randn_like(model(x)) if output is None else output
    got = lrpfn.lrp(model, x, arras_rules(share), output_relevance=relevance)
    return relevance, got


CASES = [
    (nn.LSTM, {}),
    (nn.LSTM, {"num_layers": 2, "bidirectional": True}),
    (nn.LSTM, {"proj_size": 3}),
    (nn.LSTM, {"bias": False, "num_layers": 2}),
    (nn.GRU, {}),
    (nn.GRU, {"num_layers": 2, "bidirectional": True}),
    (nn.GRU, {"bias": False}),
    (nn.RNN, {"num_layers": 2, "bidirectional": True}),
    (nn.RNN, {"nonlinearity": "relu"}),
]


@pytest.mark.parametrize("share", [0.0, 0.5], ids=["signal_takes_all", "equal_split"])
@pytest.mark.parametrize(("kind", "options"), CASES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_modules_match_the_float64_reference_of_arras_equations(kind, options, share):
    torch.manual_seed(0)
    rnn = kind(4, 5, **options).double().eval()
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    relevance, got = _explained(Sequence(rnn), x, share)
    output, expected = reference.sequence_relevance(rnn, x.numpy(), relevance.numpy(), EPS, share)
    np.testing.assert_allclose(output, rnn(x)[0].detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU])
def test_given_initial_states_take_their_share_and_keep_it(kind):
    """h_0 (and c_0) that are constants absorb the relevance of the terms they feed."""
    torch.manual_seed(0)
    rnn = kind(4, 5, num_layers=2).double().eval()
    h0 = torch.randn(2, 3, 5, dtype=torch.float64)
    initial = (h0, torch.randn(2, 3, 5, dtype=torch.float64)) if kind is nn.LSTM else h0
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    relevance, got = _explained(Sequence(rnn, initial), x, 0.0)
    states = tuple(s.numpy() for s in initial) if kind is nn.LSTM else initial.numpy()
    _, expected = reference.sequence_relevance(
        rnn, x.numpy(), relevance.numpy(), EPS, 0.0, initial=states
    )
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())


class CellLoop(nn.Module):
    """A cell run over a fixed number of steps, from no state (zero) or from given states."""

    def __init__(self, cell: nn.Module, steps: int, initial=None) -> None:
        super().__init__()
        self.cell, self.steps, self.initial = cell, steps, initial

    def forward(self, x):  # x: (T, B, I)
        state, outputs = self.initial, []
        for t in range(self.steps):
            state = self.cell(x[t], state)
            outputs.append(state[0] if isinstance(self.cell, nn.LSTMCell) else state)
        return torch.stack(outputs)


@pytest.mark.parametrize("given", [False, True], ids=["zero_state", "given_state"])
@pytest.mark.parametrize(
    ("cell_kind", "kind"), [(nn.LSTMCell, nn.LSTM), (nn.GRUCell, nn.GRU), (nn.RNNCell, nn.RNN)]
)
def test_cells_match_the_reference_of_the_same_equations(cell_kind, kind, given):
    torch.manual_seed(0)
    cell = cell_kind(4, 5).double().eval()
    rnn = kind(4, 5).double().eval()  # the same weights, as a one-layer sequence module
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(rnn, f"{name}_l0").copy_(getattr(cell, name))
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    states = torch.randn(2, 3, 5, dtype=torch.float64)
    initial = None
    if given:  # constants (state passed whole from step to step, or as (h, c))
        initial = (states[0], states[1]) if kind is nn.LSTM else states[0]
    relevance, got = _explained(CellLoop(cell, 6, initial).eval(), x, 0.0)
    if given:
        initial = (
            (states[:1].numpy(), states[1:].numpy()) if kind is nn.LSTM else states[:1].numpy()
        )
    _, expected = reference.sequence_relevance(
        rnn, x.numpy(), relevance.numpy(), EPS, 0.0, initial=initial
    )
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())


class Classifier(nn.Module):
    def __init__(self, **options) -> None:
        super().__init__()
        self.rnn = nn.LSTM(4, 6, **options)
        width = options.get("proj_size") or 6
        self.head = nn.Linear(width * (2 if options.get("bidirectional") else 1), 3)

    def forward(self, x):
        output, (_, c_n) = self.rnn(x)
        return self.head(output[:, -1] if self.rnn.batch_first else output[-1]) + c_n.sum()


@pytest.mark.parametrize(
    "options",
    [
        {"batch_first": True},
        {"batch_first": False, "num_layers": 3, "bidirectional": True},
        {"batch_first": True, "proj_size": 2, "num_layers": 2},
    ],
)
def test_the_unrolled_graph_computes_what_the_module_computes(options):
    torch.manual_seed(0)
    model = Classifier(**options).eval()
    x = torch.randn(2, 7, 4) if options["batch_first"] else torch.randn(7, 2, 4)
    plan = lrpfn.prepare(model, composites.lstm_lrp(), example_input=x)
    torch.testing.assert_close(plan.module(x), model(x), rtol=1e-5, atol=1e-6)
    other_batch = torch.randn(5, 7, 4) if options["batch_first"] else torch.randn(7, 5, 4)
    torch.testing.assert_close(plan.module(other_batch), model(other_batch), rtol=1e-5, atol=1e-6)


def test_unbatched_sequences_are_unrolled_too():
    torch.manual_seed(0)
    rnn = nn.GRU(4, 5, bidirectional=True).double().eval()
    x = torch.randn(6, 4, dtype=torch.float64)
    plan = lrpfn.prepare(Sequence(rnn), composites.lstm_lrp(), example_input=x)
    torch.testing.assert_close(plan.module(x), rnn(x)[0], rtol=1e-12, atol=1e-12)


def test_a_plan_holds_for_the_length_it_was_prepared_with():
    model = Classifier(batch_first=True).eval()
    plan = lrpfn.prepare(model, composites.lstm_lrp(), example_input=torch.randn(2, 7, 4))
    with pytest.raises(InvalidInputError, match=r"unrolls a recurrent layer over 7 time steps"):
        lrpfn.lrp(plan, torch.randn(2, 9, 4))


def test_preparing_without_an_example_input_names_the_layer_and_the_fix():
    with pytest.raises(InvalidInputError, match=r"'rnn' \(LSTM\).*example_input="):
        lrpfn.prepare(Classifier().eval(), composites.lstm_lrp())


def test_training_mode_is_refused():
    with pytest.raises(TrainingModeError, match=r"'rnn' \(LSTM\).*model\.eval"):
        lrpfn.lrp(Classifier(batch_first=True), torch.randn(2, 7, 4), composites.lstm_lrp())


def test_gates_take_no_relevance_under_the_default_product_rule():
    """The sigmoid gates (i, f, o) and their linear map receive nothing; the candidate's
    linear map does."""
    torch.manual_seed(0)
    model = Classifier(batch_first=True).eval()
    found = lrpfn.relevances(model, torch.randn(2, 3, 4), composites.lstm_lrp())
    for t in range(3):
        assert f"rnn_l0_t{t}_z2" in found  # the candidate g
        for gate in ("i", "f", "o", "gates", "z"):
            assert f"rnn_l0_t{t}_{gate}" not in found
    found = lrpfn.relevances(model, torch.randn(2, 3, 4), composites.lstm_lrp(equal_split=True))
    assert all(f"rnn_l0_t2_{gate}" in found for gate in ("i", "o", "z"))


def test_lstm_lrp_is_a_preset_for_the_command_line():
    assert composites.PRESETS["lstm_lrp"] is composites.lstm_lrp
    table = composites.lstm_lrp(equal_split=True).entries
    assert (composites.PRODUCT, rules.EqualSplit()) in table
    assert (composites.DENSE, rules.Epsilon(1e-3)) in table


@pytest.mark.parametrize("cell_kind", [nn.LSTMCell, nn.GRUCell, nn.RNNCell])
def test_unbatched_cells_are_unrolled_too(cell_kind):
    torch.manual_seed(0)
    cell = cell_kind(3, 4).double().eval()
    model = CellLoop(cell, 2).eval()
    x = torch.randn(2, 3, dtype=torch.float64)  # (T, I): no batch axis
    plan = lrpfn.prepare(model, composites.lstm_lrp(), example_input=x)
    torch.testing.assert_close(plan.module(x), model(x), rtol=1e-12, atol=1e-12)
