"""Several targets per sample: `target` of shape (batch, k) explains k classes at once.

The k explanations share one forward pass. Each must equal the explanation of that class
alone (a separate call with a target of shape (batch,)), in float64 to 1e-12, for the
input relevance and for every node's relevance; and the two ways the library runs the k
walks (in turn, vmapped) must agree with each other.
"""

import pytest
import torch
from torch import nn

import lrpfn
from lrpfn import composites, rules
from lrpfn.engine import forward, several_targets
from lrpfn.engine.several_targets import _walks_in_turn, _walks_vmapped

# The conservation warning (lrpfn.engine.conservation) is not what this module tests: its random
# toy nets have biases, which can add relevance as well as absorb it, and AlphaBeta(2, 1)
# gives alpha = 2 x R wherever a layer has no negative part, so sums past 2 x the logit
# are expected here; tests/test_rule_keys.py tests the warning itself.
pytestmark = pytest.mark.filterwarnings("ignore::lrpfn.errors.ConservationWarning")


class Residual(nn.Module):
    """conv - batch norm - relu - maxpool, a residual block with a concatenation, a
    dense head: the folded, pooled, summed and concatenated paths the walk takes."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.block = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.ReLU())
        self.side = nn.Conv2d(6, 2, 1)
        self.head = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        h = self.stem(x)
        h = self.block(h) + h
        h = torch.cat([h, self.side(h)], dim=1)
        return self.head(torch.flatten(h, 1))


def _model_and_input():
    torch.manual_seed(0)
    model = Residual().double().eval()
    with torch.no_grad():  # a batch norm with statistics, so folding changes the weights
        model.stem[1].running_mean.uniform_(-0.5, 0.5)
        model.stem[1].running_var.uniform_(0.5, 2.0)
    return model, torch.randn(3, 3, 8, 8, dtype=torch.float64)


MAPPINGS = {
    "epsilon": lambda: rules.Epsilon(1e-6),
    "epsilon_gamma_box": lambda: composites.epsilon_gamma_box(low=-3.0, high=3.0),
    "alpha2beta1": lambda: composites.epsilon_alpha2_beta1(),
}
TARGETS = torch.tensor([[4, 0, 2], [1, 1, 3], [0, 2, 4]])  # (batch 3, k 3), a repeat too


# the CPU runs the k walks in turn above this many bytes of k x the largest activation
WALKS = {"vmapped": 2**62, "in_turn": 0}


@pytest.mark.parametrize("walks", WALKS.values(), ids=WALKS)
@pytest.mark.parametrize("mapping", MAPPINGS.values(), ids=MAPPINGS)
def test_k_targets_equal_k_single_target_calls(mapping, walks, monkeypatch):
    monkeypatch.setattr(several_targets, "MMAP_THRESHOLD_BYTES", walks)
    model, x = _model_and_input()
    plan = lrpfn.prepare(model, mapping())
    together = lrpfn.lrp(plan, x, target=TARGETS)
    assert together.shape == (3, *x.shape)
    for k in range(TARGETS.shape[1]):
        alone = lrpfn.lrp(plan, x, target=TARGETS[:, k])
        torch.testing.assert_close(together[k], alone, rtol=1e-12, atol=1e-15)


def test_k_targets_relevances_at_every_node_equal_single_target_calls():
    model, x = _model_and_input()
    plan = lrpfn.prepare(model, MAPPINGS["epsilon_gamma_box"]())
    together = lrpfn.relevances(plan, x, target=TARGETS)
    for k in range(TARGETS.shape[1]):
        alone = lrpfn.relevances(plan, x, target=TARGETS[:, k])
        assert list(together) == list(alone)
        for name, value in alone.items():
            torch.testing.assert_close(together[name][k], value, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("keep_all", [False, True])
def test_walks_in_turn_and_vmapped_agree(keep_all):
    model, x = _model_and_input()
    plan = lrpfn.prepare(model, MAPPINGS["epsilon"]())
    with torch.no_grad():
        env, output_node = forward(plan, x)
        output = env[output_node]
        starts = nn.functional.one_hot(TARGETS.T, output.shape[1]).double() * output
        in_turn, recorded_in_turn = _walks_in_turn(plan, env, output_node, starts, keep_all)
        vmapped, recorded_vmapped = _walks_vmapped(plan, env, output_node, starts, keep_all)
    torch.testing.assert_close(in_turn, vmapped, rtol=1e-12, atol=1e-15)
    assert list(recorded_in_turn) == list(recorded_vmapped)
    for name, value in recorded_vmapped.items():
        torch.testing.assert_close(recorded_in_turn[name], value, rtol=1e-12, atol=1e-15)
    assert in_turn.shape == (TARGETS.shape[1], *x.shape)
