r"""Properties of LRP over generated sequential networks (Hypothesis; see `strategies.py`).

Conservation. Every rule here is an instance of the generic step (`rules/_base.py`): for
a layer $z = f(a; W, b)$ it returns $R_{\text{in}} = \sum_t c_t\, a'_t \odot f^\top(s; W'_t)$
with $s = R / \mathrm{st}(z')$ and $z' = \sum_t c_t f(a'_t; W'_t, b'_t)$. Because $f^\top$
is the transpose of the linear part of $f$,
$\langle a', f^\top(s; W')\rangle = \langle s, f(a'; W', 0)\rangle$, hence

$$ \sum_i R_{\text{in}, i} = \sum_j R_j \, \frac{z'_j - b'_j}{z'_j + \epsilon\,\mathrm{sign}(z'_j)} $$

(for alpha-beta: $\alpha$ times this sum over $z^+$ minus $\beta$ times it over $z^-$).
So a layer conserves relevance exactly when (1) the modified biases vanish and (2) every
unit $j$ that receives relevance ($R_j \ne 0$) has a non-zero denominator, with
$\epsilon \ll |z'_j|$. Routing ops (max-pooling, flatten) and pass-through activations
conserve by construction. Each test below states where (1) and (2) hold, and generates
exactly such networks, or `assume`s the condition computed from the layers' activations.
The stabilizer is 1e-12 (or 0 for LRP-0), and relevance is compared at 1e-9 relative to
the larger of the explained logit and the relevance's absolute mass.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings, strategies as st
from strategies import (
    ALL_ACTIVATIONS,
    COMPOSITES,
    POSITIVE_SUPPORT,
    RULES,
    ZERO_PRESERVING,
    assert_close64,
    assert_conserved,
    build_case,
    cases,
    explained_output,
    inputs,
    layer_cases,
    sequential_networks,
)
from torch import nn

import lrpfn
from lrpfn import composites, rules
from lrpfn.layers import Convolution, Dense, Layer
from lrpfn.rules import Activations, is_signal_rule

# The conservation warning (lrpfn.engine.conservation) is not what this module tests: its random
# toy nets have biases, which can add relevance as well as absorb it, and AlphaBeta(2, 1)
# gives alpha = 2 x R wherever a layer has no negative part, so sums past 2 x the logit
# are expected here; tests/test_rule_keys.py tests the warning itself.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Using padding='same'"),
    pytest.mark.filterwarnings("ignore::lrpfn.errors.ConservationWarning"),
]

STABILIZER = 1e-12
MARGIN = 1e-3  # |z'| >= MARGIN keeps the stabilizer's bias eps/|z'| below 1e-9
TARGETS = st.one_of(st.none(), st.integers(0, 1))  # every generated net has >= 2 classes


def _affine(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, nn.modules.conv._ConvNd))


def sign_parts(module: nn.Module, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """$z^+ = f(a^+; W^+) + f(a^-; W^-)$ and $z^- = f(a^+; W^-) + f(a^-; W^+)$ of an
    affine module (bias left out), computed with the module's own forward."""
    weight = module.weight
    extra = {} if module.bias is None else {"bias": torch.zeros_like(module.bias)}

    def f(x, w):
        return torch.func.functional_call(module, {"weight": w, **extra}, (x,))

    positive, negative = a.clamp(min=0), a.clamp(max=0)
    w_positive, w_negative = weight.clamp(min=0), weight.clamp(max=0)
    return (
        f(positive, w_positive) + f(negative, w_negative),
        f(positive, w_negative) + f(negative, w_positive),
    )


def layer_inputs(model: nn.Sequential, x: torch.Tensor) -> list[tuple[nn.Module, torch.Tensor]]:
    """(affine module, its input) in forward order."""
    records, a = [], x
    with torch.no_grad():
        for module in model:
            if _affine(module):
                records.append((module, a))
            a = module(a)
    return records


