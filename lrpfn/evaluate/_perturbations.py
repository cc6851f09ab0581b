r"""Perturbations: the values that perturbed pixels take.

A perturbation maps an image batch $x$ `(batch, C, H, W)` to a *replacement* $\tilde x$ of
the same shape; perturbing a region sets $x^k = x \odot (1 - m) + \tilde x \odot m$ for the
region's mask $m$. Since every region is perturbed once, drawing the replacement once per
image is the same as drawing it region by region, and all steps can run in one batch.

Any callable `x -> replacement` is a perturbation; `as_perturbation` also accepts a float
(a constant) and the names "uniform", "blur" and "mean".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import InvalidEvaluationError

__all__ = ["Constant", "GaussianBlur", "Mean", "Perturbation", "UniformNoise", "as_perturbation"]

Perturbation = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Constant:
    """Every perturbed pixel becomes `value`: $\\tilde x = c$."""

    value: float = 0.0

    def __call__(self, x: Tensor) -> Tensor:
        return torch.full_like(x, self.value)


@dataclass(frozen=True)
class Mean:
    """Every perturbed pixel becomes its image's channel mean:
    $\\tilde x_{c,h,w} = \\frac{1}{HW} \\sum_{h',w'} x_{c,h',w'}$."""

    def __call__(self, x: Tensor) -> Tensor:
        return x.mean(dim=(-2, -1), keepdim=True).expand_as(x).clone()


@dataclass(frozen=True)
class UniformNoise:
    """Uniform noise from a seeded generator, as in Samek et al. (2017):
    $\\tilde x \\sim U(\\text{low}, \\text{high})$ independently per pixel and channel.

    Arguments:
        low, high: the range; None takes each image's own minimum / maximum.
        seed: the seed of a private `torch.Generator` (the global one is never used), so
            the same call gives the same noise.
    """

    low: float | None = None
    high: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.low is not None and self.high is not None and not self.low <= self.high:
            raise InvalidEvaluationError(
                f"UniformNoise needs low <= high, got low={self.low}, high={self.high}."
            )

    def __call__(self, x: Tensor) -> Tensor:
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        unit = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        per_image = x.flatten(1)
        low = per_image.amin(1) if self.low is None else torch.full_like(x[:, 0, 0, 0], self.low)
        high = per_image.amax(1) if self.high is None else torch.full_like(low, self.high)
        return low[:, None, None, None] + (high - low)[:, None, None, None] * unit


@dataclass(frozen=True)
class GaussianBlur:
    """The image blurred with a Gaussian of standard deviation `sigma` pixels, per channel:
    $\\tilde x = G_\\sigma * x$, the kernel cut at `truncate` standard deviations (radius
    $\\lfloor \\text{truncate}\\,\\sigma + 1/2 \\rfloor$) and the border extended by its nearest
    pixel (scipy.ndimage.gaussian_filter's `mode="nearest"`).
    """

    sigma: float = 2.0
    truncate: float = 4.0

    def __post_init__(self) -> None:
        if not self.sigma > 0 or not self.truncate > 0:
            raise InvalidEvaluationError(
                f"GaussianBlur needs sigma > 0 and truncate > 0, got {self.sigma}, {self.truncate}."
            )

    def __call__(self, x: Tensor) -> Tensor:
        radius = int(self.truncate * self.sigma + 0.5)
        offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float64)
        kernel = torch.exp(-0.5 * (offsets / self.sigma) ** 2)
        kernel = (kernel / kernel.sum()).to(x.dtype)
        channels = x.shape[1]
        rows = kernel.reshape(1, 1, -1, 1).expand(channels, 1, -1, 1)
        columns = kernel.reshape(1, 1, 1, -1).expand(channels, 1, 1, -1)
        padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
        return F.conv2d(F.conv2d(padded, rows, groups=channels), columns, groups=channels)


_NAMED = {"uniform": UniformNoise, "blur": GaussianBlur, "mean": Mean}


def as_perturbation(spec: float | str | Perturbation) -> Perturbation:
    """The perturbation `spec` names: a float is a `Constant`, "uniform" `UniformNoise()`,
    "blur" `GaussianBlur()`, "mean" `Mean()`; a callable is used as it is."""
    if isinstance(spec, bool):
        raise InvalidEvaluationError(f"perturbation must not be a bool, got {spec!r}.")
    if isinstance(spec, (int, float)):
        if not math.isfinite(spec):
            raise InvalidEvaluationError(f"a constant perturbation must be finite, got {spec}.")
        return Constant(float(spec))
    if isinstance(spec, str):
        if spec not in _NAMED:
            raise InvalidEvaluationError(
                f"unknown perturbation {spec!r}: pass a float (a constant), a callable "
                f"x -> replacement, or one of {', '.join(map(repr, _NAMED))}."
            )
        return _NAMED[spec]()
    if callable(spec):
        return spec
    raise InvalidEvaluationError(
        f"perturbation must be a float, a name or a callable x -> replacement, got {spec!r}."
    )


def replacement(perturbation: Perturbation, x: Tensor) -> Tensor:
    """The perturbation's replacement for `x`, checked to have `x`'s shape and to be finite."""
    value = perturbation(x)
    if not isinstance(value, Tensor) or value.shape != x.shape:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise InvalidEvaluationError(
            f"the perturbation {perturbation!r} returned {shape} for an input of shape "
            f"{tuple(x.shape)}: it must return the replacement values, shaped like x."
        )
    if not bool(torch.isfinite(value).all()):
        raise InvalidEvaluationError(f"the perturbation {perturbation!r} returned NaN or inf.")
    return value.to(device=x.device, dtype=x.dtype)
