"""`lrpfn.torchlrp` reproduces TorchLRP; lrpfn's own keys give the literature's rules.

The reference is TorchLRP's procedure written here from its formulas, in float64 matrix
form (TorchLRP's code is not copied or imported): every convolution, linear layer and
average pooling becomes its matrix $M$ (read off by applying the op to the identity
basis), every tensor a flat vector per sample. Walking back from relevance 1 at each
sample's argmax:

- dense/conv, TorchLRP's rho rules: $M' = M + \\gamma M \\odot M^+$, $b' = b + \\gamma b \\odot b^+$,
  $z = a M'^\\top + b'$, $R_{in} = a \\odot ((R / (z + \\epsilon\\,s(z))) M')$ with $s(z) = 1$ for
  $z > 0$ else $-1$; "epsilon" $\\gamma = 0, \\epsilon = $ float32(0.1); "gamma"
  $\\gamma = 0.1, \\epsilon = $ float32(1e-10); "gamma+epsilon" $\\gamma = 0.1, \\epsilon = $ float32(0.1);
- alpha-beta: $f(X_1, X_2) = X_1 \\odot (s M^+) + X_2 \\odot (s M^-)$ with
  $s = R / (Z + 10^{-6} [Z = 0])$, $Z = X_1 M^{+\\top} + X_2 M^{-\\top}$ (no bias),
  $M^+ = M [M > 0]$, $M^- = M [M \\le 0]$; $R_{in} = \\alpha f(a^+, a^-) - \\beta f(a^-, a^+)$ with
  $a^+ = a [a > 0]$, $a^- = a [a \\le 0]$;
- patterns: $R_{in} = R P$ (PatternNet), $R (P \\odot M)$ (PatternAttribution), $P$ the
  matrix of the pattern kernel; "gradient": $R M$;
- every other module its gradient: ReLU $R [z > 0]$, max-pooling to the window's winner,
  average pooling $R A$, flatten and dropout (eval) the identity;
- pattern rules only: the relevance arriving at the input of every module but ReLU and
  max-pooling, if that input has more than two dimensions, divided per sample by its
  largest magnitude.
"""

from __future__ import annotations

import copy
import pickle
from dataclasses import dataclass
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import lrpfn
from lrpfn import torchlrp
from lrpfn.errors import InvalidInputError, InvalidRuleError, UnsupportedNodeError
from lrpfn.patterns import Patterns

FLOAT32_TENTH = float(np.float32(0.1))
FLOAT32_1E_10 = float(np.float32(1e-10))
RHO = {  # TorchLRP's (gamma, epsilon) per rule
    "epsilon": (0.0, FLOAT32_TENTH),
    "gamma": (0.1, FLOAT32_1E_10),
    "gamma+epsilon": (0.1, FLOAT32_TENTH),
}
ALPHA_BETA = {"alpha1beta0": (1.0, 0.0), "alpha2beta1": (2.0, 1.0)}
PATTERN_RULES = ("patternnet", "patternattribution")
ALL_RULES = ("gradient", *RHO, *ALPHA_BETA, *PATTERN_RULES)


# ---------------------------------------------------------------- the matrix-form reference


def matrix_of(op, in_shape: tuple[int, ...]) -> Tensor:
    """The matrix M (out x in) of a linear op on flat vectors, from the identity basis."""
    n = int(np.prod(in_shape))
    basis = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    return op(basis).reshape(n, -1).T.contiguous()


@dataclass
class Step:
    kind: str  # "affine", "relu", "maxpool", "avgpool", "identity"
    in_shape: tuple[int, ...]
    rescales: bool  # TorchLRP rescales pattern signals at this module's input
    matrix: Tensor | None = None
    bias: Tensor | None = None
    pattern_matrix: Tensor | None = None
    pool: nn.MaxPool2d | None = None


