r"""PatternNet and PatternAttribution: `lrpfn.patterns.fit` and the two signal rules.

The estimators (Kindermans et al. 2018, ICLR, Sec. 4), for output neuron $o$ with weight
$w$, input patch $x$ and $y = w^\top x$:

- linear: $a = \mathrm{cov}[x, y] / (w^\top \mathrm{cov}[x, y])$;
- positive: the same over the observations with $z = w^\top x + b > 0$, with
  $\bar y = E_+[y]$ (`mean_y="regime"`) or $E[y]$ over all observations (`mean_y="all"`).

References here are written from these formulas: a NumPy float64 implementation with
explicit patch loops, an analytic toy example, and autograd for the gradient identity.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st
from torch import nn

import lrpfn
import lrpfn.patterns
from lrpfn import composites
from lrpfn.errors import InvalidInputError, InvalidRuleError
from lrpfn.patterns import Patterns
from lrpfn.rules import Gradient, rule_from_key
from lrpfn.rules._pattern import PatternAttribution, PatternNet

_AFFINE = (F.linear, F.conv1d, F.conv2d, F.conv3d)


def _fit(model, data, kind="linear", **options):
    return lrpfn.patterns.fit(model, data, kind, progress=False, **options)


def _canonical_weights(model) -> dict[str, torch.Tensor]:
    """{node name: weight} of the dense and convolution nodes of lrpfn's canonical graph
    (BatchNorm folded), read off the graph's attributes."""
    plan = lrpfn.prepare(model, Gradient())
    weights = {}
    for node in plan.module.graph.nodes:
        if node.name in plan.rules and node.target in _AFFINE:
            value = plan.module
            for part in node.args[1].target.split("."):
                value = getattr(value, part)
            weights[node.name] = value.detach()
    return weights


def _batches(x: torch.Tensor, sizes) -> list[torch.Tensor]:
    return list(torch.split(x, list(sizes)))


# --- the paper's toy example ----------------------------------------------------------


def _toy_data(samples: int = 20_000):
    r"""$x = a_s y + a_d \varepsilon$ with signal direction $a_s = (1, 0)$, distractor
    direction $a_d = (1, 1)$ and independent $y, \varepsilon \sim N(0, 1)$. The filter
    $w = (1, -1)$ extracts the signal: $w^\top a_s = 1$, $w^\top a_d = 0$, so
    $w^\top x = y$, yet $\cos(w, a_s) = 1/\sqrt{2}$."""
    generator = torch.Generator().manual_seed(0)
    y, distractor = torch.randn(2, samples, 1, generator=generator, dtype=torch.float64)
    signal_direction = torch.tensor([1.0, 0.0], dtype=torch.float64)
    distractor_direction = torch.tensor([1.0, 1.0], dtype=torch.float64)
    x = y * signal_direction + distractor * distractor_direction
    model = nn.Linear(2, 1, bias=False).double().eval()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -1.0]]))
    return model, x, y.squeeze(1), signal_direction


def test_linear_pattern_points_along_the_signal_not_the_filter():
    r"""$\mathrm{cov}[x, y] = a_s \mathrm{var}[y] + a_d \mathrm{cov}[\varepsilon, y]$, and the
    sample covariance of the independent $\varepsilon, y$ is $O(1/\sqrt{n})$: the pattern is
    $a_s$ up to $\approx 0.01$ for $n = 20000$, while the weight is at 45 degrees from it."""
    model, x, _, signal_direction = _toy_data()
    (name,) = _canonical_weights(model)
    pattern = _fit(model, _batches(x, [5000] * 4))[name][0]
    weight = model.weight.detach()[0]
    assert F.cosine_similarity(pattern, signal_direction, dim=0) > 0.999
    assert F.cosine_similarity(weight, signal_direction, dim=0) < 0.75  # 1/sqrt(2)
    assert torch.dot(weight, pattern).item() == pytest.approx(1.0, abs=1e-12)  # w^T a = 1