def output_parts(model: nn.Sequential, x: torch.Tensor, target: int | None):
    """(z, z+, z-) of the explained output unit of each sample."""
    module, a = layer_inputs(model, x)[-1]
    with torch.no_grad():
        z = module(a)
        positive, negative = sign_parts(module, a)
    index = (z.argmax(1) if target is None else torch.full_like(z[:, 0], target).long())[:, None]
    return (
        z.gather(1, index)[:, 0],
        positive.gather(1, index)[:, 0],
        negative.gather(1, index)[:, 0],
    )


def min_denominator(model: nn.Sequential, x: torch.Tensor, modify) -> float:
    """The smallest $f(1; \\mathrm{modify}(W), 0)$ over all units of all affine layers:
    the denominators of Flat (`torch.ones_like`) and WSquare (`torch.square`)."""
    smallest = float("inf")
    with torch.no_grad():
        for module, a in layer_inputs(model, x):
            extra = {} if module.bias is None else {"bias": torch.zeros_like(module.bias)}
            parameters = {"weight": modify(module.weight), **extra}
            z = torch.func.functional_call(module, parameters, (torch.ones_like(a),))
            smallest = min(smallest, float(z.min()))
    return smallest


def check_conservation(model, x, rule, target) -> None:
    """The input relevance and the relevance at every graph node (`lrpfn.relevances`)
    each sum to the explained logit: in a sequential network every node lies on the one
    path from the output to the input, so every node carries all the relevance."""
    total = explained_output(model, x, target)
    every = lrpfn.relevances(model, x, rule, target=target)
    for name, relevance in every.items():
        assert_conserved(relevance, total, what=f"at node {name!r}")


# ---------------------------------------------------------------------------- (a) conservation


@given(
    cases(
        sequential_networks(bias=False, activations=ZERO_PRESERVING),
        inputs(kinds=("mixed", "nonnegative", "zeros")),
    ),
    TARGETS,
)
def test_lrp0_conserves_in_bias_free_networks(case, target):
    """LRP-0 (`Epsilon(0)`) conserves relevance in bias-free networks whose activations
    satisfy act(0) = 0, for inputs of any sign.

    Derivation: with b = 0, the sum above is $\\sum_j R_j [z_j \\ne 0]$ (LRP-0 passes no
    relevance through z = 0). Relevance arriving at a node is always its value times
    something ($R = a \\odot c$ from the rule above it; pass-through activations keep
    $R(z) = R(\\mathrm{act}(z)) = \\mathrm{act}(z) c$; max-pooling routes it to the
    element equal to the pooled value), so $R_j \\ne 0$ implies act(z_j) != 0, which
    implies z_j != 0 since act(0) = 0. Average pooling (LRP-0 too) is bias-free. Zero
    inputs explain an output of 0 with zero relevance.
    """
    check_conservation(case.model, case.x, rules.Epsilon(0.0), target)


@given(
    cases(
        sequential_networks(bias=False, activations=POSITIVE_SUPPORT, activate_every_layer=True),
        inputs(kinds=("mixed", "nonnegative")),
    ),
    TARGETS,
)
def test_zplus_conserves_in_bias_free_relu_networks(case, target):
    """z+ (`ZPlus`, on every layer and pooling) conserves relevance in bias-free networks
    whose every affine layer is followed by a ReLU (or ReLU6), for inputs of any sign,
    when the explained output unit has $z^+_t > 0$.

    Derivation: the denominator is $z^+_j = f(a^+; W^+) + f(a^-; W^-) \\ge 0$ and
    $z_j = z^+_j + z^-_j$ with $z^-_j \\le 0$, so $z_j > 0$ implies $z^+_j \\ge z_j > 0$.
    A hidden unit receives relevance only if its ReLU is active ($R = a \\odot c$ as in
    LRP-0), i.e. $z_j > 0$; the output unit $t$ receives $R_t = z_t$ and needs
    $z^+_t > 0$ itself (it may have $z_t \\le 0$). The stabilizer's bias per hidden unit
    is $R_j \\epsilon / z^+_j \\le c_j \\epsilon$ (as $R_j = z_j c_j \\le z^+_j c_j$), at
    the output $\\epsilon / z^+_t$: hence `assume` $z^+_t \\ge$ 1e-3.
    """
    _z, positive, _negative = output_parts(case.model, case.x, target)
    assume(bool((positive >= MARGIN).all()))
    check_conservation(case.model, case.x, rules.ZPlus(STABILIZER), target)


