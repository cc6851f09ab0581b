"""Fuzzing: every rule x generated architectures x adversarial inputs (Hypothesis).

The cases (`strategies.adversarial_cases`) are sequential and residual networks with
dead ReLUs (biases of -1e3), all-zero weights, zeroed output units or sparse weights in
some layers, and inputs that are all zero, of mixed sign, non-negative or in a box, at
unit, tiny (1e-30), large (1e30) or mixed (1e-30 to 1e30 per entry) magnitudes, in
float64 and float32 (1e30 and 1e-30 are within float32's range).

The property (`check_fuzz_case`, also run by `benchmarks/fuzz_campaign.py` for 10,000+
cases): whenever the model's own output is finite, the relevance at every graph node is
finite (no NaN, no inf) for every rule, and where a rule must conserve relevance
(see `conservation_applies`) it does.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from strategies import (
    COMPOSITES,
    RULES,
    ZERO_PRESERVING,
    Case,
    adversarial_cases,
    assert_conserved,
    explained_output,
)
from torch import nn

import lrpfn
from lrpfn import rules

# The conservation warning (lrpfn.engine.conservation) is not what this module tests: its random
# toy nets have biases, which can add relevance as well as absorb it, and AlphaBeta(2, 1)
# gives alpha = 2 x R wherever a layer has no negative part, so sums past 2 x the logit
# are expected here; tests/test_rule_keys.py tests the warning itself.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Using padding='same'"),
    pytest.mark.filterwarnings("ignore::lrpfn.errors.ConservationWarning"),
]

MAPPINGS = {**RULES, **COMPOSITES}


def conservation_applies(case: Case, name: str) -> bool:
    """Where the fuzz property also asserts conservation (float64 only; 1e-9 relative):

    - "lrp0" (LRP-0 everywhere) in networks without any bias (dead-ReLU edits add
      biases, BatchNorm with a shift does too) whose activations have act(0) = 0: a node
      receiving relevance has a non-zero value (see `test_properties.py`); zero weights,
      zero inputs and extreme magnitudes keep this true;
    - "flat_unstabilized" in every network: Flat ignores weights, biases and
      activations, and its denominators count real inputs (> 0);
    - "wsquare_unstabilized" unless an edit zeroed weights (a window of zero weights
      has denominator 0 and drops its relevance, as the rule defines).
    """
    if case.dtype != torch.float64:
        return False
    if name == "lrp0":
        network = case.network
        return not network.has_bias and set(network.activations) <= set(ZERO_PRESERVING)
    if name == "flat_unstabilized":
        return True
    if name == "wsquare_unstabilized":
        return not any(edit.kind != "dead" for edit in case.network.edits)
    return False


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)


def check_fuzz_case(case: Case, name: str) -> bool:
    """The fuzz property for one case and rule (mapping) name; False when the case does
    not apply (the model's output is not finite), else True or an AssertionError."""
    with torch.no_grad():
        output = case.model(case.x)
    if not bool(torch.isfinite(output).all()):
        return False
    every = lrpfn.relevances(case.model, case.x, MAPPINGS[name])
    for node, value in every.items():
        for tensor in _tensors(value):
            finite = torch.isfinite(tensor)
            assert bool(finite.all()), (
                f"{name}: relevance at node {node!r} has {int((~finite).sum())} non-finite "
                f"values (e.g. {tensor[~finite][:3].tolist()}) for finite input and output"
            )
    if conservation_applies(case, name):
        input_relevance = next(iter(every.values()))
        total = explained_output(case.model, case.x)
        assert_conserved(input_relevance, total, what=f"under {name}")
    return True


@pytest.mark.parametrize("name", sorted(MAPPINGS))
@settings(max_examples=10)
@given(adversarial_cases())
def test_relevance_is_finite_and_conserved_on_adversarial_cases(name, case):
    """Every relevance is finite for finite inputs and outputs, for every rule, and
    conserved where the rule must conserve (`conservation_applies`)."""
    assume(check_fuzz_case(case, name))


# ---------------------------------------------------------------------------- found bugs
# Bugs the fuzzing found, as minimized cases whose expected values are the rule's formula
# evaluated by hand in float64.


@pytest.mark.parametrize(
    ("dtype", "p", "q"), [(torch.float32, 10.0, 1e-7), (torch.float64, 1e17, 1.0)]
)
def test_alpha_beta_keeps_a_small_negative_part_next_to_a_large_positive_one(dtype, p, q):
    """Found by the fuzz campaign (fixed in 85b7375: z- had been computed as z - z+, which
    cancels to 0 or takes the wrong sign where |z-| is below the rounding error of z).

    ReLU -> Linear(2, 1, no bias) with W = [[1, -1]] at a = (p, q), q << p:
    $z^+ = p$, $z^- = -q$, and the explained output is $R = z = p - q$ (as the model
    computes it). AlphaBeta(2, 1, eps) gives, by its definition,
    $R_{\\text{in}} = (\\alpha\\, p R / (p + \\epsilon),\\; -\\beta\\, q (-1) R / (-q - \\epsilon))
    = (2 p R / (p + \\epsilon),\\; -q R / (q + \\epsilon))$.
    In float32, (10, 1e-7) is an ordinary input: z = 10 - 1e-7 rounds to 10."""
    model = nn.Sequential(nn.ReLU(), nn.Linear(2, 1, bias=False)).to(dtype).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, -1.0]]))
    x = torch.tensor([[p, q]], dtype=dtype)
    eps = 1e-6
    with torch.no_grad():
        R = float(model(x)[0, 0])
    expected = torch.tensor([[2 * p * R / (p + eps), -q * R / (q + eps)]], dtype=torch.float64)
    actual = lrpfn.lrp(model, x, rules.AlphaBeta(2.0, 1.0, eps), target=0)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(actual.double(), expected, rtol=tolerance, atol=0.0)


@pytest.mark.parametrize(("p", "q", "eps"), [(1e20, 1e-20, 0.0), (1e33, 1e-10, 1e-6)])
def test_alpha_beta_stays_finite_when_relevance_dwarfs_a_sign_part(p, q, eps):
    """Found by the fuzz campaign (float32, inputs of mixed magnitudes 1e-30 to 1e30):
    dividing first, s = R / st(z), overflowed float32 (inf * 0 = NaN) although every term
    a_i W_ji / z_j is at most 1 in size; lrpfn now scales each sample's R by a power of two.

    Linear(2, 1, no bias) in float32 with W = [[1, -1]] at x = (p, q) (the input
    is not known to be non-negative, so both sign parts are computed directly):
    $z^+ = p$, $z^- = -q$, $R = z$ = p in float32, and AlphaBeta(2, 1, eps) gives
    $R_{\\text{in}} = (2 p R / (p + \\epsilon),\\; -q R / (q + \\epsilon))$, finite in
    float32 for both cases."""
    model = nn.Sequential(nn.Linear(2, 1, bias=False)).float().eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -1.0]]))
    x = torch.tensor([[p, q]], dtype=torch.float32)
    with torch.no_grad():
        R = float(model(x)[0, 0])
    expected = torch.tensor([[2 * p * R / (p + eps), -q * R / (q + eps)]], dtype=torch.float64)
    actual = lrpfn.lrp(model, x, rules.AlphaBeta(2.0, 1.0, eps), target=0)
    torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=0.0)
