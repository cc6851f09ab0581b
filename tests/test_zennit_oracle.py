"""lrpfn agrees with zennit 0.5.1, an independent implementation, in float64.

zennit computes LRP with backward hooks on modules that temporarily modify parameters
and inputs; lrpfn walks an fx graph with pure rules. Agreement is measured as
$\\|R_{\\text{lrpfn}} - R_{\\text{zennit}}\\| / \\|R_{\\text{zennit}}\\|$ and must be at most 1e-6
(in practice it is about 1e-13, rounding).

Uniform rules: one rule for every linear layer. In zennit that is a `LayerMapComposite`
mapping convolutions, `torch.nn.Linear` and average pooling to the rule and activations to
`Pass` (lrpfn passes relevance through ReLUs; max-pooling is winner-take-all in both).
Pooling has no parameters in zennit, so rules that modify parameters (Gamma, AlphaBeta,
ZPlus, ZBox) leave a zennit pooling layer unmodified, while lrpfn treats pooling as a
linear layer with non-negative implicit weights (e.g. `AlphaBeta(2, 1)` on an average of
non-negative inputs gives $2R$ in lrpfn, $R$ in zennit). For those rules pooling gets the
stabilized epsilon rule in both libraries (lrpfn `Epsilon(stabilizer)`, zennit `Norm`),
which is what every preset does; Epsilon, Flat and WSquare mean the same on pooling in
both and are applied to it.

Presets are compared with zennit's composites of the same names and default parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torchvision
import zennit.composites as zc
import zennit.rules as zr
from torch import Tensor, nn
from zennit.attribution import Gradient as ZennitGradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.torchvision import ResNetCanonizer, VGGCanonizer
from zennit.types import Activation, AvgPool, Convolution

import lrpfn
from lrpfn import composites
from lrpfn.rules import AlphaBeta, Epsilon, Flat, Gamma, Pass, WSquare, ZBox, ZPlus

# The conservation warning (lrpfn.engine.conservation) is not what this module tests: its random
# toy nets have biases, which can add relevance as well as absorb it, and AlphaBeta(2, 1)
# gives alpha = 2 x R wherever a layer has no negative part, so sums past 2 x the logit
# are expected here; tests/test_rule_keys.py tests the warning itself.
pytestmark = pytest.mark.filterwarnings("ignore::lrpfn.errors.ConservationWarning")

DTYPE = torch.float64
TOLERANCE = 1e-6
STABILIZER = 1e-6  # the rules' and presets' default


def relative_error(ours: Tensor, theirs: Tensor) -> float:
    """$\\|a - b\\| / \\|b\\|$."""
    return float((ours - theirs).norm() / theirs.norm())


def zennit_relevance(model: nn.Module, x: Tensor, target: Tensor, composite: Any) -> Tensor:
    """zennit's input relevance for one-hot(target) times the output (lrpfn's default)."""
    output = model(x)
    start = nn.functional.one_hot(target, output.shape[1]).to(DTYPE) * output.detach()
    with ZennitGradient(model=model, composite=composite) as attributor:
        _, relevance = attributor(x, start)
    return relevance.detach()


def compare(model: nn.Module, x: Tensor, ours: Any, theirs: Any) -> float:
    """Relative error of lrpfn (rule mapping `ours`) against zennit (composite `theirs`)."""
    with torch.no_grad():
        target = model(x).argmax(1)
    relevance = lrpfn.lrp(model, x, ours, target=target)
    expected = zennit_relevance(model, x, target, theirs)
    assert relevance.shape == expected.shape and relevance.dtype == DTYPE
    assert expected.norm() > 0  # a comparison of zeros would prove nothing
    return relative_error(relevance, expected)


# --- models (float64, eval, random weights with non-zero biases) --------------------------


def _randomize_biases(model: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)) and module.bias is not None:
                noise = torch.randn(module.bias.shape, generator=generator, dtype=DTYPE)
                module.bias.copy_(0.05 * noise)
    return model


def _randomize_batch_norms(model: nn.Module, seed: int) -> nn.Module:
    r"""Random statistics and affine parameters, and eps = 0.

    zennit's `MergeBatchNorm` folds $\gamma / \sqrt{\sigma^2 + \epsilon}$ into the layer before
    the BatchNorm and then turns the BatchNorm into an identity by setting its statistics
    and affine parameters to mean 0, var 1, weight 1, bias 0, but it leaves `eps` in place:
    the "identity" still divides by $\sqrt{1 + \epsilon}$, so zennit's canonized model is
    not the original model (a relative change of about $\epsilon / 2$ per BatchNorm, 5e-6
    for the default 1e-5, which adds up over 13 BatchNorms beyond the 1e-6 tolerance).
    With eps = 0 both libraries fold exactly and the comparison measures the rules.
    """
    generator = torch.Generator().manual_seed(seed)

    def uniform(shape, low, high):
        return low + (high - low) * torch.rand(shape, generator=generator, dtype=DTYPE)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                shape = module.running_mean.shape
                module.running_mean.copy_(
                    0.1 * torch.randn(shape, generator=generator, dtype=DTYPE)
                )
                module.running_var.copy_(uniform(shape, 0.5, 1.5))
                module.weight.copy_(uniform(shape, 0.5, 1.5))
                module.bias.copy_(0.1 * torch.randn(shape, generator=generator, dtype=DTYPE))
                module.eps = 0.0
    return model


def mlp() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)
    )
    return _randomize_biases(model.to(DTYPE).eval(), 0)


def cnn() -> nn.Module:
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 16),
        nn.ReLU(),
        nn.Linear(16, 5),
    )
    return _randomize_biases(model.to(DTYPE).eval(), 1)


def vgg16() -> nn.Module:
    torch.manual_seed(2)
    model = torchvision.models.vgg16(num_classes=10)
    return _randomize_biases(model.to(DTYPE).eval(), 2)


def vgg16_bn() -> nn.Module:
    torch.manual_seed(3)
    model = torchvision.models.vgg16_bn(num_classes=10)
    return _randomize_batch_norms(_randomize_biases(model.to(DTYPE).eval(), 3), 3)


def resnet18() -> nn.Module:
    torch.manual_seed(4)
    model = torchvision.models.resnet18(num_classes=10)
    return _randomize_batch_norms(_randomize_biases(model.to(DTYPE).eval(), 4), 4)


def _input(shape: tuple[int, ...], seed: int) -> Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mlp": (mlp, (3, 10)),
    "cnn": (cnn, (2, 3, 16, 16)),
    "vgg16": (vgg16, (2, 3, 32, 32)),
}
SLOW = {"vgg16"}  # 5-50 s per comparison on one core (resnet18: 1-3 s)


@pytest.fixture(scope="module")
def built() -> Callable[[str], nn.Module]:
    """Models built once per test module (vgg16 takes seconds to initialise)."""
    cache: dict[str, nn.Module] = {}

    def get(name: str) -> nn.Module:
        if name not in cache:
            cache[name] = {**{k: v[0] for k, v in MODELS.items()}, **BN_MODELS}[name]()
        return cache[name]

    return get


def _model_params(names) -> list:
    return [pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name for name in names]


# --- uniform rules ----------------------------------------------------------------------

# Per-channel input bounds (normalised images) for ZBox on the first layer.
LOW = torch.tensor([-2.1, -2.0, -1.8], dtype=DTYPE).reshape(1, 3, 1, 1)
HIGH = torch.tensor([2.2, 2.4, 2.6], dtype=DTYPE).reshape(1, 3, 1, 1)

# name -> (lrpfn rule, zennit rule factory, whether pooling takes the rule as well)
UNIFORM: dict[str, tuple[Any, Callable[[], Any], bool]] = {
    "epsilon": (Epsilon(0.01), lambda: zr.Epsilon(0.01), True),
    "gamma": (Gamma(0.25), lambda: zr.Gamma(0.25), False),
    "alpha2beta1": (AlphaBeta(2, 1), lambda: zr.AlphaBeta(2, 1), False),
    "alpha1beta0": (AlphaBeta(1, 0), lambda: zr.AlphaBeta(1, 0), False),
    "zplus": (ZPlus(), lambda: zr.ZPlus(), False),
    "zbox": (ZBox(-3.0, 3.0), lambda: zr.ZBox(-3.0, 3.0), False),
    "flat": (Flat(), lambda: zr.Flat(), True),
    "wsquare": (WSquare(), lambda: zr.WSquare(zero_params=["bias"]), True),
}


def uniform_pair(name: str) -> tuple[Any, Any]:
    """The rule mapping for lrpfn and the equivalent zennit composite."""
    rule, zennit_rule, on_pooling = UNIFORM[name]
    pool_rule = zennit_rule() if on_pooling else zr.Norm(STABILIZER)
    layer_map = [
        (Activation, zr.Pass()),
        (Convolution, zennit_rule()),
        (nn.Linear, zennit_rule()),
        (AvgPool, pool_rule),
    ]
    ours = (
        rule
        if on_pooling
        else {
            composites.CONVOLUTION: rule,
            composites.DENSE: rule,
            composites.POOLING: Epsilon(STABILIZER),
        }
    )
    return ours, zc.LayerMapComposite(layer_map=layer_map)


@pytest.mark.parametrize("rule_name", list(UNIFORM))
@pytest.mark.parametrize("model_name", _model_params(MODELS))
def test_uniform_rule_matches_zennit(model_name: str, rule_name: str, built) -> None:
    _factory, shape = MODELS[model_name]
    ours, theirs = uniform_pair(rule_name)
    error = compare(built(model_name), _input(shape, 5), ours, theirs)
    assert error <= TOLERANCE


def test_pass_matches_zennit(built) -> None:
    """`Pass` on the square hidden layer "2" of the MLP (zennit: `Pass` by module name),
    Epsilon on the others."""
    ours = {"2": Pass(), composites.DENSE: Epsilon(0.01)}
    theirs = zc.NameLayerMapComposite(
        name_map=[(("2",), zr.Pass())],
        layer_map=[(Activation, zr.Pass()), (nn.Linear, zr.Epsilon(0.01))],
    )
    model = built("mlp")
    assert compare(model, _input((3, 10), 6), ours, theirs) <= TOLERANCE
    # and Pass changes the result (the check could fail): Epsilon on "2" differs
    x = _input((3, 10), 6)
    with_pass = lrpfn.lrp(model, x, ours)
    without = lrpfn.lrp(model, x, Epsilon(0.01))
    assert relative_error(with_pass, without) > 1e-3


# --- presets ------------------------------------------------------------------------------

PRESETS: dict[str, tuple[Callable[[], Any], Callable[..., Any]]] = {
    "epsilon_plus": (composites.epsilon_plus, zc.EpsilonPlus),
    "epsilon_plus_flat": (composites.epsilon_plus_flat, zc.EpsilonPlusFlat),
    "epsilon_gamma_box": (
        lambda: composites.epsilon_gamma_box(low=LOW, high=HIGH),
        lambda **kwargs: zc.EpsilonGammaBox(low=LOW, high=HIGH, **kwargs),
    ),
    "epsilon_alpha2_beta1": (composites.epsilon_alpha2_beta1, zc.EpsilonAlpha2Beta1),
    "epsilon_alpha2_beta1_flat": (
        composites.epsilon_alpha2_beta1_flat,
        zc.EpsilonAlpha2Beta1Flat,
    ),
}


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("model_name", _model_params(MODELS))
def test_preset_matches_zennit(model_name: str, preset: str, built) -> None:
    ours, theirs = PRESETS[preset]
    _factory, shape = MODELS[model_name]
    error = compare(built(model_name), _input(shape, 7), ours(), theirs())
    assert error <= TOLERANCE


# --- BatchNorm models with zennit's canonizers --------------------------------------------

BN_MODELS: dict[str, Callable[[], nn.Module]] = {"vgg16_bn": vgg16_bn, "resnet18": resnet18}
CANONIZERS: dict[str, Callable[[], list]] = {
    "vgg16_bn": lambda: [VGGCanonizer()],
    "resnet18": lambda: [ResNetCanonizer()],
}
BN_PRESETS = ("epsilon_gamma_box", "epsilon_plus_flat", "epsilon_alpha2_beta1")


@pytest.mark.parametrize("preset", BN_PRESETS)
@pytest.mark.parametrize(
    "model_name", [pytest.param("vgg16_bn", marks=pytest.mark.slow), "resnet18"]
)
def test_batchnorm_model_matches_zennit_with_canonizers(
    model_name: str, preset: str, built
) -> None:
    """lrpfn folds BatchNorm in its canonical graph; zennit merges it with a canonizer
    (and ResNetCanonizer routes the residual sum through a module zennit can hook)."""
    ours, theirs = PRESETS[preset]
    model = built(model_name)
    x = _input((2, 3, 32, 32), 8)
    error = compare(model, x, ours(), theirs(canonizers=CANONIZERS[model_name]()))
    assert error <= TOLERANCE


def test_small_batchnorm_cnn_matches_zennit_sequential_merge() -> None:
    """A small CNN with BatchNorm and zennit's generic `SequentialMergeBatchNorm`, so that a
    BatchNorm comparison also runs without the slow marker."""
    torch.manual_seed(9)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 5),
    )
    model = _randomize_batch_norms(_randomize_biases(model.to(DTYPE).eval(), 9), 9)
    x = _input((2, 3, 16, 16), 9)
    for preset in BN_PRESETS:
        ours, theirs = PRESETS[preset]
        error = compare(model, x, ours(), theirs(canonizers=[SequentialMergeBatchNorm()]))
        assert error <= TOLERANCE, preset
