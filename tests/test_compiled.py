"""The compiled walk (`lrpfn.prepare(..., compile=...)`) explains exactly what the plain plan
explains, recompiles per input signature, and reports a backend that cannot compile.

The reference is the plain plan (`compile=False`) on the same model and input, itself
checked against zennit and matrix-form references elsewhere. Most tests use the backend
"aot_eager": the same `make_fx` recording and `torch.compile` path, but the graphs run by
aten, so they compile in seconds; one slow test runs inductor's generated code in float64.
"""

from __future__ import annotations

import copy
import dataclasses
from types import MappingProxyType

import pytest
import torch
from tiny_models import tiny_cnn

import lrpfn
from lrpfn import composites, rules
from lrpfn.errors import CompileError, InvalidTargetError, NodeFailedError

# The conservation warning (lrpfn.engine.conservation) is not what this module tests: its random
# toy nets have biases, which can add relevance as well as absorb it, and AlphaBeta(2, 1)
# gives alpha = 2 x R wherever a layer has no negative part, so sums past 2 x the logit
# are expected here; tests/test_rule_keys.py tests the warning itself.
pytestmark = pytest.mark.filterwarnings("ignore::lrpfn.errors.ConservationWarning")

BACKEND = "aot_eager"


def gamma_box():
    return composites.epsilon_gamma_box(low=-3.0, high=3.0)


def epsilon():
    return rules.Epsilon(1e-6)


def model_and_input(dtype: torch.dtype, batch: int = 2):
    model = tiny_cnn().to(dtype)
    x = torch.randn(batch, 3, 8, 8, dtype=dtype, generator=torch.Generator().manual_seed(1))
    return model, x


def plans(model, rule_mapping, x, backend=BACKEND):
    plain = lrpfn.prepare(model, rule_mapping(), example_input=x)
    compiled = lrpfn.prepare(model, rule_mapping(), example_input=x, compile=backend)
    return plain, compiled


def assert_same(compiled: torch.Tensor, plain: torch.Tensor, rtol: float) -> None:
    """Equal up to `rtol` times the largest magnitude (relevance maps have exact zeros)."""
    assert compiled.shape == plain.shape
    assert compiled.dtype == plain.dtype
    assert float(plain.abs().max()) > 0
    assert float((compiled - plain).abs().max()) <= rtol * float(plain.abs().max())


TARGETS = {
    "argmax": None,
    "one class": 1,
    "one per sample": [2, 0],
    "two per sample": [[0, 2], [1, 1]],
}


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
@pytest.mark.parametrize("rule_mapping", [epsilon, gamma_box], ids=["epsilon", "gamma_box"])
def test_compiled_plan_gives_the_plain_plans_relevance(dtype, rtol, rule_mapping):
    model, x = model_and_input(dtype)
    plain, compiled = plans(model, rule_mapping, x)
    for name, target in TARGETS.items():
        expected = lrpfn.lrp(plain, x, target=target)
        assert_same(lrpfn.lrp(compiled, x, target=target), expected, rtol), name


def test_compiled_lrp0_without_biases_is_gradient_times_input():
    # A ReLU network without biases is piecewise linear and homogeneous: LRP-0 propagates
    # R = one-hot * output back to x * d output[target] / dx (the autograd oracle).
    model, x = model_and_input(torch.float64)
    for module in model.modules():
        if getattr(module, "bias", None) is not None:
            torch.nn.init.zeros_(module.bias)
    _, compiled = plans(model, lambda: rules.Epsilon(0.0), x)
    target = torch.tensor([2, 0])
    leaf = x.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(model(leaf).gather(1, target[:, None]).sum(), leaf)
    assert_same(lrpfn.lrp(compiled, x, target=target), gradient * x, 1e-12)