def sign_split_denominators_nonzero(model, x, target, negative_too: bool) -> bool:
    """Whether every unit that can receive relevance has $z^+ > 0$ (and, with
    `negative_too`, $z^- \\le -$1e-3 $z^+$): the hidden units whose activation is non-zero
    (each affine layer but the last is followed by its activation here) and the explained
    output unit (there both parts at least 1e-3 in size, as its $R_t = z_t$ is not
    proportional to them)."""
    modules, a = list(model), x
    with torch.no_grad():
        for index, module in enumerate(modules[:-1]):
            if _affine(module):
                z = module(a)
                positive, negative = sign_parts(module, a)
                receives = modules[index + 1](z) != 0
                if not bool((positive[receives] > 0).all()):
                    return False
                if negative_too and not bool(
                    (negative[receives] <= -MARGIN * positive[receives]).all()
                ):
                    return False
            a = module(a)
    _z, positive, negative = output_parts(model, x, target)
    if not bool((positive >= MARGIN).all()):
        return False
    return not negative_too or bool((negative <= -MARGIN).all())


SIGN_SPLIT_RULES = {
    "alpha2beta1": (rules.AlphaBeta(2.0, 1.0, STABILIZER), False),
    "alpha3beta2": (rules.AlphaBeta(3.0, 2.0, STABILIZER), False),
    "alpha2beta1_ignore_bias": (rules.AlphaBeta(2.0, 1.0, STABILIZER, ignore_bias=True), True),
    "zplus_ignore_bias": (rules.ZPlus(STABILIZER, ignore_bias=True), True),
}


@pytest.mark.parametrize("name", sorted(SIGN_SPLIT_RULES))
@settings(max_examples=15)
@given(
    st.data(),
    inputs(kinds=("mixed", "nonnegative", "positive")),
    st.sampled_from(("ReLU", "ReLU6", "Softplus", "Sigmoid")),
    TARGETS,
)
def test_alpha_beta_conserves_where_both_parts_are_nonzero(name, data, input_spec, act, target):
    """AlphaBeta(alpha, beta) on the affine layers (LRP-0 on pooling) conserves relevance
    when no bias enters it (a bias-free network, or `ignore_bias=True`) and every unit
    that receives relevance has a non-zero positive part $z^+$ and a non-zero negative
    part $z^-$ (for z+ with `ignore_bias=True`: a non-zero $z^+$).

    Derivation: the sum above becomes $\\sum_j R_j (\\alpha [z^+_j \\ne 0] - \\beta
    [z^-_j \\ne 0])$, which is $\\sum_j R_j$ exactly when both parts are non-zero
    ($\\alpha - \\beta = 1$). A unit with only positive contributions ($z^-_j = 0$, e.g.
    all its inputs with negative weights are zero after a ReLU) would give
    $\\alpha R_j$. To make the condition common, weights have checkerboard signs and
    every layer at least two input channels per group (so every window mixes weight
    signs) and activations are ReLU (units with
    $z > 0$ receive relevance) or strictly positive (Softplus, Sigmoid: every unit
    receives relevance, every hidden input is > 0); the condition itself is checked from
    the layers' activations with `assume`, with the margin that keeps the stabilizer's
    bias below the tolerance. Average pooling is explained by LRP-0 (under alpha-beta its
    all-positive weights give $z^- = 0$).
    """
    rule, with_bias = SIGN_SPLIT_RULES[name]
    network = data.draw(
        sequential_networks(
            bias=None if with_bias else False,
            activations=(act,),
            activate_every_layer=True,
            checkerboard=True,
            min_fan_in=2,
        )
    )
    case = build_case(network, input_spec)
    negative_too = not isinstance(rule, rules.ZPlus)
    assume(sign_split_denominators_nonzero(case.model, case.x, target, negative_too))
    mapping = {
        composites.CONVOLUTION: rule,
        composites.DENSE: rule,
        composites.POOLING: rules.Epsilon(0.0),
    }
    check_conservation(case.model, case.x, mapping, target)


