"""Every error lrpfn raises on purpose names what is wrong, where, and how to fix it.

One test per failure mode of the issue "Reliability": an untraceable model, unsupported
nodes (all reported at once), invalid rule parameters, a bad target, a bad input, an input
that does not fit the model, a failing relevance step, and a model in training mode. Each
test asserts the exception type (from `lrpfn.errors`) and that the message names the node
or argument and the fix.
"""

import re

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import lrpfn
from lrpfn import composites, rules
from lrpfn.errors import (
    InvalidInputError,
    InvalidRuleError,
    InvalidTargetError,
    LRPError,
    NodeFailedError,
    TraceError,
    TrainingModeError,
    UnassignedRuleError,
    UnsupportedNodeError,
)

# The conservation warning (lrpfn.engine.conservation) is not what this module tests: its
# random toy nets have biases, which can add relevance as well as absorb it, so sums past
# 2 x the logit occur; tests/test_rule_keys.py tests the warning itself.
pytestmark = pytest.mark.filterwarnings("ignore::lrpfn.errors.ConservationWarning")


def dense() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3)).eval()


def conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)
    ).eval()


X = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))


def test_every_error_is_an_lrp_error_and_a_builtin_category():
    """`except LRPError` catches everything; each error also keeps the builtin category
    a caller would expect (`ValueError` for bad values, ...)."""
    expected = {
        TraceError: TypeError,
        UnsupportedNodeError: NotImplementedError,
        UnassignedRuleError: LookupError,
        InvalidRuleError: ValueError,
        InvalidTargetError: ValueError,
        InvalidInputError: ValueError,
        NodeFailedError: RuntimeError,
        TrainingModeError: RuntimeError,
    }
    exported = {getattr(lrpfn.errors, name) for name in lrpfn.errors.__all__}
    assert set(expected) <= exported
    assert all(issubclass(error, LRPError) for error in exported)
    for error, builtin in expected.items():
        assert issubclass(error, LRPError)
        assert issubclass(error, builtin)


# --- untraceable models ------------------------------------------------------------------


class FlagModel(nn.Module):
    """Python control flow on a forward argument: torch.fx cannot trace it symbolically."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x, flip=False):
        if flip:  # the offending line
            x = -x
        return self.fc(x)


class ValueFlagModel(nn.Module):
    """Python control flow on a tensor's value: neither torch.fx nor torch.export captures it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        if x.sum() > 0:  # the offending line
            x = -x
        return self.fc(x)


def test_model_that_no_front_end_captures_reports_both_failures_offending_line_and_ways_out():
    with pytest.raises(TraceError) as caught:
        lrpfn.lrp(ValueFlagModel(), X, rules.Epsilon())
    message = str(caught.value)
    assert "symbolically traced variables cannot be used as inputs to control flow" in message
    assert "torch.export could not capture it" in message
    assert "GuardOnDataDependentSymNode" in message  # export's own failure, second
    assert message.count("if x.sum() > 0:  # the offending line") == 2  # once per front end
    assert __file__ in message
    # the three ways out: a pre-traced GraphModule with concrete_args, a leaf module
    assert "concrete_args" in message
    assert "GraphModule" in message
    assert "is_leaf_module" in message
    assert isinstance(caught.value.__cause__, Exception)  # the export error is chained


def test_argument_control_flow_that_fx_refuses_is_captured_by_export():
    """FlagModel's `if flip:` stops fx; torch.export evaluates it (flip=False)."""
    model = FlagModel().eval()
    plan = lrpfn.prepare(model, rules.Epsilon(), example_input=X)
    assert plan.front_end == "export"
    assert plan.input_shape == tuple(X.shape)
    expected = lrpfn.lrp(model.fc, X, rules.Epsilon())
    torch.testing.assert_close(lrpfn.lrp(plan, X), expected, rtol=0, atol=0)


def test_prepare_without_an_example_input_says_to_pass_one_when_fx_fails():
    with pytest.raises(TraceError, match=r"pass example_input=x to lrpfn\.prepare"):
        lrpfn.prepare(FlagModel(), rules.Epsilon())


