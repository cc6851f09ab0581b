r"""Region perturbation (pixel flipping) and the AOPC score of Samek et al. (2017).

The image is cut into a grid of patches (`patch` pixels square, or `(height, width)`; the
last row and column are cut short where the size does not divide the image). The patches
are ordered by their relevance $R_p = \sum_{(h, w) \in p} \sum_c R_{c,h,w}$: most relevant
first ("morf", descending), least relevant first ("lerf", ascending), or in a random order
("random", the baseline). Step $k$ perturbs the $k$-th patch of the order, so
$x^0 = x$ and $x^k$ is $x$ with the first $k$ patches replaced by the perturbation's values.
The curve is the explained logit $f(x^k)$ for $k = 0, \dots, L$ with $L$ = `steps`, and

$$ \text{AOPC} = \frac{1}{L + 1} \sum_{k=0}^{L} \big( f(x^0) - f(x^k) \big). $$

A faithful explanation has a large AOPC for "morf" (the logit falls fast) and a small one
for "lerf". With `patch=1` this is pixel flipping (Bach et al. 2015).

All samples and several steps go through the model in one forward pass (`batch_size`
images at most); there is no loop over samples.

Reference: W. Samek, A. Binder, G. Montavon, S. Lapuschkin, K.-R. Müller, "Evaluating the
visualization of what a deep neural network has learned", IEEE TNNLS 28(11), 2017.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import TrainingModeError
from ._checks import (
    InvalidEvaluationError,
    check_images,
    heatmaps,
    target_index,
)
from ._perturbations import Perturbation, as_perturbation, replacement

__all__ = ["ORDERS", "PerturbationCurves", "region_perturbation"]

ORDERS = ("morf", "lerf", "random")
"""Most relevant first, least relevant first, and a random order (the baseline)."""


@dataclass(frozen=True)
class PerturbationCurves:
    """The result of `region_perturbation`.

    Attributes:
        curves: `(batch, steps + 1)`, the explained logit $f(x^k)$ before (k = 0) and after
            each step.
        aopc: `(batch,)`, $\\frac{1}{L+1} \\sum_{k=0}^{L} (f(x^0) - f(x^k))$.
        target: `(batch,)`, the explained class of each sample.
        order: "morf", "lerf" or "random".
    """

    curves: Tensor
    aopc: Tensor
    target: Tensor
    order: str


def region_perturbation(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    relevance: Tensor,
    target: int | Tensor | None = None,
    *,
    patch: int | tuple[int, int] = 8,
    steps: int | None = None,
    order: str = "morf",
    perturbation: float | str | Perturbation = "uniform",
    seed: int = 0,
    batch_size: int = 256,
) -> PerturbationCurves:
    """Perturb the patches of `x` in the order of their relevance and record the logit.

    Arguments:
        model: the classifier, `(batch, C, H, W) -> (batch, classes)`, in eval mode.
        x: the images, `(batch, C, H, W)`.
        relevance: their relevance, `(batch, C, H, W)` or `(batch, H, W)`.
        target: the explained class: None (each sample's prediction on `x`), an int, or a
            LongTensor `(batch,)`.
        patch: the patch size, an int or `(height, width)`.
        steps: $L$, the number of patches perturbed (default: all of them).
        order: "morf" (most relevant first), "lerf" (least relevant first) or "random".
        perturbation: the values perturbed pixels take: a float (a constant), a callable
            `x -> replacement` (see `lrpfn.evaluate.UniformNoise`, `GaussianBlur`), or
            "uniform", "blur", "mean".
        seed: the seed of the random order (a private generator).
        batch_size: the most images per forward pass.

    Returns:
        `PerturbationCurves` with `curves` `(batch, steps + 1)` and `aopc` `(batch,)`.
    """
    check_images(x)
    maps = heatmaps(relevance, x).to(x.device)
    if order not in ORDERS:
        raise InvalidEvaluationError(f"order must be one of {ORDERS}, got {order!r}.")
    if isinstance(model, torch.nn.Module) and model.training:
        raise TrainingModeError("the model is in training mode: call model.eval() first.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidEvaluationError(f"batch_size must be a positive int, got {batch_size!r}.")
    height, width = _patch_size(patch)
    rows, columns = math.ceil(x.shape[-2] / height), math.ceil(x.shape[-1] / width)
    steps = _steps(steps, rows * columns)
    ranking = _ranking(_patch_relevance(maps, height, width, rows, columns), order, seed)
    rank = ranking.reshape(-1, rows, columns)
    pixel_rank = rank.repeat_interleave(height, 1).repeat_interleave(width, 2)
    pixel_rank = pixel_rank[:, : x.shape[-2], : x.shape[-1]]
    values = replacement(as_perturbation(perturbation), x)
    with torch.no_grad():
        index = target_index(target, model(x))
        curves = _curves(model, x, values, pixel_rank, index, steps, batch_size)
    aopc = (curves[:, :1] - curves).mean(1)
    return PerturbationCurves(curves, aopc, index, order)


def _curves(model, x, values, pixel_rank, index, steps, batch_size) -> Tensor:
    """$f(x^k)$ for k = 0..steps, several steps of all samples per forward pass."""
    batch = len(x)
    per_pass = max(1, batch_size // batch)
    curves = []
    for first in range(0, steps + 1, per_pass):
        ks = torch.arange(first, min(first + per_pass, steps + 1), device=x.device)
        mask = pixel_rank[:, None] < ks[None, :, None, None]  # (batch, k, H, W)
        perturbed = torch.where(mask[:, :, None], values[:, None], x[:, None])
        logits = model(perturbed.flatten(0, 1))
        logits = logits.reshape(batch, len(ks), -1)
        curves.append(logits.gather(2, index[:, None, None].expand(-1, len(ks), 1)).squeeze(2))
    return torch.cat(curves, 1)


def _patch_size(patch) -> tuple[int, int]:
    sizes = (patch, patch) if isinstance(patch, int) else tuple(patch)
    if len(sizes) != 2 or any(
        isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes
    ):
        raise InvalidEvaluationError(
            f"patch must be a positive int or a pair (height, width) of them, got {patch!r}."
        )
    return sizes


def _steps(steps: int | None, patches: int) -> int:
    if steps is None:
        return patches
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= patches:
        raise InvalidEvaluationError(
            f"steps must be an int from 1 to the number of patches ({patches}), got {steps!r}; "
            "use a smaller patch for more steps."
        )
    return steps


def _patch_relevance(maps: Tensor, height: int, width: int, rows: int, columns: int) -> Tensor:
    """$R_p$ of every patch, `(batch, rows * columns)` in row-major order."""
    padded = F.pad(maps, (0, columns * width - maps.shape[-1], 0, rows * height - maps.shape[-2]))
    blocks = padded.reshape(len(maps), rows, height, columns, width)
    return blocks.sum(dim=(2, 4)).flatten(1)


def _ranking(patch_relevance: Tensor, order: str, seed: int) -> Tensor:
    """The position of each patch in the order, `(batch, patches)` (0 = perturbed first).
    Ties keep the row-major order of the patches."""
    if order == "random":
        generator = torch.Generator(device=patch_relevance.device).manual_seed(seed)
        keys = torch.rand(patch_relevance.shape, generator=generator, device=patch_relevance.device)
        ordering = keys.argsort(dim=1, stable=True)
    else:
        ordering = patch_relevance.argsort(dim=1, descending=order == "morf", stable=True)
    positions = torch.arange(ordering.shape[1], device=ordering.device).expand_as(ordering)
    return torch.empty_like(ordering).scatter_(1, ordering, positions)