@given(cases(sequential_networks(activations=ALL_ACTIVATIONS)), TARGETS)
def test_flat_conserves_in_any_network(case, target):
    """Flat (on every layer and pooling) conserves relevance in any network, with or
    without biases and with any activation, when no output window of a convolution lies
    entirely in zero padding (the generator guarantees this).

    Derivation: Flat ignores the bias and the activations: $R_{\\text{in}} =
    f^\\top(R / f(1; 1))$, so $\\sum_i R_{\\text{in},i} = \\sum_j R_j f(1;1)_j / f(1;1)_j$,
    and $f(1; 1)_j$ counts the real inputs in unit $j$'s window (a positive fraction for
    average pooling). Max-pooling routes relevance. The stabilizer (1e-12) adds a bias of
    at most 1e-12 relative, as every denominator is at least 1/9.
    """
    assert min_denominator(case.model, case.x, torch.ones_like) > 0  # the generator's promise
    check_conservation(case.model, case.x, rules.Flat(STABILIZER), target)


@given(cases(sequential_networks(activations=ALL_ACTIVATIONS)), TARGETS)
def test_wsquare_conserves_in_any_network(case, target):
    """WSquare (on every layer and pooling) conserves relevance in any network, with or
    without biases, when every output unit has a non-zero weight in its window (random
    normal weights: almost surely; no window lies in zero padding alone; checked with
    a margin that keeps the stabilizer's bias below the tolerance).

    Derivation: $R_{\\text{in}} = f^\\top(R / f(1; W^2); W^2)$, so
    $\\sum_i R_{\\text{in},i} = \\sum_j R_j f(1; W^2)_j / f(1; W^2)_j$ (bias left out).
    """
    assume(min_denominator(case.model, case.x, torch.square) >= MARGIN)
    check_conservation(case.model, case.x, rules.WSquare(STABILIZER), target)


@given(
    cases(
        sequential_networks(bias=False, activations=ZERO_PRESERVING, dims=(1, 2, 3)),
        inputs(kinds=("box",)),
    ),
    TARGETS,
)
def test_zbox_first_layer_conserves_for_inputs_inside_the_box(case, target):
    """ZBox(low, high) on the first layer and LRP-0 on the others conserves relevance in
    bias-free networks with act(0) = 0, for inputs strictly inside [low, high].

    Derivation: ZBox's denominator is $z^B = f(a; W, b) - f(l; W^+, b^+) - f(h; W^-, b^-)
    = f(a - l; W^+) + f(a - h; W^-)$ (the bias terms cancel, $b - b^+ - b^- = 0$, so ZBox
    conserves even with a bias). For $l < a < h$ each term is $\\ge 0$, and strictly
    positive for every non-zero weight over a real input; a unit receiving relevance has
    act(z) != 0, so z != 0, so such a weight exists and $z^B_j > 0$. The other layers
    conserve as in `test_lrp0_conserves_in_bias_free_networks`. Inputs are at least 1% of
    the box width from both bounds, which keeps $z^B$ far above the stabilizer.
    """
    low, high = case.input.low, case.input.high
    assert bool(((case.x > low) & (case.x < high)).all())
    mapping = {
        composites.First(): rules.ZBox(low, high, STABILIZER),
        composites.CONVOLUTION: rules.Epsilon(0.0),
        composites.DENSE: rules.Epsilon(0.0),
        composites.POOLING: rules.Epsilon(0.0),
    }
    check_conservation(case.model, case.x, mapping, target)


# ---------------------------------------------------------------------------- (b) identities