def test_non_module_model_is_a_trace_error_saying_to_wrap_it():
    with pytest.raises(TraceError, match=r"got function\. Wrap a plain function in an nn\.Module"):
        lrpfn.lrp(lambda x: x, X, rules.Epsilon())


def test_way_out_concrete_args_gives_an_explainable_graph_module():
    model = FlagModel().eval()
    traced = fx.symbolic_trace(model, concrete_args={"flip": False})
    # with flip=False the model is its Linear layer: the reference is that layer alone
    expected = lrpfn.lrp(model.fc, X, rules.Epsilon())
    torch.testing.assert_close(lrpfn.lrp(traced, X, rules.Epsilon()), expected, rtol=0, atol=0)


class DataDependent(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return torch.tanh(x)
        return x


class WithDataDependentPart(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.part = DataDependent()

    def forward(self, x):
        return self.part(self.fc(x))


def test_way_out_leaf_module_with_a_handler_explains_the_model():
    """The second way out of the TraceError: a leaf module plus a handler for it."""
    model = WithDataDependentPart().eval()
    with pytest.raises(TraceError, match="is_leaf_module"):
        lrpfn.lrp(model, X, rules.Epsilon())

    class LeafTracer(fx.Tracer):
        def is_leaf_module(self, module, name):
            return isinstance(module, DataDependent) or super().is_leaf_module(module, name)

    traced = fx.GraphModule(model, LeafTracer().trace(model))
    with pytest.raises(UnsupportedNodeError, match=r"part: module 'part' \(.*DataDependent\)"):
        lrpfn.lrp(traced, X, rules.Epsilon())
    handlers = {**lrpfn.HANDLERS, DataDependent: lrpfn.HANDLERS[nn.Tanh]}
    # an elementwise leaf passes relevance: from the same output relevance, the result is
    # the Linear layer's alone
    output = model(X).detach()
    start = F.one_hot(output.argmax(1), 3) * output
    expected = lrpfn.lrp(model.fc, X, rules.Epsilon(), output_relevance=start)
    result = lrpfn.lrp(traced, X, rules.Epsilon(), handlers=handlers, output_relevance=start)
    torch.testing.assert_close(result, expected, rtol=0, atol=0)


# --- unsupported nodes -------------------------------------------------------------------


class ThreeUnsupportedOps(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return torch.exp(self.fc(torch.cos(x))).abs()


def test_all_unsupported_nodes_are_reported_at_once_with_the_fix():
    with pytest.raises(UnsupportedNodeError) as caught:
        lrpfn.lrp(ThreeUnsupportedOps(), X, rules.Epsilon())
    message = str(caught.value)
    assert message.startswith("3 graph node(s) have no relevance handler")
    for line in (
        "- cos: call_function cos",
        "- exp: call_function exp",
        "- abs_1: call_method abs",
    ):
        assert line in message
    assert "Fix: pass handlers={**lrpfn.HANDLERS" in message


def test_unsupported_nodes_are_found_before_anything_runs():
    """`prepare` (no input at all) already raises: nothing is computed for a doomed model."""
    with pytest.raises(UnsupportedNodeError):
        lrpfn.prepare(ThreeUnsupportedOps(), rules.Epsilon())


def test_unsupported_node_fix_cites_names_that_exist():
    with pytest.raises(UnsupportedNodeError) as caught:
        lrpfn.lrp(ThreeUnsupportedOps(), X, rules.Epsilon())
    cited = re.findall(r"\blrpfn(?:\.\w+)+", str(caught.value))
    assert cited
    for dotted in cited:
        value = lrpfn
        for part in dotted.split(".")[1:]:
            assert hasattr(value, part), f"the message cites {dotted}, which does not exist"
            value = getattr(value, part)


def test_parametrised_nodes_without_a_rule_are_listed_with_the_fix():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2, 2), nn.Linear(2, 2))
    with pytest.raises(UnassignedRuleError) as caught:
        lrpfn.lrp(model.eval(), torch.randn(1, 3, 3, 3), {nn.Conv2d: rules.ZPlus()})
    message = str(caught.value)
    assert message.startswith("2 node(s) with parameters match no key")
    assert "_2: dense from module '2' (Linear)" in message
    assert "_3: dense from module '3' (Linear)" in message
    assert "Fix: add a key for them" in message


# --- invalid rule parameters -------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda v: rules.Epsilon(epsilon=v), "Epsilon(epsilon"),
        (lambda v: rules.Gamma(gamma=v), "Gamma(gamma"),
        (lambda v: rules.Gamma(stabilizer=v), "Gamma(stabilizer"),
        (lambda v: rules.ZPlus(stabilizer=v), "ZPlus(stabilizer"),
        (lambda v: rules.AlphaBeta(alpha=2.0, beta=1.0, stabilizer=v), "AlphaBeta(stabilizer"),
        (lambda v: rules.Flat(stabilizer=v), "Flat(stabilizer"),
        (lambda v: rules.WSquare(stabilizer=v), "WSquare(stabilizer"),
        (lambda v: rules.ZBox(0.0, 1.0, stabilizer=v), "ZBox(stabilizer"),
    ],
)
@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf"), "0.1"])
def test_negative_or_non_finite_hyperparameter_names_the_argument(make, argument, value):
    """The message names the rule class and the argument, e.g. "Gamma(gamma=...)"."""
    with pytest.raises(InvalidRuleError) as caught:
        make(value)
    assert str(caught.value) == f"{argument}=...) must be a finite number >= 0, got {value!r}."