def test_pattern_attribution_of_a_linear_neuron_is_output_times_weight_times_pattern():
    r"""One dense layer, default start $R = y$ (one-hot times the output):
    $R_{\text{in}} = y\,(w \odot a)$. On the toy data $a \approx a_s = (1, 0)$ and
    $w \odot a_s = (1, 0)$: the attribution lies on the signal feature."""
    model, x, y, _ = _toy_data()
    patterns = _fit(model, [x])
    (name,) = patterns.keys()
    weight_times_pattern = model.weight.detach()[0] * patterns[name][0]
    attribution = lrpfn.lrp(model, x[:50], PatternAttribution(patterns), target=0)
    expected = y[:50, None] * weight_times_pattern  # hand-derived y (w * a)
    torch.testing.assert_close(attribution, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        weight_times_pattern, torch.tensor([1.0, 0.0]).double(), atol=0.02, rtol=0
    )


def test_pattern_attribution_equals_weight_times_pattern_for_any_output_relevance():
    r"""$R_{\text{in}, i} = \sum_o R_o W_{oi} A_{oi}$ for a dense layer with bias
    (the bias does not enter $f^\top$)."""
    generator = torch.Generator().manual_seed(1)
    model = nn.Linear(5, 3).double().eval()
    pattern = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    x = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    relevance = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    (name,) = _canonical_weights(model)
    result = lrpfn.lrp(
        model, x, PatternAttribution(Patterns({name: pattern})), output_relevance=relevance
    )
    weight = model.weight.detach()
    expected = torch.stack(
        [sum(relevance[n, o] * weight[o] * pattern[o] for o in range(3)) for n in range(4)]
    )
    torch.testing.assert_close(result, expected, rtol=1e-12, atol=1e-12)


# --- an independent float64 NumPy reference of both estimators -------------------------


def _numpy_patches(x, kernel, stride, padding, dilation):
    """(N, positions, C, *kernel): the zero-padded input under the kernel at every output
    position, gathered with an explicit loop over output positions."""
    dims = len(kernel)
    padded = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    span = [dilation[d] * (kernel[d] - 1) + 1 for d in range(dims)]
    outputs = [(padded.shape[2 + d] - span[d]) // stride[d] + 1 for d in range(dims)]
    patches = []
    for position in itertools.product(*(range(n) for n in outputs)):
        window = tuple(
            slice(position[d] * stride[d], position[d] * stride[d] + span[d], dilation[d])
            for d in range(dims)
        )
        patches.append(padded[(slice(None), slice(None), *window)])
    return np.stack(patches, axis=1)


def _numpy_observations(layer: nn.Module, x: np.ndarray, out: int) -> tuple[np.ndarray, int]:
    """(observation rows of neuron `out`'s input, its weight row): one row per sample and
    output position; a convolution sees the input channels of its group only."""
    weight = layer.weight.detach().numpy()
    if isinstance(layer, nn.Linear):
        return x, weight[out].reshape(-1)
    padding = layer.padding
    if padding == "same":  # odd kernels: (k - 1) * dilation / 2 on both sides
        padding = tuple(
            d * (k - 1) // 2 for k, d in zip(layer.kernel_size, layer.dilation, strict=True)
        )
    patches = _numpy_patches(x, layer.kernel_size, layer.stride, padding, layer.dilation)
    per_group_in = x.shape[1] // layer.groups
    group = out // (weight.shape[0] // layer.groups)
    rows = patches[:, :, group * per_group_in : (group + 1) * per_group_in]
    return rows.reshape(-1, weight[out].size), weight[out].reshape(-1)


def numpy_patterns(layer: nn.Module, x: np.ndarray, kind: str, mean_y: str = "regime"):
    """The pattern of every output neuron, one neuron at a time (float64)."""
    weight = layer.weight.detach().numpy()
    bias = layer.bias.detach().numpy() if layer.bias is not None else np.zeros(weight.shape[0])
    result = np.zeros_like(weight)
    for out in range(weight.shape[0]):
        rows, w = _numpy_observations(layer, x, out)
        y = rows @ w
        chosen = np.ones_like(y, dtype=bool) if kind == "linear" else y + bias[out] > 0
        if not chosen.any():
            continue  # a neuron that never activates: zero pattern
        rows_in, y_in = rows[chosen], y[chosen]
        if kind == "linear" or mean_y == "regime":  # covariance in centred form
            covariance = ((rows_in - rows_in.mean(0)) * (y_in - y_in.mean())[:, None]).mean(0)
        else:  # E+[xy] - E+[x] E[y], the mean of y over all observations
            covariance = (rows_in * y_in[:, None]).mean(0) - rows_in.mean(0) * y.mean()
        denominator = w @ covariance
        if denominator != 0:
            result[out] = (covariance / denominator).reshape(weight[out].shape)
    return result


LAYERS = {
    "linear": lambda: nn.Linear(6, 4),
    "conv1d stride 2, padding, groups 2": lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1, groups=2),
    "conv2d stride 2, padding 2, dilation 2, groups 2": lambda: nn.Conv2d(
        4, 6, 3, stride=2, padding=2, dilation=2, groups=2
    ),
    "conv2d rectangular, stride (1, 2)": lambda: nn.Conv2d(
        3, 5, (2, 3), stride=(1, 2), padding=(1, 0)
    ),
    "conv2d padding 'same', dilation 2": lambda: nn.Conv2d(
        2, 3, 3, padding="same", dilation=2, bias=False
    ),
    "conv3d stride 2, padding, groups 2": lambda: nn.Conv3d(4, 4, 2, stride=2, padding=1, groups=2),
}
INPUT_SHAPES = {
    "linear": (6,),
    "conv1d stride 2, padding, groups 2": (4, 11),
    "conv2d stride 2, padding 2, dilation 2, groups 2": (4, 9, 8),
    "conv2d rectangular, stride (1, 2)": (3, 6, 7),
    "conv2d padding 'same', dilation 2": (2, 6, 6),
    "conv3d stride 2, padding, groups 2": (4, 4, 5, 3),
}
ESTIMATORS = [("linear", "regime"), ("positive", "regime"), ("positive", "all")]


