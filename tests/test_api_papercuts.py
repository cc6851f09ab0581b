"""Small things a new user tried first (issue 22): a rule class for a rule, a rule key as a
dict value, the plan form of `concepts.importance`, module names of a Sequential."""

import pytest
import torch
from torch import nn

import lrpfn
from lrpfn import composites, concepts, rules
from lrpfn.errors import InvalidRuleError


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.BatchNorm2d(4),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
    ).eval()  # fmt: skip


X = torch.randn(2, 3, 8, 8)


def test_a_rule_class_is_refused_naming_the_instance_to_pass():
    with pytest.raises(InvalidRuleError, match=r"the class Epsilon, not a rule.*Epsilon\(\)"):
        lrpfn.lrp(cnn(), X, rules.Epsilon)
    with pytest.raises(InvalidRuleError, match="the value for key DENSE is the class Gamma"):
        lrpfn.lrp(cnn(), X, {composites.DENSE: rules.Gamma})


def test_a_rule_key_string_is_accepted_as_a_dict_value():
    keyed = {
        composites.CONVOLUTION: "gamma",
        composites.DENSE: "epsilon",
        nn.BatchNorm2d: "epsilon",
    }
    valued = {
        composites.CONVOLUTION: rules.rule_from_key("gamma"),
        composites.DENSE: rules.rule_from_key("epsilon"),
        nn.BatchNorm2d: rules.rule_from_key("epsilon"),
    }
    torch.testing.assert_close(lrpfn.lrp(cnn(), X, keyed), lrpfn.lrp(cnn(), X, valued))


def test_a_value_that_is_no_rule_names_the_fix():
    with pytest.raises(InvalidRuleError, match=r"is not a rule: 3.*rules.Epsilon\(\)"):
        lrpfn.lrp(cnn(), X, {composites.DENSE: 3})


def test_the_plan_form_of_importance_takes_no_rules_argument():
    plan = lrpfn.prepare(cnn(), composites.epsilon_plus())
    expected = concepts.importance(cnn(), X, composites.epsilon_plus(), "2", 1)
    torch.testing.assert_close(concepts.importance(plan, X, "2", 1), expected)
    torch.testing.assert_close(concepts.importance(plan, X, "2", target=1), expected)
    torch.testing.assert_close(concepts.importance(plan, X, node="2", target=1), expected)


def test_a_batch_norm_is_keyed_by_its_sequential_name():
    plan = lrpfn.prepare(
        cnn(),
        {
            "4": rules.Epsilon(0.5),
            composites.CONVOLUTION: rules.Gamma(),
            nn.Linear: rules.Epsilon(),
        },
    )
    assert plan.rules["_4"] == rules.Epsilon(0.5)