@pytest.mark.parametrize(("alpha", "beta"), [(2.0, 2.0), (1.0, 1.0), (3.0, 1.0)])
def test_alpha_minus_beta_not_one_names_both_values_and_a_valid_choice(alpha, beta):
    with pytest.raises(InvalidRuleError) as caught:
        rules.AlphaBeta(alpha=alpha, beta=beta)
    message = str(caught.value)
    assert f"alpha={alpha!r}, beta={beta!r}" in message
    assert "alpha - beta = 1" in message
    assert "AlphaBeta(alpha=2, beta=1)" in message


def test_negative_beta_is_rejected_even_when_alpha_minus_beta_is_one():
    with pytest.raises(
        InvalidRuleError, match=r"AlphaBeta\(beta=\.\.\.\) must be a finite number >= 0, got -0.5"
    ):
        rules.AlphaBeta(alpha=0.5, beta=-0.5)


@pytest.mark.parametrize(
    ("low", "high"),
    [
        (1.0, 0.0),
        (torch.tensor([0.0, 2.0]), torch.tensor([1.0, 1.0])),  # one channel inverted
        (torch.zeros(1, 3, 1, 1), -1.0),
    ],
)
def test_zbox_low_above_high_names_the_bounds(low, high):
    with pytest.raises(InvalidRuleError) as caught:
        rules.ZBox(low, high)
    message = str(caught.value)
    assert message.startswith("ZBox needs low <= high everywhere")
    assert f"low={low!r}" in message
    assert f"high={high!r}" in message


@pytest.mark.parametrize(
    ("low", "high", "pattern"),
    [
        (float("nan"), 1.0, r"ZBox low must be a finite number or a tensor, got nan"),
        (0.0, float("inf"), r"ZBox high must be a finite number or a tensor, got inf"),
        (torch.tensor([0, 1]), 2.0, r"ZBox low must be a float or a floating tensor"),
    ],
)
def test_zbox_non_finite_or_integer_bound_names_the_bound(low, high, pattern):
    with pytest.raises(InvalidRuleError, match=pattern):
        rules.ZBox(low, high)


def test_zbox_bounds_that_do_not_broadcast_fail_naming_the_node_and_rule():
    with pytest.raises(NodeFailedError) as caught:
        lrpfn.lrp(dense(), X, rules.ZBox(torch.zeros(5), torch.ones(5)))
    message = str(caught.value)
    assert "the relevance step failed at node %_0" in message
    assert "rule ZBox(low=tensor([0., 0., 0., 0., 0.])" in message