def reference_steps(modules: list[nn.Module], in_shape, patterns=None) -> list[Step]:
    """The model as a list of matrix-form steps (patterns: one kernel per Linear/Conv2d)."""
    steps, shape, kernels = [], tuple(in_shape), list(patterns or [])
    for module in modules:
        rescales = type(module).__name__[:4].lower() not in ("relu", "maxp") and len(shape) != 2
        with torch.no_grad():
            out_shape = tuple(module(torch.zeros(1, *shape, dtype=torch.float64)).shape[1:])
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            if isinstance(module, nn.Conv2d):

                def op(t, weight, conv=module):
                    return F.conv2d(t, weight, None, conv.stride, conv.padding)

                bias = module.bias[:, None].expand(-1, out_shape[1] * out_shape[2]).reshape(-1)
            else:

                def op(t, weight):
                    return t @ weight.T

                bias = module.bias
            pattern = kernels.pop(0) if kernels else None
            steps.append(
                Step(
                    "affine",
                    shape,
                    rescales,
                    matrix_of(partial(op, weight=module.weight.detach()), shape),
                    bias.detach(),
                    None if pattern is None else matrix_of(partial(op, weight=pattern), shape),
                )
            )
        elif isinstance(module, nn.ReLU):
            steps.append(Step("relu", shape, rescales))
        elif isinstance(module, nn.MaxPool2d):
            steps.append(Step("maxpool", shape, rescales, pool=module))
        elif isinstance(module, nn.AdaptiveAvgPool2d):
            steps.append(Step("avgpool", shape, rescales, matrix_of(module, shape)))
        elif isinstance(module, (nn.Flatten, nn.Dropout)):
            steps.append(Step("identity", shape, rescales))
        else:
            raise AssertionError(f"no reference for {module}")
        shape = out_shape
    return steps


def flat_forward(steps: list[Step], x: Tensor) -> list[Tensor]:
    """The flat input of every step, and the output last."""
    values = [x.reshape(len(x), -1)]
    for step in steps:
        a = values[-1]
        if step.kind == "affine":
            values.append(a @ step.matrix.T + step.bias)
        elif step.kind == "relu":
            values.append(a.clamp(min=0))
        elif step.kind == "maxpool":
            pooled = step.pool(a.reshape(len(a), *step.in_shape))
            values.append(pooled.reshape(len(a), -1))
        elif step.kind == "avgpool":
            values.append(a @ step.matrix.T)
        else:
            values.append(a)
    return values


def maxpool_gradient(step: Step, a: Tensor, relevance: Tensor) -> Tensor:
    """Each pooled value's relevance to the input position that won its window."""
    channels, height, width = step.in_shape
    pool = step.pool
    _, winners = F.max_pool2d(
        a.reshape(len(a), *step.in_shape),
        pool.kernel_size,
        pool.stride,
        pool.padding,
        return_indices=True,
    )
    offsets = torch.arange(channels)[None, :, None, None] * height * width
    flat_index = (winners + offsets).reshape(len(a), -1)
    return torch.zeros_like(a).scatter_add(1, flat_index, relevance)


def unit_max(relevance: Tensor) -> Tensor:
    largest = relevance.abs().amax(1, keepdim=True)
    return (relevance / torch.where(largest == 0, 1.0, largest)).clamp(-1, 1)


def torchlrp_affine(rule: str, a: Tensor, M: Tensor, b: Tensor, P, R: Tensor) -> Tensor:
    if rule in RHO:
        gamma, epsilon = RHO[rule]
        M_rho, b_rho = M + gamma * M * M.clamp(min=0), b + gamma * b * b.clamp(min=0)
        z = a @ M_rho.T + b_rho
        return a * ((R / (z + epsilon * torch.where(z > 0, 1.0, -1.0))) @ M_rho)
    if rule in ALPHA_BETA:
        alpha, beta = ALPHA_BETA[rule]
        M_pos, M_neg = torch.where(M > 0, M, 0.0), torch.where(M <= 0, M, 0.0)
        a_pos, a_neg = torch.where(a > 0, a, 0.0), torch.where(a <= 0, a, 0.0)

        def part(X1, X2):
            Z = X1 @ M_pos.T + X2 @ M_neg.T
            s = R / (Z + 1e-6 * (Z == 0))
            return X1 * (s @ M_pos) + X2 * (s @ M_neg)

        return alpha * part(a_pos, a_neg) - beta * part(a_neg, a_pos)
    if rule == "patternnet":
        return R @ P
    if rule == "patternattribution":
        return R @ (P * M)
    return R @ M  # gradient


def torchlrp_reference(steps: list[Step], x: Tensor, rule: str) -> Tensor:
    values = flat_forward(steps, x)
    output = values[-1]
    R = F.one_hot(output.argmax(1), output.shape[1]).double()
    for step, a, z in zip(
        reversed(steps), reversed(values[:-1]), reversed(values[1:]), strict=True
    ):
        if step.kind == "affine":
            R = torchlrp_affine(rule, a, step.matrix, step.bias, step.pattern_matrix, R)
        elif step.kind == "relu":
            R = R * (z > 0)
        elif step.kind == "maxpool":
            R = maxpool_gradient(step, a, R)
        elif step.kind == "avgpool":
            R = R @ step.matrix
        if rule in PATTERN_RULES and step.rescales:
            R = unit_max(R)
    return R.reshape(x.shape)