def _random_layer(name: str, seed: int = 0):
    torch.manual_seed(seed)
    layer = LAYERS[name]().double().eval()
    x = torch.randn(36, *INPUT_SHAPES[name], dtype=torch.float64) + 0.5  # mean != 0
    return layer, x


@pytest.mark.parametrize(("kind", "mean_y"), ESTIMATORS)
@pytest.mark.parametrize("layer_name", list(LAYERS))
def test_fit_equals_numpy_reference_on_one_layer(layer_name, kind, mean_y):
    layer, x = _random_layer(layer_name)
    model = nn.Sequential(layer).eval()
    (name,) = _canonical_weights(model)
    fitted = _fit(model, _batches(x, [10, 10, 16]), kind, mean_y=mean_y)[name]
    expected = numpy_patterns(layer, x.numpy(), kind, mean_y)
    assert np.abs(expected).max() > 0.1  # a non-trivial pattern
    torch.testing.assert_close(fitted, torch.from_numpy(expected), rtol=0, atol=1e-9)


@pytest.mark.parametrize(("kind", "mean_y"), ESTIMATORS)
def test_fit_equals_numpy_reference_on_every_layer_of_a_network(kind, mean_y):
    """A deeper node sees the previous layers' output as its input x (computed here by
    the torch modules: the forward pass is not what is tested)."""
    torch.manual_seed(3)
    layers = [
        nn.Conv2d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, dilation=1, groups=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 3 * 3, 5),
    ]
    model = nn.Sequential(*layers).double().eval()
    x = torch.randn(30, 2, 8, 8, dtype=torch.float64)
    fitted = _fit(model, _batches(x, [12, 18]), kind, mean_y=mean_y)
    names = list(_canonical_weights(model))
    inputs = [x, model[:2](x), model[:5](x)]
    for name, index, layer_input in zip(names, (0, 2, 5), inputs, strict=True):
        expected = numpy_patterns(model[index], layer_input.detach().numpy(), kind, mean_y)
        torch.testing.assert_close(fitted[name], torch.from_numpy(expected), rtol=0, atol=1e-9)


