"""Hypothesis strategies for small float64 networks and their inputs.

Everything drawn is a *spec*: a small frozen value with a readable repr (layer types,
shapes, hyperparameters and a seed), so a failing example that Hypothesis prints can be
rebuilt exactly with `spec.build()` / `spec.make(...)`. Weights are never drawn one by
one: a `torch.Generator` seeded with a drawn integer fills them (`initialize`).

- `sequential_networks(...)`: Conv1d/2d/3d and Linear stacks with random kernel sizes,
  strides, padding (zeros, "same", reflect, replicate, circular), dilation, groups,
  optional bias, max/avg/adaptive pooling, activations and a flatten before the dense
  head; output `(batch, classes)`.
- `residual_networks(...)`: a stem convolution, then blocks `x + f(x)`,
  `cat([f(x), g(x)])` and `split`/`chunk` + `cat`, optional BatchNorm (after a conv:
  folded; after an addition: kept as a per-channel affine node) with random statistics.
- `inputs(...)`: a batch of 1-3 samples of mixed sign, non-negative, strictly inside a
  box, or all zero, at unit, tiny (1e-30), large (1e30) or mixed magnitudes.
- `layer_cases(...)`: one `lrpfn.layers.Layer` built by hand with its batched
  activations and relevance, for calling a rule directly.
- `cases(networks, inputs)`: a built model (eval mode, float64 unless asked) and input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import Tensor, nn

from lrpfn import composites, rules
from lrpfn.layers import ChannelAffine, Convolution, Dense, Layer, LinearFunction, Sum

# Activations by the property their conservation proofs need.
POSITIVE_SUPPORT = ("ReLU", "ReLU6")
"""act(z) != 0 only where z > 0 (then z > 0 implies z+ > 0: what z+ and alpha-beta need)."""
ZERO_PRESERVING = (
    *POSITIVE_SUPPORT,
    "LeakyReLU",
    "PReLU",
    "Tanh",
    "ELU",
    "CELU",
    "SELU",
    "GELU",
    "SiLU",
    "Mish",
    "Hardtanh",
    "Hardswish",
    "Softsign",
    "Tanhshrink",
)
"""act(0) = 0 (then a unit that receives relevance under LRP-0 has z != 0)."""
NOT_ZERO_PRESERVING = ("Sigmoid", "Softplus", "LogSigmoid")
ALL_ACTIVATIONS = ZERO_PRESERVING + NOT_ZERO_PRESERVING
POOLINGS = ("max", "avg", "adaptive_max", "adaptive_avg")
PADDING_MODES = ("zeros", "same", "reflect", "replicate", "circular")
SEEDS = st.integers(0, 2**32 - 1)


@dataclass(frozen=True)
class LayerSpec:
    """One `torch.nn` layer: its class name and keyword arguments."""

    kind: str
    kwargs: tuple[tuple[str, Any], ...] = ()

    def build(self) -> nn.Module:
        return getattr(nn, self.kind)(**dict(self.kwargs))

    def get(self, name: str, default: Any = None) -> Any:
        return dict(self.kwargs).get(name, default)

    def __repr__(self) -> str:
        return f"nn.{self.kind}({', '.join(f'{k}={v!r}' for k, v in self.kwargs)})"


@dataclass(frozen=True)
class Edit:
    """An adversarial change to the `index`-th affine layer after initialization:
    "dead" (bias -1e3: its ReLUs never fire on unit-scale inputs), "zero" (all weights
    zero), "zero_units" (the weights of every other output unit zero), "sparse" (about
    half of the weights zero)."""

    index: int
    kind: str


@dataclass(frozen=True)
class NetworkSpec:
    """A sequential network: `nn.Sequential(*layers)` for inputs of `input_shape`."""

    layers: tuple[LayerSpec, ...]
    input_shape: tuple[int, ...]
    seed: int
    edits: tuple[Edit, ...] = ()
    checkerboard: bool = False

    @property
    def activations(self) -> tuple[str, ...]:
        return tuple(layer.kind for layer in self.layers if layer.kind in ALL_ACTIVATIONS)

    @property
    def has_bias(self) -> bool:
        affine = [layer for layer in self.layers if layer.kind.startswith(("Conv", "Linear"))]
        return any(layer.get("bias", True) for layer in affine) or any(
            edit.kind == "dead" for edit in self.edits
        )

    def build(self) -> nn.Module:
        model = nn.Sequential(*(layer.build() for layer in self.layers))
        return finish(model, self.seed, self.edits, self.checkerboard)


def finish(
    model: nn.Module, seed: int, edits: tuple[Edit, ...] = (), checkerboard: bool = False
) -> nn.Module:
    """`model` in float64 eval mode with seeded random parameters (signs in a
    checkerboard if asked, see `checkerboard_signs`), then `edits` applied."""
    model = model.double().eval()
    initialize(model, seed)
    if checkerboard:
        checkerboard_signs(model)
    apply_edits(model, edits)
    return model


def checkerboard_signs(model: nn.Module) -> None:
    r"""Give each affine weight the signs $\sigma_j (-1)^{i_1 + i_2 + \ldots}$ over its
    input-side indices (input feature, or input channel and kernel position), with a
    random sign $\sigma_j$ per output unit: any two neighbouring entries of a window have
    opposite signs, so every window with at least two real inputs mixes positive and
    negative weights (what alpha-beta's conservation needs)."""
    with torch.no_grad():
        for module in _affine_modules(model):
            weight = module.weight
            grids = torch.meshgrid(*(torch.arange(n) for n in weight.shape[1:]), indexing="ij")
            parity = 1.0 - 2.0 * (sum(grids) % 2).to(weight.dtype)
            row_sign = torch.where(weight.flatten(1)[:, 0] < 0, -1.0, 1.0).to(weight.dtype)
            shape = (-1,) + (1,) * (weight.ndim - 1)
            weight.copy_(weight.abs() * parity * row_sign.reshape(shape))


def _affine_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]