# ------------------------------------------------------------------------------- models


def mnist_like(channels: int = 3) -> nn.Sequential:
    """TorchLRP's MNIST architecture, narrow, on 8x8 inputs."""
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, 1, 1), nn.ReLU(), nn.Conv2d(channels, 4, 3, 1, 1), nn.ReLU(),
        nn.MaxPool2d(2, 2), nn.Flatten(), nn.Linear(4 * 4 * 4, 6), nn.ReLU(), nn.Linear(6, 5),
    )  # fmt: skip


class SmallVGG(nn.Module):
    """torchvision's VGG layout: features, adaptive average pooling, flatten, classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
        )  # fmt: skip
        self.avgpool = nn.AdaptiveAvgPool2d((3, 3))  # 2x2 -> 3x3: overlapping windows
        self.classifier = nn.Sequential(
            nn.Linear(4 * 3 * 3, 8), nn.ReLU(True), nn.Dropout(), nn.Linear(8, 5)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    def as_list(self) -> list[nn.Module]:
        """The module list of TorchLRP's convert_vgg (a Flatten after the pooling)."""
        return [*self.features, self.avgpool, nn.Flatten(), *self.classifier]


def images(shape: tuple[int, ...], seed: int) -> Tensor:
    """Inputs in [0, 1] with 60 % zeros, as on MNIST's background."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=generator, dtype=torch.float64)
    return torch.where(torch.rand(shape, generator=generator) < 0.6, 0.0, x)


def random_patterns(model: nn.Module, seed: int) -> list[Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(m.weight.shape, generator=generator, dtype=torch.float64)
        for m in model.modules()
        if isinstance(m, (nn.Linear, nn.Conv2d))
    ]


def assert_matches(ours: Tensor, expected: Tensor) -> None:
    scale = expected.abs().max()
    assert scale > 0
    assert float((ours - expected).abs().max() / scale) <= 1e-10  # as tests/reference.py


@pytest.fixture(scope="module")
def mnist():
    torch.manual_seed(0)
    return mnist_like().double().eval(), images((3, 1, 8, 8), seed=1)


@pytest.mark.parametrize("rule", ALL_RULES)
def test_each_torchlrp_rule_equals_its_matrix_form_on_the_mnist_architecture(mnist, rule):
    model, x = mnist
    patterns = random_patterns(model, seed=2) if rule in PATTERN_RULES else None
    steps = reference_steps(list(model), x.shape[1:], patterns)
    ours = torchlrp.lrp(model, x, rule, pattern=patterns)
    assert_matches(ours, torchlrp_reference(steps, x, rule))
    if rule in PATTERN_RULES:  # rescaled at the input: each sample's largest magnitude is 1
        assert torch.allclose(ours.abs().flatten(1).amax(1), torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("rule", ["epsilon", "alpha2beta1", "gamma", "patternattribution"])
def test_vgg_layout_pools_by_gradient_and_relus_by_their_derivative(rule):
    torch.manual_seed(3)
    model, x = SmallVGG().double().eval(), images((2, 3, 8, 8), seed=4)
    patterns = random_patterns(model, seed=5) if rule in PATTERN_RULES else None
    steps = reference_steps(model.as_list(), x.shape[1:], patterns)
    expected = torchlrp_reference(steps, x, rule)
    assert_matches(torchlrp.lrp(model, x, rule, pattern=patterns), expected)
    # lrpfn's own rules pool by their rule and pass relevance through ReLUs: not these numbers
    with torch.no_grad():
        start = F.one_hot(model(x).argmax(1), 5).double()
    if rule in PATTERN_RULES:
        own = lrpfn.lrp(
            model, x, rule, output_relevance=start, pattern=Patterns.from_list(model, patterns)
        )
    else:
        own = lrpfn.lrp(model, x, rule, output_relevance=start)
    assert (own - expected).abs().max() > 1e-3 * expected.abs().max()


def test_the_rules_are_computed_in_the_models_precision_with_torchlrps_float32_constants(mnist):
    model, x = mnist
    single = copy.deepcopy(model).float()
    steps = reference_steps(list(model), x.shape[1:])
    ours = torchlrp.lrp(single, x.float(), "epsilon")
    assert ours.dtype == torch.float32
    expected = torchlrp_reference(steps, x, "epsilon")
    assert float((ours.double() - expected).abs().max() / expected.abs().max()) < 1e-4
    assert torchlrp.TORCHLRP_EPSILON == FLOAT32_TENTH != 0.1


# ------------------------------------------------- the seed README's example, both ways


# Stand-ins with TorchLRP's interface, `forward(input, explain=False, rule=...)`: the tests
# do not import TorchLRP, and `convert` recognises TorchLRP's modules by that interface.


class LrpLinear(nn.Linear):
    def forward(self, input, explain=False, rule="epsilon", **kwargs):
        if explain:
            raise NotImplementedError("stand-in: only the plain forward")
        return super().forward(input)


class LrpConv2d(nn.Conv2d):
    def forward(self, input, explain=False, rule="epsilon", **kwargs):
        if explain:
            raise NotImplementedError("stand-in: only the plain forward")
        return super().forward(input)


class LrpMaxPool2d(nn.MaxPool2d):
    def forward(self, input, explain=False, rule="epsilon", **kwargs):
        return super().forward(input)


class LrpSequential(nn.Sequential):
    def forward(self, input, explain=False, rule="epsilon", pattern=None):
        if explain:  # a branch on an argument: torch.fx cannot trace it
            raise NotImplementedError("stand-in: only the plain forward")
        return super().forward(input)


def seed_readme_model(channels: int = 8) -> LrpSequential:
    """The seed README's usage example (32 channels there; `channels` here for speed)."""
    return LrpSequential(
        LrpConv2d(1, channels, 3, 1, 1),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Flatten(),
        LrpLinear(14 * 14 * channels, 10),
    )