@pytest.mark.parametrize(
    ("mapping", "pattern"),
    [
        (None, r"no rules given: pass e\.g\. rules=lrpfn\.rules\.Epsilon\(\)"),
        ("nope", r"unknown rule key 'nope'; known keys: alpha1beta0, alpha2beta1"),
        ("epsilon_gamma_box", r"pass composites\.epsilon_gamma_box\(low=\.\.\., high=\.\.\.\)"),
        ({3.5: rules.Epsilon()}, r"unsupported rule key 3\.5: use a node or module name"),
        ({nn.Linear: 3}, r"the value for key <class 'torch\.nn\.modules\.linear\.Linear'> is "),
    ],
)
def test_invalid_rule_mapping_names_the_entry_and_the_fix(mapping, pattern):
    with pytest.raises(InvalidRuleError, match=pattern):
        lrpfn.lrp(dense(), X, mapping)


def test_product_rule_with_a_bad_operand_index_names_the_argument():
    with pytest.raises(InvalidRuleError, match=r"signal=\.\.\.\) must be 0, 1 or None, got 2"):
        rules.SignalTakesAll(signal=2)


def test_plan_with_new_rules_says_to_prepare_again():
    plan = lrpfn.prepare(dense(), rules.Epsilon())
    with pytest.raises(InvalidRuleError, match=r"lrpfn\.prepare\(model, rules\)"):
        lrpfn.lrp(plan, X, rules.Gamma())


# --- bad targets -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        (3, "[3, 3]"),
        (-1, "[-1, -1]"),
        (torch.tensor([0, 7]), "[0, 7]"),
        (torch.tensor([[0, 3], [1, 1]]), "[[0, 3], [1, 1]]"),
    ],
)
def test_target_out_of_range_names_the_value_and_the_valid_range(target, shown):
    with pytest.raises(InvalidTargetError) as caught:
        lrpfn.lrp(dense(), X, rules.Epsilon(), target=target)
    assert str(caught.value) == f"target {shown} is out of range for 3 classes (valid: 0..2)."


@pytest.mark.parametrize(
    ("target", "shape"),
    [
        (torch.tensor([0, 1, 2]), "(3,)"),
        (torch.zeros(3, 2, dtype=torch.long), "(3, 2)"),
        (torch.zeros(2, 2, 2, dtype=torch.long), "(2, 2, 2)"),
    ],
)
def test_target_of_wrong_shape_names_the_shapes_expected_and_got(target, shape):
    with pytest.raises(InvalidTargetError) as caught:
        lrpfn.lrp(dense(), X, rules.Epsilon(), target=target)
    message = str(caught.value)
    assert "have shape (batch,) or (batch, k) with batch=2" in message
    assert f"got shape {shape}" in message


@pytest.mark.parametrize(
    ("target", "pattern"),
    [
        (
            torch.tensor([0.0, 1.0]),
            r"target must hold integer class indices, got dtype torch\.float32",
        ),
        (
            torch.tensor([True, False]),
            r"target must hold integer class indices, got dtype torch\.bool",
        ),
        (1.0, r"target must be None, an int or a LongTensor, got 1\.0"),
        (True, r"target must be None, an int or a LongTensor, got True"),
        ("cat", r"target must be None, an int or a LongTensor, got 'cat'"),
    ],
)
def test_target_of_wrong_type_or_dtype_names_what_is_accepted(target, pattern):
    with pytest.raises(InvalidTargetError, match=pattern):
        lrpfn.lrp(dense(), X, rules.Epsilon(), target=target)


def test_target_on_a_non_classifier_output_says_to_pass_output_relevance():
    with pytest.raises(InvalidTargetError) as caught:
        lrpfn.lrp(nn.Conv2d(3, 2, 3).eval(), torch.randn(1, 3, 4, 4), rules.Epsilon(), target=0)
    message = str(caught.value)
    assert "needs a model output of shape (batch, classes), got (1, 2, 2, 2)" in message
    assert "Fix: pass output_relevance=" in message