# --- streaming: batches, folding, normalization --------------------------------------


def _small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return (
        nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(6 * 2 * 2, 3),
        )
        .double()
        .eval()
    )


def _data(samples: int = 60, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(samples, 1, 8, 8, generator=generator, dtype=torch.float64)


def _assert_same_patterns(first: Patterns, second: Patterns) -> None:
    assert list(first.keys()) == list(second.keys())
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("kind", "mean_y"), ESTIMATORS)
def test_batching_does_not_change_the_patterns(kind, mean_y):
    model, x = _small_cnn(), _data()
    labels = torch.arange(60) % 3
    whole = _fit(model, [x], kind, mean_y=mean_y)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, labels), batch_size=16
    )  # yields (x, label) pairs, last batch of 12
    for data in (_batches(x, [10] * 6), _batches(x, [7, 13, 1, 39]), loader):
        _assert_same_patterns(whole, _fit(model, data, kind, mean_y=mean_y))


@given(cuts=st.sets(st.integers(1, 59), max_size=8))
def test_any_split_into_batches_gives_the_same_patterns(cuts):
    model, x = _small_cnn(), _data()
    bounds = [0, *sorted(cuts), 60]
    sizes = [b - a for a, b in itertools.pairwise(bounds)]
    _assert_same_patterns(_fit(model, [x], "positive"), _fit(model, _batches(x, sizes), "positive"))


@pytest.mark.parametrize("kind", ["linear", "positive"])
def test_patterns_are_normalized_to_the_folded_weights(kind):
    r"""$w^\top a = 1$ for every neuron with a defined pattern, where $w$ is the weight the
    rules see: with a BatchNorm folded into the convolution before it."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    ).double()
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
        model[1].weight.uniform_(0.5, 2)
    model.eval()
    patterns = _fit(model, [_data(40)], kind)
    weights = _canonical_weights(model)
    assert list(patterns.keys()) == list(weights)
    for name, weight in weights.items():
        products = (weight * patterns[name]).flatten(1).sum(1)
        torch.testing.assert_close(products, torch.ones_like(products), rtol=0, atol=1e-12)
    raw = (model[0].weight.detach() * patterns[next(iter(weights))]).flatten(1).sum(1)
    assert not torch.allclose(raw, torch.ones_like(raw), atol=1e-3)  # the fold mattered


def test_neurons_that_never_activate_get_zero_patterns_not_nan():
    """Neuron 0 has bias -100 (never positive); neuron 1 has zero weights (y = 0)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double().eval()
    with torch.no_grad():
        model[0].bias[0] = -100.0
        model[0].weight[1] = 0.0
    first, _ = _canonical_weights(model)
    x = torch.randn(50, 4, dtype=torch.float64)
    for kind, mean_y in ESTIMATORS:
        pattern = _fit(model, [x], kind, mean_y=mean_y)[first]
        assert torch.isfinite(pattern).all()
        assert (pattern[1] == 0).all()
        if kind == "positive":
            assert (pattern[0] == 0).all()
        assert pattern[2].abs().sum() > 0


# --- the rules --------------------------------------------------------------------------


def _gradient_of_logit(model, x, target):
    x = x.clone().requires_grad_(True)
    logits = model(x)
    (gradient,) = torch.autograd.grad(logits[torch.arange(len(x)), target].sum(), x)
    return gradient


def _one_hot(model, x, target):
    with torch.no_grad():
        return F.one_hot(target, model(x).shape[1]).to(x.dtype)


def _cnn_with_average_pooling() -> nn.Module:
    torch.manual_seed(2)
    return (
        nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 6, 3, padding=1, groups=2),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(24, 8),
            nn.ReLU(),
            nn.Linear(8, 3),
        )
        .double()
        .eval()
    )