@pytest.fixture(scope="module")
def seed_example():
    torch.manual_seed(6)
    return seed_readme_model().double().eval(), images((2, 1, 28, 28), seed=7)


def test_seed_readme_example_with_torchlrp_module_gives_torchlrps_numbers(seed_example):
    model, x = seed_example
    # lrpfn's own entry point captures lrp.Sequential (fx fails on its `explain` branch,
    # torch.export does not) and gives the literature's rule, as for the converted model
    own = lrpfn.lrp(model, x, "alpha2beta1")
    torch.testing.assert_close(own, lrpfn.lrp(torchlrp.convert(model), x, "alpha2beta1"))
    steps = reference_steps(list(torchlrp.convert(model)), x.shape[1:])
    explanation = torchlrp.lrp(model, x, "alpha2beta1")
    assert_matches(explanation, torchlrp_reference(steps, x, "alpha2beta1"))


def literature_key(rule: str, a, M, b, R, epsilon=1e-6):
    """lrpfn's keys: generalized LRP-gamma (W + gamma W+) and alpha-beta, lrpfn's
    stabilizer z + eps sign(z) (sign(0) = +1) everywhere; alpha-beta without bias."""
    st = lambda z: z + epsilon * torch.where(z >= 0, 1.0, -1.0)  # noqa: E731
    a_pos, a_neg = a.clamp(min=0), a.clamp(max=0)
    M_pos, M_neg = M.clamp(min=0), M.clamp(max=0)
    if rule == "gamma":
        g = 0.1
        M_up, M_down = M + g * M_pos, M + g * M_neg
        b_up, b_down = b + g * b.clamp(min=0), b + g * b.clamp(max=0)
        z = a @ M.T + b
        s_up = (z > 0) * R / st(a_pos @ M_up.T + b_up + a_neg @ M_down.T)
        s_down = (z < 0) * R / st(a_pos @ M_down.T + b_down + a_neg @ M_up.T)
        return a_pos * (s_up @ M_up + s_down @ M_down) + a_neg * (s_up @ M_down + s_down @ M_up)
    s_pos = R / st(a_pos @ M_pos.T + a_neg @ M_neg.T)
    s_neg = R / st(a_pos @ M_neg.T + a_neg @ M_pos.T)
    positive = a_pos * (s_pos @ M_pos) + a_neg * (s_pos @ M_neg)
    negative = a_pos * (s_neg @ M_neg) + a_neg * (s_neg @ M_pos)
    return 2.0 * positive - 1.0 * negative