def test_output_relevance_of_wrong_shape_names_both_shapes():
    with pytest.raises(InvalidTargetError) as caught:
        lrpfn.lrp(dense(), X, rules.Epsilon(), output_relevance=torch.ones(2, 4))
    message = str(caught.value)
    assert "output_relevance must have the model output's shape (2, 3)" in message
    assert "got torch.Size([2, 4])" in message


def test_target_and_output_relevance_together_is_ambiguous():
    with pytest.raises(InvalidTargetError, match="pass either target or output_relevance"):
        lrpfn.lrp(dense(), X, rules.Epsilon(), target=0, output_relevance=torch.ones(2, 3))


# --- bad inputs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "pattern"),
    [
        (X.numpy(), r"x must be a torch\.Tensor, got ndarray"),
        ([[0.0] * 4], r"x must be a torch\.Tensor, got list"),
        (X.long(), r"x must be a floating tensor, got dtype torch\.int64\. Fix: x = x\.float\(\)"),
        (X.bool(), r"x must be a floating tensor, got dtype torch\.bool\. Fix: x = x\.float\(\)"),
    ],
)
def test_input_that_is_not_a_floating_tensor_names_x_and_the_fix(x, pattern):
    with pytest.raises(InvalidInputError, match=pattern):
        lrpfn.lrp(dense(), x, rules.Epsilon())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_names_x_and_the_fix(bad):
    x = X.clone()
    x[1, 2] = bad
    with pytest.raises(InvalidInputError) as caught:
        lrpfn.lrp(dense(), x, rules.Epsilon())
    message = str(caught.value)
    assert message.startswith("x contains NaN or inf")
    assert "Fix: clean the input (e.g. torch.nan_to_num)" in message


@pytest.mark.parametrize(
    ("x", "node"),
    [
        (torch.randn(1, 2, 8, 8), "%_0"),  # 2 channels for a 3-channel convolution
        (torch.randn(1, 3, 9, 9), "%_3"),  # 9x9 images: the Linear after Flatten fails
        (torch.randn(1, 3, 8, 8, dtype=torch.float64), "%_0"),  # float64 into float32 weights
    ],
    ids=["channels", "spatial-size", "dtype"],
)
def test_input_that_does_not_fit_names_the_failing_node_and_the_input(x, node):
    with pytest.raises(NodeFailedError) as caught:
        lrpfn.lrp(conv_net(), x, rules.Epsilon())
    message = str(caught.value)
    assert f"the forward pass failed at node {node} " in message
    assert isinstance(caught.value.__cause__, RuntimeError)  # torch's own error, chained
    assert f"RuntimeError: {caught.value.__cause__}" in message  # ... and quoted
    assert f"input shape {tuple(x.shape)}, dtype {x.dtype}, device cpu" in message
    assert "Check that the input fits the model" in message


def test_input_without_batch_axis_says_so():
    x = torch.randn(4)
    with pytest.raises(LRPError) as caught:
        lrpfn.lrp(dense(), x, rules.Epsilon())
    message = str(caught.value)
    assert "(4,)" in message
    assert "batch axis" in message


def test_model_with_a_second_required_input_names_it_and_the_fix():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x, y):
            return self.fc(x + y)

    with pytest.raises(InvalidInputError) as caught:
        lrpfn.lrp(TwoInputs().eval(), X, rules.Epsilon())
    message = str(caught.value)
    assert "('y' has no default)" in message
    assert "Fix: trace with concrete_args for the other inputs" in message


def test_model_returning_a_tuple_says_to_return_one_tensor():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x), x

    with pytest.raises(InvalidInputError, match=r"must return one tensor .* returns \(fc, x\)"):
        lrpfn.lrp(Pair().eval(), X, rules.Epsilon())