@pytest.mark.parametrize(
    "make_rules",
    [
        pytest.param(lambda p: PatternNet(p), id="single rule"),
        pytest.param(lambda p: rule_from_key("patternnet", pattern=p), id="rule key"),
        pytest.param(
            lambda p: {composites.DENSE: PatternNet(p), composites.CONVOLUTION: PatternNet(p)},
            id="composite",
        ),
    ],
)
def test_patternnet_with_the_weights_as_patterns_is_the_gradient(make_rules):
    r"""With $A = W$, $f^\top(R; A) = f^\top(R; W)$ at every node, ReLUs pass by their
    derivative and pooling by its gradient: the backward pass of autograd."""
    model = _cnn_with_average_pooling()
    x = _data(5, seed=1)
    target = torch.tensor([0, 1, 2, 1, 0])
    rules = make_rules(Patterns(_canonical_weights(model)))
    result = lrpfn.lrp(model, x, rules, output_relevance=_one_hot(model, x, target))
    torch.testing.assert_close(result, _gradient_of_logit(model, x, target), rtol=1e-12, atol=1e-12)


def test_pattern_attribution_with_unit_patterns_is_the_gradient():
    r"""With $A = \mathbf{1}$, $W \odot A = W$."""
    model = _cnn_with_average_pooling()
    x = _data(3, seed=2)
    target = torch.tensor([2, 0, 1])
    ones = Patterns({name: torch.ones_like(w) for name, w in _canonical_weights(model).items()})
    result = lrpfn.lrp(
        model, x, PatternAttribution(ones), output_relevance=_one_hot(model, x, target)
    )
    torch.testing.assert_close(result, _gradient_of_logit(model, x, target), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rule", [PatternNet, PatternAttribution])
def test_several_targets_at_once_equal_one_target_at_a_time(rule):
    model, x = _small_cnn(), _data(4)
    rules = rule(_fit(model, [_data()], "positive"))
    together = lrpfn.lrp(model, x, rules, target=torch.tensor([[0, 2]] * 4))
    for k, target in enumerate((0, 2)):
        alone = lrpfn.lrp(model, x, rules, target=target)
        torch.testing.assert_close(together[k], alone, rtol=1e-12, atol=1e-12)


def test_float64_patterns_explain_a_float32_model():
    """Patterns are converted to the layer's dtype: the float32 result equals the float64
    model's to float32 precision."""
    model = _small_cnn()
    patterns = _fit(model, [_data()], "positive")
    x = _data(4, seed=3)
    expected = lrpfn.lrp(model, x, PatternAttribution(patterns), target=1)
    result = lrpfn.lrp(model.float(), x.float(), PatternAttribution(patterns), target=1)
    assert result.dtype == torch.float32
    torch.testing.assert_close(result.double(), expected, rtol=1e-4, atol=1e-6)


# --- the value: save, load, errors ------------------------------------------------------


def test_patterns_save_and_load_round_trip(tmp_path):
    patterns = _fit(_small_cnn(), [_data()], "positive", mean_y="all")
    path = tmp_path / "patterns.pt"
    patterns.save(path)
    loaded = Patterns.load(path)
    assert (loaded.kind, loaded.mean_y, loaded.samples) == ("positive", "all", 60)
    _assert_same_patterns(patterns, loaded)
    plain = torch.load(path, weights_only=True)  # a plain dict of tensors and strings
    assert set(plain["tensors"]) == set(patterns.keys())


def test_loading_a_file_that_is_not_patterns_fails(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.ones(2)}, path)
    with pytest.raises(InvalidInputError, match="not an lrpfn patterns file"):
        Patterns.load(path)


def test_patterns_are_private_copies():
    tensor = torch.ones(2, 3)
    patterns = Patterns({"linear": tensor})
    tensor.zero_()
    assert (patterns["linear"] == 1).all()
    with pytest.raises(TypeError):
        patterns.tensors["linear"] = tensor  # read-only mapping