@pytest.mark.parametrize("rule", ["gamma", "alpha2beta1"])
def test_seed_readme_example_with_lrpfns_keys_gives_the_literatures_rules(seed_example, rule):
    model, x = seed_example
    plain = torchlrp.convert(model)
    steps = reference_steps(list(plain), x.shape[1:])
    values = flat_forward(steps, x)
    output = values[-1]
    R = F.one_hot(output.argmax(1), 10).double() * output  # lrpfn starts from the logit
    for step, a in zip(reversed(steps), reversed(values[:-1]), strict=True):
        if step.kind == "affine":
            R = literature_key(rule, a, step.matrix, step.bias, R)
        elif step.kind == "maxpool":
            R = maxpool_gradient(step, a, R)  # ReLU and flatten pass relevance unchanged
    expected = R.reshape(x.shape)
    assert_matches(lrpfn.lrp(plain, x, rule), expected)
    assert (torchlrp.lrp(plain, x, rule) - expected).abs().max() > 1e-3 * expected.abs().max()


# ------------------------------------------------------------------------------ convert


def test_convert_gives_plain_torch_modules_with_the_same_state_dict_and_output(seed_example):
    model, x = seed_example
    before = {key: value.clone() for key, value in model.state_dict().items()}
    plain = torchlrp.convert(model)
    assert type(plain) is nn.Sequential
    assert [type(m) for m in plain] == [nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Linear]
    assert not torchlrp.has_torchlrp_modules(plain)
    assert plain.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(plain.state_dict()[key], value)
        assert torch.equal(value, before[key])  # the TorchLRP model is untouched
    assert type(model[0]) is LrpConv2d and model[0].weight is not plain[0].weight
    assert not plain.training
    with torch.no_grad():
        assert torch.equal(plain(x), model(x))
    checkpoint = torchlrp.convert(seed_readme_model()).double()
    checkpoint.load_state_dict(model.state_dict())  # TorchLRP checkpoints load as they are
    assert torch.equal(checkpoint[4].weight, model[4].weight)


def test_convert_keeps_conv_and_pool_hyperparameters():
    model = LrpSequential(
        LrpConv2d(2, 4, (3, 5), stride=2, padding=(1, 2), dilation=1, groups=2, bias=False),
        LrpMaxPool2d(3, stride=2, padding=1, ceil_mode=True),
    )
    plain = torchlrp.convert(model)
    conv, pool = plain[0], plain[1]
    assert (conv.kernel_size, conv.stride, conv.padding, conv.groups) == ((3, 5), (2, 2), (1, 2), 2)
    assert conv.bias is None and type(pool) is nn.MaxPool2d
    assert (pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode) == (3, 2, 1, True)
    x = torch.randn(2, 2, 9, 9)
    assert torch.equal(plain(x), model(x))


# ----------------------------------------------------------------------- pattern files


def test_a_torchlrp_pattern_file_round_trips_into_patterns_keyed_by_node(tmp_path, mnist):
    model, x = mnist
    patterns = random_patterns(model, seed=8)
    path = tmp_path / "pattern_pos.pkl"
    with open(path, "wb") as file:  # as TorchLRP's examples/utils.py:store_patterns writes it
        pickle.dump([p.float().numpy() for p in patterns], file)
    loaded = torchlrp.load_patterns(path, model)
    names = list(lrpfn.prepare(model, lrpfn.rules.Gradient()).rules)
    assert list(loaded.keys()) == [name for name in names if name in loaded]
    assert len(loaded) == 4
    for name, pattern in zip(loaded.keys(), patterns, strict=True):
        assert torch.equal(loaded[name], pattern.float())
    direct = torchlrp.lrp(model, x, "patternnet", pattern=[p.float() for p in patterns])
    assert torch.equal(torchlrp.lrp(model, x, "patternnet", pattern=loaded), direct)
    rule = lrpfn.rules.PatternAttribution(loaded)  # lrpfn's own rule reads them too
    assert lrpfn.lrp(model, x, rule).shape == x.shape