@given(cases(sequential_networks(activations=ALL_ACTIVATIONS)))
def test_zplus_equals_alpha1_beta0(case):
    """`ZPlus()` and `AlphaBeta(1, 0)` are the same formula (Bach et al. 2015 with
    alpha = 1, beta = 0), on any network, with biases, for inputs of any sign."""
    expected = lrpfn.lrp(case.model, case.x, rules.AlphaBeta(1.0, 0.0))
    assert_close64(lrpfn.lrp(case.model, case.x, rules.ZPlus()), expected)


@given(cases(sequential_networks(activations=ALL_ACTIVATIONS)))
def test_alpha1_beta0_ignoring_bias_equals_zplus_ignoring_bias(case):
    """`AlphaBeta(1, 0, ignore_bias=True)` equals `ZPlus(ignore_bias=True)`."""
    expected = lrpfn.lrp(case.model, case.x, rules.ZPlus(ignore_bias=True))
    actual = lrpfn.lrp(case.model, case.x, rules.AlphaBeta(1.0, 0.0, ignore_bias=True))
    assert_close64(actual, expected)


@given(cases(sequential_networks(activations=ALL_ACTIVATIONS)))
def test_gamma_zero_without_stabilizer_equals_lrp0(case):
    """`Gamma(0, stabilizer=0)` equals LRP-0: with gamma = 0 both sign groups use W and
    b, the positive group explains the units with z > 0 by z itself and the negative
    group those with z < 0; units with z = 0 pass nothing in both rules. Gamma sums
    $f(a^+) + f(a^-)$ where LRP-0 reuses $f(a)$, so they agree up to float64 rounding
    amplified where z cancels (tolerance 1e-9)."""
    expected = lrpfn.lrp(case.model, case.x, rules.Epsilon(0.0))
    actual = lrpfn.lrp(case.model, case.x, rules.Gamma(0.0, stabilizer=0.0))
    assert_close64(actual, expected, rtol=1e-9)


# ---------------------------------------------------------------------------- (c) batching

RULE_NAMES = sorted(RULES)


@pytest.mark.parametrize("name", RULE_NAMES + sorted(COMPOSITES))
@settings(max_examples=6)
@given(cases(sequential_networks(), inputs(max_batch=3)))
def test_batch_equals_samples_stacked(name, case):
    """Explaining a batch equals explaining each sample alone and stacking the results:
    no rule or handler mixes samples."""
    mapping = {**RULES, **COMPOSITES}[name]
    plan = lrpfn.prepare(case.model, mapping)
    batched = lrpfn.lrp(plan, case.x)
    alone = torch.cat([lrpfn.lrp(plan, case.x[i : i + 1]) for i in range(len(case.x))])
    assert_close64(batched, alone, rtol=1e-10)


# ---------------------------------------------------------------------------- (d) vmap


@pytest.mark.parametrize("name", [*RULE_NAMES, "pass"])
@settings(max_examples=10)
@given(layer_cases())
def test_rule_is_vmap_compatible(name, case):
    """`torch.func.vmap` of a rule over samples (each call sees one unbatched sample)
    equals the rule on the batch: rules have no value-dependent Python branching and no
    batch-dependent reductions."""
    rule = rules.Pass() if name == "pass" else RULES[name]
    if name == "pass":
        assume(case.z.shape == case.a.shape)

    def one(a, z, relevance):
        return rule(case.layer, Activations(a, z, case.nonnegative), relevance)

    batched = rule(case.layer, Activations(case.a, case.z, case.nonnegative), case.relevance)
    mapped = torch.func.vmap(one)(case.a, case.z, case.relevance)
    assert_close64(mapped, batched)


# ---------------------------------------------------------------------------- (e), (f)


@given(cases(sequential_networks()), st.sampled_from(RULE_NAMES), TARGETS)
def test_input_entry_of_relevances_equals_lrp(case, name, target):
    """`relevances(...)[input name]` is `lrp(...)`; the dict starts with the input
    placeholder and ends with "output", the initial relevance one-hot(target) * output."""
    every = lrpfn.relevances(case.model, case.x, RULES[name], target=target)
    names = list(every)
    assert names[-1] == "output"
    expected = lrpfn.lrp(case.model, case.x, RULES[name], target=target)
    assert torch.equal(every[names[0]], expected)
    with torch.no_grad():
        output = case.model(case.x)
    index = output.argmax(1) if target is None else torch.full_like(output[:, 0], target).long()
    assert torch.equal(every["output"], F.one_hot(index, output.shape[1]) * output)