def test_a_new_input_shape_or_dtype_recompiles_and_a_known_one_does_not():
    model, x = model_and_input(torch.float32)
    plain, compiled = plans(model, gamma_box, x)
    lrpfn.lrp(compiled, x)
    assert compiled.compiled.compiled_signatures == 2  # the forward and one walk
    lrpfn.lrp(compiled, x + 1.0)  # same shape, dtype, device: reused
    assert compiled.compiled.compiled_signatures == 2
    larger = torch.randn(5, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    assert_same(lrpfn.lrp(compiled, larger), lrpfn.lrp(plain, larger), 1e-6)
    assert compiled.compiled.compiled_signatures == 4
    lrpfn.lrp(compiled, x, target=[[0, 1], [2, 2]])  # k targets: the same forward, a new walk
    assert compiled.compiled.compiled_signatures == 5
    model64, x64 = model_and_input(torch.float64)
    plain64, compiled64 = plans(model64, gamma_box, x64)
    assert_same(lrpfn.lrp(compiled64, x64), lrpfn.lrp(plain64, x64), 1e-12)


def test_relevances_of_a_compiled_plan_are_the_plain_walks():
    model, x = model_and_input(torch.float64)
    plain, compiled = plans(model, gamma_box, x)
    expected = lrpfn.relevances(plain, x, target=1)
    found = lrpfn.relevances(compiled, x, target=1)
    assert list(found) == list(expected)
    for name in expected:
        torch.testing.assert_close(found[name], expected[name], rtol=0, atol=0)


def test_compiled_plan_checks_targets_and_inputs_like_the_plain_plan():
    model, x = model_and_input(torch.float32)
    _, compiled = plans(model, epsilon, x)
    with pytest.raises(InvalidTargetError, match="out of range for 3 classes"):
        lrpfn.lrp(compiled, x, target=3)
    with pytest.raises(NodeFailedError, match="the forward pass failed"):
        lrpfn.lrp(compiled, torch.randn(2, 4, 8, 8))  # 4 channels for a 3-channel model


def test_compiling_leaves_the_model_untouched():
    model, x = model_and_input(torch.float32)
    before = copy.deepcopy(model.state_dict())
    attributes = set(vars(model))
    _, compiled = plans(model, gamma_box, x)
    lrpfn.lrp(compiled, x, target=[[0, 1], [1, 2]])
    assert set(vars(model)) == attributes
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert "compiled='aot_eager'" in repr(compiled)
    assert lrpfn.prepare(model, epsilon(), example_input=x).compiled is None


def test_an_unknown_backend_is_a_named_error_at_prepare():
    model, x = model_and_input(torch.float32)
    with pytest.raises(CompileError, match=r"'no_such_backend' is not a torch\.compile backend"):
        lrpfn.prepare(model, epsilon(), example_input=x, compile="no_such_backend")
    with pytest.raises(CompileError, match="compile= takes True, False"):
        lrpfn.prepare(model, epsilon(), example_input=x, compile=3)


def test_a_backend_that_fails_to_compile_is_a_named_error_with_the_fix():
    def failing_backend(graph, example_inputs):
        raise RuntimeError("no C++ compiler")

    model, x = model_and_input(torch.float32)
    _, compiled = plans(model, epsilon, x, backend=failing_backend)
    with pytest.raises(CompileError, match=r"(?s)no C\+\+ compiler.*compile='aot_eager'"):
        lrpfn.lrp(compiled, x)


@pytest.mark.slow
def test_inductor_compiled_plan_gives_the_plain_plans_relevance_in_float64():
    model, x = model_and_input(torch.float64)
    plain, compiled = plans(model, gamma_box, x, backend="inductor")
    for target in (None, [[0, 2], [1, 1]]):
        expected = lrpfn.lrp(plain, x, target=target)
        assert_same(lrpfn.lrp(compiled, x, target=target), expected, 1e-12)


def test_a_rule_that_branches_on_values_cannot_be_recorded_and_says_so():
    def branching(layer, activations, relevance):  # runs in the plain walk, not in one graph
        epsilon = 1e-6 if bool((activations.input >= 0).all()) else 1e-3
        return rules.Epsilon(epsilon)(layer, activations, relevance)

    model, x = model_and_input(torch.float32)
    lrpfn.lrp(lrpfn.prepare(model, branching, example_input=x), x)
    compiled = lrpfn.prepare(model, branching, example_input=x, compile=BACKEND)
    with pytest.raises(CompileError, match=r"(?s)could not be recorded.*compile=False"):
        lrpfn.lrp(compiled, x)


def test_a_copy_of_a_compiled_plan_with_other_rules_compiles_its_own_walk():
    model, x = model_and_input(torch.float64)
    plain, compiled = plans(model, epsilon, x)
    lrpfn.lrp(compiled, x)
    other = MappingProxyType({name: rules.Epsilon(0.25) for name in compiled.rules})
    expected = lrpfn.lrp(dataclasses.replace(plain, rules=other), x)
    assert not torch.allclose(expected, lrpfn.lrp(plain, x))  # the rules matter here
    assert_same(lrpfn.lrp(dataclasses.replace(compiled, rules=other), x), expected, 1e-12)