def test_a_missing_pattern_names_the_node_and_the_expected_shape():
    model = _small_cnn()
    weights = _canonical_weights(model)
    first = next(iter(weights))
    partial = Patterns({name: w for name, w in weights.items() if name != first})
    with pytest.raises(
        InvalidRuleError, match=rf"no pattern for node '{first}' \(expected shape \(4, 1, 3, 3\)\)"
    ):
        lrpfn.lrp(model, _data(2), PatternNet(partial))


def test_a_mis_shaped_pattern_names_the_node_and_both_shapes():
    model = _small_cnn()
    weights = dict(_canonical_weights(model))
    last = list(weights)[-1]
    weights[last] = torch.ones(3, 5)
    with pytest.raises(InvalidRuleError, match=rf"'{last}' has shape \(3, 5\).*\(3, 24\)"):
        lrpfn.lrp(model, _data(2), PatternAttribution(Patterns(weights)))


def test_transposed_convolutions_get_no_pattern_and_the_rule_says_so():
    torch.manual_seed(0)
    model = (
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.ConvTranspose2d(2, 1, 3)).double().eval()
    )
    patterns = _fit(model, [_data(8)])
    assert len(patterns) == 1
    with pytest.raises(InvalidRuleError, match="no pattern for node"):
        lrpfn.lrp(model, _data(2), PatternNet(patterns), output_relevance=torch.ones(2, 1, 8, 8))


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"kind": "quadratic"}, InvalidRuleError, "kind must be one of"),
        ({"kind": "positive", "mean_y": "median"}, InvalidRuleError, "mean_y must be one of"),
        ({"data": []}, InvalidInputError, "no samples"),
        ({"data": [torch.full((2, 1, 8, 8), math.nan)]}, InvalidInputError, "NaN or inf"),
        ({"data": [torch.ones(2, 1, 8, 8, dtype=torch.long)]}, InvalidInputError, "floating"),
        ({"data": [{"image": torch.ones(2, 1, 8, 8)}]}, InvalidInputError, "floating tensors"),
        ({"data": [torch.tensor(1.0)]}, InvalidInputError, "leading batch axis"),
    ],
)
def test_fit_rejects_bad_arguments(arguments, error, message):
    options = {"data": [_data(4)], **arguments}
    with pytest.raises(error, match=message):
        lrpfn.patterns.fit(_small_cnn(), progress=False, **options)


def test_fit_needs_a_dense_or_convolution_node():
    with pytest.raises(InvalidInputError, match="no dense or convolution node"):
        _fit(nn.Sequential(nn.ReLU()).eval(), [_data(2)])


@pytest.mark.parametrize("not_patterns", [42, None, [torch.ones(1)]])
def test_rules_need_patterns(not_patterns):
    with pytest.raises(InvalidRuleError, match="needs patterns"):
        PatternNet(not_patterns)


def test_patterns_need_floating_tensors_by_name():
    with pytest.raises(InvalidRuleError, match="floating tensor"):
        Patterns({"linear": torch.ones(2, dtype=torch.long)})
    with pytest.raises(InvalidRuleError, match="maps node names"):
        Patterns({"linear": [1.0]})


def test_progress_bar_can_be_shown(capsys):
    lrpfn.patterns.fit(_small_cnn(), [_data(4)], progress=True)
    assert "lrpfn.patterns.fit" in capsys.readouterr().err


def test_seed_keys_with_pattern_keyword_equal_the_rule_values():
    """TorchLRP's `rule="patternnet", pattern=...` spelling: lrp(model, x, key, pattern=p)."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).double().eval()
    x = torch.randn(32, 4, dtype=torch.float64)
    fitted = lrpfn.patterns.fit(model, [x], progress=False)
    for key, rule in (("patternnet", PatternNet), ("patternattribution", PatternAttribution)):
        by_key = lrpfn.lrp(model, x[:4], key, pattern=fitted)
        torch.testing.assert_close(by_key, lrpfn.lrp(model, x[:4], rule(fitted)), rtol=0, atol=0)
    with pytest.raises(InvalidRuleError, match="pattern= goes with the rule keys"):
        lrpfn.lrp(model, x[:4], PatternNet(fitted), pattern=fitted)