def initialize(model: nn.Module, seed: int) -> None:
    """Fill every parameter and BatchNorm statistic from one seeded generator.

    Weights: normal with standard deviation 1.4 / sqrt(fan-in) (activations stay of unit
    scale); biases: normal(0, 0.5); BatchNorm: running mean normal(0, 0.5), running
    variance uniform(0.5, 2), scale +-uniform(0.5, 1.5), shift normal(0, 0.5); PReLU
    slopes uniform(0, 0.5). A BatchNorm with `affine=False` (no scale, no shift) gets a
    zero running mean and a random running variance: a pure scale, which adds no bias.
    """
    generator = torch.Generator().manual_seed(seed)

    def normal(shape, std):
        return torch.randn(shape, generator=generator, dtype=torch.float64) * std

    def uniform(shape, low, high):
        return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(normal(module.weight.shape, 1.4 / math.sqrt(fan_in)))
                if module.bias is not None:
                    module.bias.copy_(normal(module.bias.shape, 0.5))
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                channels = module.num_features
                module.running_var.copy_(uniform(channels, 0.5, 2.0))
                if module.affine:
                    sign = torch.where(uniform(channels, 0, 1) < 0.2, -1.0, 1.0)
                    module.weight.copy_(sign * uniform(channels, 0.5, 1.5))
                    module.bias.copy_(normal(channels, 0.5))
                    module.running_mean.copy_(normal(channels, 0.5))
                else:
                    module.running_mean.zero_()
            elif isinstance(module, nn.PReLU):
                module.weight.copy_(uniform(module.weight.shape, 0.0, 0.5))


def apply_edits(model: nn.Module, edits: tuple[Edit, ...]) -> None:
    """Apply the adversarial `edits` (see `Edit`) to the affine layers of `model`."""
    affine = _affine_modules(model)
    with torch.no_grad():
        for edit in edits:
            module = affine[edit.index % len(affine)]
            weight = module.weight
            if edit.kind == "dead":
                out = weight.shape[0]
                if module.bias is None:
                    module.bias = nn.Parameter(torch.zeros(out, dtype=weight.dtype))
                module.bias.fill_(-1e3)
            elif edit.kind == "zero":
                weight.zero_()
            elif edit.kind == "zero_units":
                weight[::2] = 0.0
            elif edit.kind == "sparse":
                generator = torch.Generator().manual_seed(edit.index)
                mask = torch.rand(weight.shape, generator=generator) < 0.5
                weight[mask] = 0.0


# ---------------------------------------------------------------------------- shapes


def _covered(length: int, kernel: int, stride: int, left: int, dilation: int, out: int) -> bool:
    """Whether every output window of a 1-d convolution sees at least one real input."""
    return all(
        any(0 <= o * stride - left + t * dilation < length for t in range(kernel))
        for o in range(out)
    )


