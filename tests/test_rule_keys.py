"""Rule keys as TorchLRP applied them, and the warning when relevance grows (issue 22).

A rule key given as the whole mapping applies its rule to dense and convolution layers only;
sums, pooling and norms get Epsilon. A conservative rule set whose input relevance sums to
more than twice the explained logit warns with `ConservationWarning`.
"""

import re
import warnings

import pytest
import torch
import torchvision
from torch import nn

import lrpfn
from lrpfn import composites, rules
from lrpfn.errors import ConservationWarning, LRPError


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logit = model(x).max(1).values.double()
    return model, x, logit


@pytest.mark.parametrize("key", ["alpha2beta1", "alpha1beta0", "epsilon", "gamma", "gamma+epsilon"])
def test_a_key_applies_its_rule_to_parametrised_layers_and_epsilon_elsewhere(resnet, key):
    model, _, _ = resnet
    plan = lrpfn.prepare(model, key)
    expected = rules.rule_from_key(key)
    families = {
        info.name: info.family for info in composites.node_infos(plan.module, plan.handlers)
    }
    for name, rule in plan.rules.items():
        if families[name] in ("dense", "convolution"):
            assert rule == expected, name
        else:  # the 8 residual sums and the two poolings of resnet18
            assert rule == rules.Epsilon(1e-6), name
    assert sorted(set(families.values())) == ["convolution", "dense", "pooling", "sum"]


@pytest.mark.parametrize("key", ["alpha2beta1", "alpha1beta0", "gamma"])
def test_a_sign_split_key_conserves_relevance_on_a_residual_network(resnet, key):
    model, x, logit = resnet
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConservationWarning)
        relevance = lrpfn.lrp(model, x, key)
    ratio = relevance.double().flatten(1).sum(1) / logit
    assert ((ratio > 0.5) & (ratio <= 1.0 + 1e-4)).all(), ratio  # absorbed, never created


def test_gradient_key_stays_the_gradient_everywhere(resnet):
    model, _, _ = resnet
    plan = lrpfn.prepare(model, "gradient")
    assert all(rule == rules.Gradient() for rule in plan.rules.values())


def test_relevance_that_grows_past_twice_the_logit_warns_naming_rules_and_steps(resnet):
    model, x, logit = resnet
    with pytest.warns(ConservationWarning) as caught:
        relevance = lrpfn.lrp(model, x, rules.AlphaBeta(2.0, 1.0))  # also on the sums
    ratio = relevance.double().flatten(1).sum(1) / logit
    assert ratio.max() > 2  # the premise: it did grow
    message = str(caught[0].message)
    assert f"sums to {float(ratio.max()):.3g} x the explained logit" in message
    assert "AlphaBeta(alpha=2.0, beta=1.0" in message and "on 30 node(s)" in message
    # each named step `user (rule) -> node`: the node's relevance is past 2x, the user's not
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConservationWarning)
        recorded = lrpfn.relevances(model, x, rules.AlphaBeta(2.0, 1.0))
    steps = re.findall(r"(\w+) \(AlphaBeta\([^)]*\)\) -> (\w+)", message)
    assert steps

    def past_twice(name):
        return bool((recorded[name].double().flatten(1).sum(1).abs() > 2 * logit.abs()).any())

    for user, node in steps:
        assert past_twice(node) and not past_twice(user), (user, node)
    assert issubclass(ConservationWarning, LRPError) and issubclass(
        ConservationWarning, UserWarning
    )


def test_relevances_warns_too_and_an_absorbing_rule_set_does_not(resnet):
    model, x, _ = resnet
    with pytest.warns(ConservationWarning):
        lrpfn.relevances(model, x, rules.AlphaBeta(2.0, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConservationWarning)
        lrpfn.lrp(model, x, composites.epsilon_plus())
        lrpfn.lrp(model, x, rules.Epsilon(10.0))  # absorbs most: a sum below, not reported


def test_non_conservative_rule_sets_are_not_checked():
    # gradient x input on x -> 3x: relevance 3x the logit x, by definition of the gradient
    model = nn.Sequential(nn.Linear(1, 1, bias=False)).eval()
    with torch.no_grad():
        model[0].weight.fill_(3.0)
    x = torch.ones(1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConservationWarning)
        relevance = lrpfn.lrp(model, x, rules.Gradient(), output_relevance=torch.ones(1, 1))
    assert relevance.item() == 3.0