def test_a_pattern_file_with_anything_but_arrays_is_refused_without_running_it(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("this must not run",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps([Exploit()]))
    with pytest.raises(InvalidInputError, match=r"builtins\.print"):
        torchlrp.load_patterns(path, mnist_like())


def test_patterns_accepts_a_list_for_a_model_and_names_the_mismatch(mnist):
    model, _ = mnist
    patterns = random_patterns(model, seed=9)
    with pytest.raises(InvalidRuleError, match="from_list"):
        Patterns(patterns)
    named = Patterns.from_list(model, [p.numpy() for p in patterns])
    assert list(named.keys()) == ["_0", "_2", "_6", "_8"]
    with pytest.raises(InvalidRuleError, match="got 3 patterns for a model with 4"):
        Patterns.from_list(model, patterns[:3])
    with pytest.raises(InvalidRuleError, match="pattern 1 has shape"):
        Patterns.from_list(model, [patterns[0], patterns[0], *patterns[2:]])


# ------------------------------------------------------------------------------ errors


def test_errors_name_the_rule_the_pattern_and_the_batchnorm(mnist):
    model, x = mnist
    with pytest.raises(InvalidRuleError, match="TorchLRP's rules are gradient, epsilon"):
        torchlrp.lrp(model, x, "zplus")
    with pytest.raises(InvalidRuleError, match="needs pattern="):
        torchlrp.lrp(model, x, "patternnet")
    with pytest.raises(InvalidRuleError, match="takes no pattern"):
        torchlrp.lrp(model, x, "epsilon", pattern=random_patterns(model, seed=0))
    with_norm = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(72, 3))
    with pytest.raises(UnsupportedNodeError, match="BatchNorm"):
        torchlrp.lrp(with_norm.double().eval(), x, "epsilon")
    with pytest.raises(InvalidRuleError, match="epsilon"):
        torchlrp.TorchLRPGamma(gamma=0.1, epsilon=0.0)


def test_lrpfns_gradient_key_with_a_one_hot_start_is_the_input_gradient(mnist):
    model, x = mnist
    x = x.clone().requires_grad_(True)
    output = model(x)
    output[torch.arange(3), output.argmax(1)].sum().backward()
    start = F.one_hot(output.argmax(1), 5).double().detach()
    assert_matches(lrpfn.lrp(model, x.detach(), "gradient", output_relevance=start), x.grad)
    assert_matches(torchlrp.lrp(model, x.detach(), "gradient"), x.grad)


def test_torchlrp_stabilizes_an_exactly_zero_output_downwards():
    # z = W a + b = (1 - 1 + 0, 0 + 0 - 1) = (0, -1) for a = (1, 1): the argmax is output 0
    # with z = 0, where TorchLRP divides by z - eps (its sign is -1 at 0), so
    # R_in = a * W[0] / (0 - eps) = (1, -1) / -eps; lrpfn's Epsilon divides by z + eps.
    model = nn.Sequential(nn.Linear(2, 2)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -1.0], [0.0, 0.0]]))
        model[0].bias.copy_(torch.tensor([0.0, -1.0]))
    x = torch.ones(1, 2, dtype=torch.float64)
    eps = FLOAT32_TENTH
    expected = torch.tensor([[-1.0 / eps, 1.0 / eps]], dtype=torch.float64)
    assert torch.equal(torchlrp.lrp(model, x, "epsilon"), expected)
    start = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert torch.equal(
        lrpfn.lrp(model, x, lrpfn.rules.Epsilon(eps), output_relevance=start), -expected
    )


def test_a_model_in_training_mode_is_refused_before_it_runs():
    model = SmallVGG().double()  # dropout in training mode: the argmax would be random
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(lrpfn.errors.TrainingModeError):
        torchlrp.lrp(model, images((1, 3, 8, 8), seed=0), "epsilon")
    assert calls == []


def test_a_pattern_file_written_by_numpy_1_loads_for_a_torchlrp_model(tmp_path, seed_example):
    model, x = seed_example  # a TorchLRP-style model: load_patterns converts it to name nodes
    patterns = random_patterns(model, seed=10)
    written = pickle.dumps([p.numpy() for p in patterns], protocol=2)
    # NumPy 1.x names its reconstructor numpy.core.multiarray (NumPy 2: numpy._core)
    written = written.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in written
    path = tmp_path / "mnist_pattern_all.pkl"
    path.write_bytes(written)
    loaded = torchlrp.load_patterns(path, model)
    assert list(loaded.keys()) == ["_0", "_4"]
    assert all(torch.equal(loaded[n], p) for n, p in zip(loaded.keys(), patterns, strict=True))
    direct = torchlrp.lrp(model, x, "patternattribution", pattern=patterns)
    assert torch.equal(torchlrp.lrp(model, x, "patternattribution", pattern=loaded), direct)


def test_lrpfns_pattern_keys_point_a_list_of_patterns_to_from_list(mnist):
    model, x = mnist
    with pytest.raises(InvalidRuleError, match=r"Patterns\.from_list"):
        lrpfn.lrp(model, x, "patternnet", pattern=random_patterns(model, seed=11))