def test_failing_rule_is_wrapped_with_the_node_and_the_rule():
    def broken_rule(layer, activations, relevance):
        raise ValueError("broken on purpose")

    with pytest.raises(NodeFailedError) as caught:
        lrpfn.lrp(conv_net(), torch.randn(1, 3, 8, 8), broken_rule)
    message = str(caught.value)
    assert "the relevance step failed at node %_3" in message
    assert "handler 'linear', rule <function" in message
    assert "broken_rule" in message
    assert "ValueError: broken on purpose" in message
    assert isinstance(caught.value.__cause__, ValueError)


# --- training mode -----------------------------------------------------------------------


def batch_norm_dropout_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Dropout(0.5), nn.Linear(3, 2))


@pytest.mark.parametrize(
    ("in_training", "named"),
    [
        ([], ["_1 (BatchNorm1d)", "_2 (Dropout)"]),  # model.train(): all listed at once
        ([1], ["_1 (BatchNorm1d)"]),
        ([2], ["_2 (Dropout)"]),
    ],
)
def test_training_mode_names_every_stochastic_module_and_the_fix(in_training, named):
    model = batch_norm_dropout_net()
    if in_training:
        model.eval()
        for index in in_training:
            model[index].train()
    modes = [module.training for module in model.modules()]
    with pytest.raises(TrainingModeError) as caught:
        lrpfn.lrp(model, X, rules.Epsilon())
    message = str(caught.value)
    assert f"explanations would be random: {', '.join(named)}." in message
    assert "Fix: call model.eval() before explaining" in message
    assert [module.training for module in model.modules()] == modes  # lrpfn never flips it


def test_training_mode_of_deterministic_modules_is_allowed_and_kept():
    """Only BatchNorm and Dropout behave differently in training; a Linear/ReLU model in
    training mode explains exactly as in eval mode, and stays in training mode."""
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    expected = lrpfn.lrp(model.eval(), X, rules.Epsilon())
    model.train()
    torch.testing.assert_close(lrpfn.lrp(model, X, rules.Epsilon()), expected, rtol=0, atol=0)
    assert all(module.training for module in model.modules())


def test_batch_norm_without_running_statistics_is_a_training_mode_error():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3, track_running_stats=False)).eval()
    with pytest.raises(TrainingModeError) as caught:
        lrpfn.lrp(model, X, rules.Epsilon())
    message = str(caught.value)
    assert "BatchNorm node '_1' (1) has track_running_stats=False" in message
    assert "Fix: explain a copy of the model with running statistics" in message


class FunctionalDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(F.dropout(x, 0.5, self.training))


def test_functional_dropout_in_training_mode_is_a_training_mode_error():
    model = FunctionalDropout()
    assert model.training
    with pytest.raises(TrainingModeError, match=r"dropout"):
        lrpfn.lrp(model, X, rules.Epsilon())


def test_stochastic_depth_in_training_mode_is_a_training_mode_error():
    ops = pytest.importorskip("torchvision.ops")
    model = nn.Sequential(nn.Linear(4, 4), ops.StochasticDepth(0.5, "row"), nn.Linear(4, 2))
    with pytest.raises(TrainingModeError, match=r"stochastic_depth"):
        lrpfn.prepare(model, rules.Epsilon())


def test_functional_dropout_in_eval_mode_passes_relevance():
    """The same model in eval mode is deterministic and equals its Linear layer alone."""
    model = FunctionalDropout().eval()
    expected = lrpfn.lrp(model.fc, X, rules.Epsilon())
    torch.testing.assert_close(lrpfn.lrp(model, X, rules.Epsilon()), expected, rtol=0, atol=0)


def test_presets_with_invalid_parameters_fail_when_built():
    with pytest.raises(InvalidRuleError, match="ZBox needs low <= high"):
        composites.epsilon_gamma_box(low=1.0, high=-1.0)
    with pytest.raises(InvalidRuleError, match=r"Epsilon\(epsilon=\.\.\.\) must be a finite"):
        composites.epsilon_plus(epsilon=-1.0)