@given(
    cases(sequential_networks()),
    st.sampled_from(RULE_NAMES + sorted(COMPOSITES)),
)
def test_model_is_untouched(case, name):
    """After `lrp`, `relevances` and `prepare`, the model's parameters and buffers are
    bit-identical (same objects, same values), and its mode and `requires_grad` flags
    unchanged."""
    model = case.model
    before = {key: value.clone() for key, value in model.state_dict(keep_vars=True).items()}
    objects = dict(model.named_parameters())
    flags = {key: p.requires_grad for key, p in model.named_parameters()}
    mapping = {**RULES, **COMPOSITES}[name]
    lrpfn.lrp(model, case.x, mapping)
    lrpfn.relevances(model, case.x, mapping)
    lrpfn.prepare(model, mapping)
    after = model.state_dict(keep_vars=True)
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert all(p is objects[key] for key, p in model.named_parameters())
    assert {key: p.requires_grad for key, p in model.named_parameters()} == flags
    assert not any(module.training for module in model.modules())


# ---------------------------------------------------------------------------- (g) by hand


def _layer_record(module: nn.Module) -> Layer:
    """The `Layer` of a Linear or ConvNd module, built from its public attributes."""
    if isinstance(module, nn.Linear):
        return Layer(Dense(), module.weight.detach(), _bias(module))
    dims = module.weight.ndim - 2
    op = Convolution(dims, module.stride, module.padding, module.dilation, module.groups)
    return Layer(op, module.weight.detach(), _bias(module))


def _bias(module):
    return None if module.bias is None else module.bias.detach()


def chained_by_hand(model: nn.Sequential, x: torch.Tensor, rule) -> torch.Tensor:
    """LRP written out for a sequential ReLU network: run the layers, start from
    one-hot(argmax) * output, and go back layer by layer: an affine layer applies the
    rule with the default `Activations` flags (so the generic step, with no
    non-negativity or zero-relevance shortcut), a ReLU passes relevance unchanged (for a
    signal rule: times its derivative $[z > 0]$), a Flatten reshapes it back."""
    values, a = [x], x
    with torch.no_grad():
        for module in model:
            a = module(a)
            values.append(a)
    output = values[-1]
    relevance = F.one_hot(output.argmax(1), output.shape[1]) * output
    for index in reversed(range(len(model))):
        module, a, z = model[index], values[index], values[index + 1]
        if _affine(module):
            relevance = rule(_layer_record(module), Activations(a, z), relevance)
        elif isinstance(module, nn.ReLU):
            relevance = relevance * (a > 0) if is_signal_rule(rule) else relevance
        elif isinstance(module, nn.Flatten):
            relevance = relevance.reshape(a.shape)
        else:
            raise AssertionError(f"unexpected layer {module}")
    return relevance


@pytest.mark.parametrize("name", RULE_NAMES)
@settings(max_examples=6)
@given(
    cases(
        sequential_networks(
            dims=(0, 1, 2),
            activations=("ReLU",),
            activate_every_layer=True,
            poolings=(),
            padding_modes=("zeros", "same"),
            max_convolutions=1,
        ),
        inputs(kinds=("mixed", "nonnegative", "box")),
    ),
)
def test_graph_result_equals_rules_chained_by_hand(name, case):
    """`lrp` on a 2-4 layer sequential ReLU network equals the rule calls composed by
    hand on `Layer` records built from the modules (no graph, no handlers). The hand
    chain uses the generic step everywhere, so this also checks that the shortcuts the
    graph enables (inputs known to be non-negative after a ReLU, relevance known to be
    zero where z <= 0) only skip terms that are exactly zero."""
    rule = RULES[name]
    expected = chained_by_hand(case.model, case.x, rule)
    assert_close64(lrpfn.lrp(case.model, case.x, rule), expected)