def _conv_length(length, kernel, stride, padding, dilation) -> int:
    return (length + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@st.composite
def _convolution(
    draw, dims: int, channels: int, spatial: tuple, bias, padding_modes, min_fan_in: int = 1
):
    """A ConvNd layer valid for `channels` x `spatial` inputs whose every output window
    sees at least one real (non-padding) input and at least `min_fan_in` input channels
    per group; returns (spec, out channels, out spatial)."""
    groups = draw(
        st.sampled_from([g for g in (1, 2, 3) if channels % g == 0 and channels // g >= min_fan_in])
    )
    per_group = max(1, -(-min_fan_in // groups))  # out channels >= min_fan_in
    out_channels = groups * draw(st.integers(per_group, max(per_group, 4 // groups)))
    mode = draw(st.sampled_from(padding_modes))
    kernel, dilation, stride, padding, out_spatial = [], [], [], [], []
    for length in spatial:
        d = draw(st.integers(1, 2))
        k = draw(st.integers(1, 3))
        effective = (k - 1) * d + 1
        if mode == "same":
            s = 1
            left = (effective - 1) // 2
            p, out = left, length
            if not _covered(length, k, s, left, d, out):
                k, d, p = 1, 1, 0
        else:
            s = draw(st.integers(1, 2))
            low = max(0, math.ceil((effective - length) / 2))
            high = (k - 1) * d
            if mode == "reflect":
                high = min(high, length - 1)
            elif mode == "circular":
                high = min(high, length)
            valid = [
                p
                for p in range(low, high + 1)
                if mode != "zeros" or _covered(length, k, s, p, d, _conv_length(length, k, s, p, d))
            ]
            if not valid:  # no padding fits: a 1-wide kernel always does
                k, d, valid = 1, 1, [0]
            p = draw(st.sampled_from(valid))
            out = _conv_length(length, k, s, p, d)
        kernel.append(k)
        dilation.append(d)
        stride.append(s)
        padding.append(p)
        out_spatial.append(out)
    if mode == "same":
        padding_arg: Any = "same" if any(k > 1 for k in kernel) else 0
        padding_mode = "zeros"
    else:
        padding_arg, padding_mode = tuple(padding), mode
    has_bias = draw(st.booleans()) if bias is None else bias
    spec = LayerSpec(
        f"Conv{dims}d",
        (
            ("in_channels", channels),
            ("out_channels", out_channels),
            ("kernel_size", tuple(kernel)),
            ("stride", tuple(stride)),
            ("padding", padding_arg),
            ("dilation", tuple(dilation)),
            ("groups", groups),
            ("bias", has_bias),
            ("padding_mode", padding_mode),
        ),
    )
    return spec, out_channels, tuple(out_spatial)


@st.composite
def _pooling(draw, dims: int, spatial: tuple, poolings):
    """A pooling layer for `spatial` inputs; returns (spec, out spatial)."""
    kind = draw(st.sampled_from(poolings))
    if kind.startswith("adaptive"):
        size = tuple(draw(st.integers(1, length)) for length in spatial)
        name = "AdaptiveMaxPool" if kind == "adaptive_max" else "AdaptiveAvgPool"
        return LayerSpec(f"{name}{dims}d", (("output_size", size),)), size
    kernel, stride, padding, out = [], [], [], []
    for length in spatial:
        k = draw(st.integers(1, min(3, length)))
        s = draw(st.integers(1, k))
        p = draw(st.integers(0, k // 2))
        kernel.append(k)
        stride.append(s)
        padding.append(p)
        out.append((length + 2 * p - k) // s + 1)
    arguments = [("kernel_size", tuple(kernel)), ("stride", tuple(stride))]
    arguments.append(("padding", tuple(padding)))
    if kind == "avg":
        arguments.append(("count_include_pad", draw(st.booleans())))
        return LayerSpec(f"AvgPool{dims}d", tuple(arguments)), tuple(out)
    return LayerSpec(f"MaxPool{dims}d", tuple(arguments)), tuple(out)


@st.composite
def sequential_networks(
    draw,
    *,
    dims: tuple[int, ...] = (0, 1, 2, 3),
    bias: bool | None = None,
    activations: tuple[str, ...] = ALL_ACTIVATIONS,
    activate_every_layer: bool = False,
    poolings: tuple[str, ...] = POOLINGS,
    padding_modes: tuple[str, ...] = PADDING_MODES,
    max_convolutions: int = 3,
    checkerboard: bool = False,
    min_fan_in: int = 1,
) -> NetworkSpec:
    """A `NetworkSpec` for `nn.Sequential(conv blocks..., Flatten, Linear...)`.

    Arguments:
        dims: spatial dimensions to draw from (0: a dense network on feature vectors).
        bias: True/False for every affine layer, None to draw per layer.
        activations: the activation classes to draw from.
        activate_every_layer: every affine layer but the last is followed by an
            activation (with pooling, if any, after it); otherwise about one in four is not.
        poolings: pooling kinds to draw from ("max", "avg", "adaptive_max", "adaptive_avg").
        padding_modes: convolution padding modes ("zeros", "same", "reflect", ...).
        max_convolutions: the most convolutions (3d networks have at most 2).
        checkerboard: weights with checkerboard signs (see `checkerboard_signs`).
        min_fan_in: the fewest input features of a dense layer and input channels per
            group of a convolution (so each kernel position sees that many inputs).
    """
    dim = draw(st.sampled_from(dims))
    layers: list[LayerSpec] = []

    def activation():
        if activate_every_layer or draw(st.integers(0, 3)) > 0:
            layers.append(LayerSpec(draw(st.sampled_from(activations))))

    def draw_bias() -> bool:
        return draw(st.booleans()) if bias is None else bias

    if dim == 0:
        width = draw(st.integers(min_fan_in, 8))
        input_shape: tuple[int, ...] = (width,)
    else:
        channels = draw(st.integers(min_fan_in, 3))
        low, high = {1: (3, 10), 2: (3, 6), 3: (2, 4)}[dim]
        spatial = tuple(draw(st.integers(low, high)) for _ in range(dim))
        input_shape = (channels, *spatial)
        count = draw(st.integers(1, max_convolutions if dim < 3 else min(2, max_convolutions)))
        for _ in range(count):
            conv, channels, spatial = draw(
                _convolution(dim, channels, spatial, bias, padding_modes, min_fan_in)
            )
            layers.append(conv)
            activation()
            if poolings and draw(st.booleans()):
                pool, spatial = draw(_pooling(dim, spatial, poolings))
                layers.append(pool)
        layers.append(LayerSpec("Flatten"))
        width = channels * math.prod(spatial)
    for _ in range(draw(st.integers(0, 2))):
        out = draw(st.integers(min_fan_in, 8))
        layers.append(
            LayerSpec(
                "Linear", (("in_features", width), ("out_features", out), ("bias", draw_bias()))
            )
        )
        activation()
        width = out
    classes = draw(st.integers(2, 4))
    layers.append(
        LayerSpec(
            "Linear", (("in_features", width), ("out_features", classes), ("bias", draw_bias()))
        )
    )
    return NetworkSpec(tuple(layers), input_shape, draw(SEEDS), checkerboard=checkerboard)


# ---------------------------------------------------------------------------- residual


@dataclass(frozen=True)
class BlockSpec:
    """One block of a residual network (see `ResidualNet`).

    kind: "residual" (`x + f(x)` or `torch.add(x, f(x))`, f = conv, [BN], act, conv,
    [BN]; optionally a BatchNorm after the sum, which cannot be folded), "concat"
    (`cat([conv_a(x), conv_b(x)])` with [BN] after each conv) or "split"
    (`torch.split`/`chunk` along channels, a conv on one part, `cat` back in either order).
    """

    kind: str
    kernel: int = 3
    batch_norm: bool = False
    norm_after_add: bool = False
    use_torch_add: bool = False
    channels: tuple[int, ...] = ()  # concat: (a, b); split: (first part, rest)
    use_chunk: bool = False
    conv_first: bool = True
    activation: str = "ReLU"


@dataclass(frozen=True)
class ResidualSpec:
    dims: int
    input_shape: tuple[int, ...]
    width: int
    blocks: tuple[BlockSpec, ...]
    classes: int
    bias: bool
    batch_norm_bias: bool  # False: BatchNorm with zero running mean and no shift
    seed: int
    edits: tuple[Edit, ...] = ()

    @property
    def activations(self) -> tuple[str, ...]:
        return ("ReLU", *(block.activation for block in self.blocks))

    @property
    def has_bias(self) -> bool:
        norms = any(block.batch_norm or block.norm_after_add for block in self.blocks)
        dead = any(edit.kind == "dead" for edit in self.edits)
        return self.bias or dead or (self.batch_norm_bias and norms)

    def build(self) -> nn.Module:
        return finish(ResidualNet(self), self.seed, self.edits)


def _conv(dims: int, inp: int, out: int, kernel: int, bias: bool) -> nn.Module:
    return getattr(nn, f"Conv{dims}d")(inp, out, kernel, padding=kernel // 2, bias=bias)


def _norm(dims: int, channels: int, with_bias: bool) -> nn.Module:
    return getattr(nn, f"BatchNorm{dims}d")(channels, affine=with_bias)


class Block(nn.Module):
    def __init__(self, spec: BlockSpec, dims: int, width: int, bias: bool, bn_bias: bool):
        super().__init__()
        self.spec = spec
        k = spec.kernel
        if spec.kind == "residual":
            self.conv1 = _conv(dims, width, width, k, bias)
            self.conv2 = _conv(dims, width, width, k, bias)
            if spec.batch_norm:
                self.bn1, self.bn2 = _norm(dims, width, bn_bias), _norm(dims, width, bn_bias)
            if spec.norm_after_add:
                self.post = _norm(dims, width, bn_bias)
        elif spec.kind == "concat":
            self.conv_a = _conv(dims, width, spec.channels[0], k, bias)
            self.conv_b = _conv(dims, width, spec.channels[1], k, bias)
            if spec.batch_norm:
                self.bn_a = _norm(dims, spec.channels[0], bn_bias)
                self.bn_b = _norm(dims, spec.channels[1], bn_bias)
        else:
            first = spec.channels[0]
            self.conv = _conv(dims, first, first, k, bias)
        self.act = getattr(nn, spec.activation)()

    def forward(self, x: Tensor) -> Tensor:
        spec = self.spec
        if spec.kind == "residual":
            h = self.conv1(x)
            if spec.batch_norm:
                h = self.bn1(h)
            h = self.conv2(self.act(h))
            if spec.batch_norm:
                h = self.bn2(h)
            out = torch.add(x, h) if spec.use_torch_add else x + h
            if spec.norm_after_add:
                out = self.post(out)
            return self.act(out)
        if spec.kind == "concat":
            a, b = self.conv_a(x), self.conv_b(x)
            if spec.batch_norm:
                a, b = self.bn_a(a), self.bn_b(b)
            return self.act(torch.cat([a, b], dim=1))
        if spec.use_chunk:
            first, rest = x.chunk(2, dim=1)
        else:
            first, rest = torch.split(x, list(spec.channels), dim=1)
        first = self.conv(first)
        parts = [first, rest] if spec.conv_first else [rest, first]
        return self.act(torch.cat(parts, dim=1))


class ResidualNet(nn.Module):
    """stem conv -> act -> blocks -> adaptive average pool -> flatten -> linear."""

    def __init__(self, spec: ResidualSpec):
        super().__init__()
        channels = spec.input_shape[0]
        self.stem = _conv(spec.dims, channels, spec.width, 3, spec.bias)
        self.act = nn.ReLU()
        blocks, width = [], spec.width
        for block in spec.blocks:
            blocks.append(Block(block, spec.dims, width, spec.bias, spec.batch_norm_bias))
            if block.kind == "concat":
                width = sum(block.channels)
        self.blocks = nn.ModuleList(blocks)
        self.pool = getattr(nn, f"AdaptiveAvgPool{spec.dims}d")(1)
        self.head = nn.Linear(width, spec.classes, bias=spec.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.stem(x))
        for block in self.blocks:
            x = block(x)
        return self.head(torch.flatten(self.pool(x), 1))


@st.composite
def _block(draw, width: int, batch_norm: bool, activations, dims: int):
    kind = draw(st.sampled_from(("split", "residual", "concat") if width >= 2 else ("residual",)))
    kernel = draw(st.sampled_from((1, 3)))
    act = draw(st.sampled_from(activations))
    norm = batch_norm and draw(st.booleans())
    if kind == "residual":
        return BlockSpec(
            kind,
            kernel,
            batch_norm=norm,
            norm_after_add=batch_norm and draw(st.booleans()),
            use_torch_add=draw(st.booleans()),
            activation=act,
        )
    if kind == "concat":
        channels = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        return BlockSpec(kind, kernel, batch_norm=norm, channels=channels, activation=act)
    use_chunk = width % 2 == 0 and draw(st.booleans())
    first = width // 2 if use_chunk else draw(st.integers(1, width - 1))
    return BlockSpec(
        kind,
        kernel,
        channels=(first, width - first),
        use_chunk=use_chunk,
        conv_first=draw(st.booleans()),
        activation=act,
    )


@st.composite
def residual_networks(
    draw,
    *,
    dims: tuple[int, ...] = (1, 2),
    bias: bool | None = None,
    batch_norm: bool = True,
    batch_norm_bias: bool | None = None,
    activations: tuple[str, ...] = ZERO_PRESERVING,
) -> ResidualSpec:
    """A `ResidualSpec`: 1-3 blocks of residual sums, concatenations and splits.

    Arguments:
        bias: whether convolutions and the head have a bias (None: draw).
        batch_norm: allow BatchNorm layers.
        batch_norm_bias: False gives BatchNorms that add no bias (zero running mean,
            `affine=False`); None draws.
    """
    dim = draw(st.sampled_from(dims))
    channels = draw(st.integers(1, 3))
    spatial = tuple(draw(st.integers(3, 8 if dim == 1 else 5)) for _ in range(dim))
    width = draw(st.integers(1, 4))
    blocks, current = [], width
    for _ in range(draw(st.integers(1, 3))):
        block = draw(_block(current, batch_norm, activations, dim))
        blocks.append(block)
        if block.kind == "concat":
            current = sum(block.channels)
    return ResidualSpec(
        dims=dim,
        input_shape=(channels, *spatial),
        width=width,
        blocks=tuple(blocks),
        classes=draw(st.integers(2, 4)),
        bias=draw(st.booleans()) if bias is None else bias,
        batch_norm_bias=draw(st.booleans()) if batch_norm_bias is None else batch_norm_bias,
        seed=draw(SEEDS),
    )


# ---------------------------------------------------------------------------- inputs

MAGNITUDES = {"unit": 1.0, "tiny": 1e-30, "large": 1e30}


@dataclass(frozen=True)
class InputSpec:
    """A batch of `batch` samples drawn from `seed`.

    kind: "mixed" (standard normal), "nonnegative" (|normal| with about a quarter exact
    zeros), "positive" (|normal| + 0.1), "box" (uniform strictly inside [low, high]: at least 1% of the width away
    from either bound), "zeros" (all zero).
    magnitude: "unit", "tiny" (times 1e-30), "large" (times 1e30) or "mixed" (each entry
    times 10^u, u uniform in [-30, 30]). Magnitudes are applied after the box is drawn,
    so only "unit" inputs are inside the box.
    """

    batch: int
    kind: str
    seed: int
    low: float = -1.0
    high: float = 1.0
    magnitude: str = "unit"

    def make(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        full = (self.batch, *shape)
        if self.kind == "zeros":
            return torch.zeros(full, dtype=dtype)
        if self.kind == "box":
            fraction = 0.01 + 0.98 * torch.rand(full, generator=generator, dtype=torch.float64)
            x = self.low + (self.high - self.low) * fraction
        else:
            x = torch.randn(full, generator=generator, dtype=torch.float64)
            if self.kind == "nonnegative":
                zero = torch.rand(full, generator=generator) < 0.25
                x = torch.where(zero, 0.0, x.abs())
            elif self.kind == "positive":
                x = x.abs() + 0.1
        if self.magnitude == "mixed":
            exponent = -30 + 60 * torch.rand(full, generator=generator, dtype=torch.float64)
            x = x * 10.0**exponent
        else:
            x = x * MAGNITUDES[self.magnitude]
        return x.to(dtype)


@st.composite
def inputs(
    draw,
    *,
    kinds: tuple[str, ...] = ("mixed", "nonnegative"),
    magnitudes: tuple[str, ...] = ("unit",),
    max_batch: int = 3,
) -> InputSpec:
    """An `InputSpec` (box bounds are drawn with low in [-3, -0.1], high in [0.1, 3])."""
    kind = draw(st.sampled_from(kinds))
    low = -draw(st.sampled_from((0.1, 0.5, 1.0, 3.0)))
    high = draw(st.sampled_from((0.1, 0.5, 1.0, 3.0)))
    return InputSpec(
        batch=draw(st.integers(1, max_batch)),
        kind=kind,
        seed=draw(SEEDS),
        low=low,
        high=high,
        magnitude=draw(st.sampled_from(magnitudes)),
    )


@dataclass(frozen=True)
class Case:
    """A built model and input; its repr is the specs that rebuild both."""

    network: NetworkSpec | ResidualSpec
    input: InputSpec
    dtype: torch.dtype = torch.float64
    model: nn.Module = field(repr=False, compare=False, default=None)  # type: ignore[assignment]
    x: Tensor = field(repr=False, compare=False, default=None)  # type: ignore[assignment]

    def _repr_pretty_(self, printer, cycle) -> None:  # how Hypothesis prints a failing case
        printer.text(repr(self))


def build_case(network, input_spec: InputSpec, dtype: torch.dtype = torch.float64) -> Case:
    model = network.build().to(dtype)
    return Case(network, input_spec, dtype, model, input_spec.make(network.input_shape, dtype))


@st.composite
def cases(draw, networks=None, input_specs=None, dtype: torch.dtype = torch.float64) -> Case:
    """A `Case` from a network strategy (default: `sequential_networks()`) and an input
    strategy (default: `inputs()`)."""
    network = draw(sequential_networks() if networks is None else networks)
    input_spec = draw(inputs() if input_specs is None else input_specs)
    return build_case(network, input_spec, dtype)


EDIT_KINDS = ("dead", "zero", "zero_units", "sparse")
ADVERSARIAL_KINDS = ("mixed", "nonnegative", "zeros", "box")
ADVERSARIAL_MAGNITUDES = ("unit", "tiny", "large", "mixed")


@st.composite
def adversarial_cases(
    draw, dtypes: tuple[torch.dtype, ...] = (torch.float64, torch.float32)
) -> Case:
    """A sequential or residual network (any activation, biases drawn) with 0-2
    adversarial `Edit`s (dead ReLUs, all-zero weights, zero units, sparse weights), and an
    input of any kind (all-zero included) at unit, tiny (1e-30), large (1e30) or mixed
    magnitudes, in float64 or float32."""
    if draw(st.booleans()):
        network: Any = draw(sequential_networks())
    else:
        network = draw(residual_networks(activations=ALL_ACTIVATIONS))
    count = draw(st.integers(0, 2))
    edits = tuple(
        Edit(draw(st.integers(0, 7)), draw(st.sampled_from(EDIT_KINDS))) for _ in range(count)
    )
    network = replace(network, edits=edits)
    spec = draw(inputs(kinds=ADVERSARIAL_KINDS, magnitudes=ADVERSARIAL_MAGNITUDES))
    return build_case(network, spec, draw(st.sampled_from(dtypes)))


# ---------------------------------------------------------------------------- layers


@dataclass(frozen=True)
class LayerCase:
    """A hand-built `Layer`, its batched input `a`, output `z = layer.forward(a)` and a
    random output relevance."""

    description: str
    layer: Layer = field(repr=False)
    a: Tensor = field(repr=False)
    z: Tensor = field(repr=False)
    relevance: Tensor = field(repr=False)
    nonnegative: bool = False


@st.composite
def layer_cases(draw) -> LayerCase:
    """One of: Dense, Convolution (1-3d, any stride/padding/dilation/groups, or "same"),
    ChannelAffine (an unfolded BatchNorm), LinearFunction (average pooling) and Sum (a
    residual addition of two stacked inputs), with or without bias; batch 1-3."""
    kind = draw(st.sampled_from(("dense", "conv", "channel_affine", "avg_pool", "sum")))
    seed = draw(SEEDS)
    batch = draw(st.integers(1, 3))
    nonnegative = draw(st.booleans())
    has_bias = draw(st.booleans())
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape):
        return torch.randn(shape, generator=generator, dtype=torch.float64)

    def sample(*shape):
        a = normal(batch, *shape)
        return a.abs() if nonnegative else a

    if kind == "dense":
        inp, out = draw(st.integers(1, 6)), draw(st.integers(1, 6))
        layer = Layer(Dense(), normal(out, inp), normal(out) if has_bias else None)
        a = sample(inp)
        description = f"Dense({inp} -> {out})"
    elif kind == "conv":
        dims = draw(st.integers(1, 3))
        channels = draw(st.integers(1, 3))
        spatial = tuple(draw(st.integers(2, 5)) for _ in range(dims))
        spec, _, _ = draw(_convolution(dims, channels, spatial, has_bias, ("zeros", "same")))
        kw = dict(spec.kwargs)
        groups, out = kw["groups"], kw["out_channels"]
        weight = normal(out, channels // groups, *kw["kernel_size"])
        padding = kw["padding"]
        if isinstance(padding, int):
            padding = (padding,) * dims
        op = Convolution(dims, kw["stride"], padding, kw["dilation"], groups)
        layer = Layer(op, weight, normal(out) if has_bias else None)
        a = sample(channels, *spatial)
        description = repr(spec)
    elif kind == "channel_affine":
        channels = draw(st.integers(1, 4))
        spatial = tuple(draw(st.integers(1, 4)) for _ in range(draw(st.integers(0, 2))))
        layer = Layer(ChannelAffine(len(spatial)), normal(channels), normal(channels))
        a = sample(channels, *spatial)
        description = f"ChannelAffine(channels={channels}, spatial={spatial})"
    elif kind == "avg_pool":
        size = draw(st.integers(2, 5))
        kernel = draw(st.integers(1, 2))
        op = LinearFunction(F.avg_pool2d, (("kernel_size", kernel),))
        layer = Layer(op, torch.ones((), dtype=torch.float64), None, has_parameters=False)
        a = sample(draw(st.integers(1, 3)), size, size)
        description = f"avg_pool2d(kernel_size={kernel}) on {size}x{size}"
    else:
        shape = tuple(draw(st.integers(1, 4)) for _ in range(draw(st.integers(1, 3))))
        signs = draw(st.sampled_from(((1.0, 1.0), (1.0, -1.0))))
        weight = torch.tensor(signs, dtype=torch.float64)
        layer = Layer(Sum(), weight, normal(*shape) if has_bias else None, has_parameters=False)
        a = sample(*shape, 2)
        description = f"Sum(weights={signs}) of {shape}"
    z = layer.forward(a)
    relevance = normal(*z.shape)
    return LayerCase(description, layer, a, z, relevance, nonnegative)


# ---------------------------------------------------------------------------- rules

RULES: dict[str, Any] = {
    "epsilon": rules.Epsilon(1e-6),
    "lrp0": rules.Epsilon(0.0),
    "gamma": rules.Gamma(0.25),
    "gamma_unstabilized": rules.Gamma(0.25, stabilizer=0.0),
    "alpha2beta1": rules.AlphaBeta(2.0, 1.0),
    "alpha2beta1_unstabilized": rules.AlphaBeta(2.0, 1.0, stabilizer=0.0),
    "alpha2beta1_ignore_bias": rules.AlphaBeta(2.0, 1.0, ignore_bias=True),
    "alpha1beta0": rules.AlphaBeta(1.0, 0.0),
    "zplus": rules.ZPlus(),
    "zplus_ignore_bias": rules.ZPlus(ignore_bias=True),
    "zbox": rules.ZBox(-1.0, 1.0),
    "flat": rules.Flat(),
    "flat_unstabilized": rules.Flat(0.0),
    "wsquare": rules.WSquare(),
    "wsquare_unstabilized": rules.WSquare(0.0),
    "gradient": rules.Gradient(),
}
"""Every rule of `lrpfn.rules` (the ones with hyperparameters also without stabilizer)."""

COMPOSITES: dict[str, Any] = {
    "epsilon_plus": composites.epsilon_plus(),
    "epsilon_plus_flat": composites.epsilon_plus_flat(),
    "epsilon_gamma_box": composites.epsilon_gamma_box(low=-3.0, high=3.0),
    "epsilon_alpha2_beta1": composites.epsilon_alpha2_beta1(),
    "epsilon_alpha2_beta1_flat": composites.epsilon_alpha2_beta1_flat(),
    "key:epsilon": "epsilon",
    "key:gamma+epsilon": "gamma+epsilon",
    "key:alpha1beta0": "alpha1beta0",
    "key:alpha2beta1": "alpha2beta1",
}
"""The preset composites and TorchLRP rule keys."""


# ---------------------------------------------------------------------------- checks


def explained_output(model: nn.Module, x: Tensor, target: int | None = None) -> Tensor:
    """The logit the default output relevance one-hot(target) * output sums to, per sample
    (the argmax logit for `target=None`), computed by running the model itself."""
    with torch.no_grad():
        output = model(x)
    index = output.argmax(1) if target is None else torch.full_like(output[:, 0], target).long()
    return output.gather(1, index[:, None])[:, 0]


def per_sample_sum(relevance: Tensor) -> Tensor:
    return relevance.flatten(1).sum(1)


def assert_conserved(relevance: Tensor, total: Tensor, rtol: float = 1e-9, what: str = "") -> None:
    """Each sample's relevance sums to `total` within `rtol` times the larger of |total|
    and the relevance's absolute mass sum |R| (rounding and a stabilizer's bias scale with
    the mass: positive and negative relevance can cancel in the sum)."""
    got = per_sample_sum(relevance)
    mass = relevance.abs().flatten(1).sum(1)
    scale = torch.maximum(total.abs(), mass)
    error = (got - total).abs()
    assert bool((error <= rtol * scale).all()), (
        f"relevance {what} not conserved: sums {got.tolist()}, expected {total.tolist()} "
        f"(relative error {(error / scale).tolist()}, tolerance {rtol})"
    )


def assert_close64(actual: Tensor, expected: Tensor, rtol: float = 1e-12) -> None:
    """Equal up to `rtol` relative to the largest magnitude of `expected` (float64
    rounding; NaN never matches)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert bool(torch.isfinite(actual).all()), "non-finite values"
    scale = expected.abs().max() if expected.numel() else torch.tensor(0.0)
    error = (actual - expected).abs().max() if expected.numel() else torch.tensor(0.0)
    assert bool(error <= rtol * scale), (
        f"max abs difference {float(error):.3e} exceeds {rtol} x {float(scale):.3e}"
    )
