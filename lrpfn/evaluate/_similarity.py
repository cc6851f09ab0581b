r"""Similarities of two batches of relevance maps `(batch, H, W)`, one value per sample.

- `spearman`: Spearman's rank correlation $\rho = \mathrm{corr}(\mathrm{rank}(a),
  \mathrm{rank}(b))$ over the pixels, ties given their average rank (as
  `scipy.stats.spearmanr`). A constant map has no ranking: its correlation is 0.
- `ssim`: the structural similarity of Wang et al. (2004) over $7 \times 7$ windows with
  the sample covariance, $K_1 = 0.01$, $K_2 = 0.03$, averaged over the windows that lie
  inside the map (as `skimage.metrics.structural_similarity` with its defaults):

  $$ \mathrm{SSIM} = \frac{(2 \mu_a \mu_b + C_1)(2 \sigma_{ab} + C_2)}
     {(\mu_a^2 + \mu_b^2 + C_1)(\sigma_a^2 + \sigma_b^2 + C_2)}, \quad
     C_i = (K_i\, D)^2 $$

  with $D$ the data range (`data_range`). Both are computed in float64, batched.

Reference: Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality
assessment: from error visibility to structural similarity", IEEE TIP 13(4), 2004.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import InvalidEvaluationError

__all__ = ["average_ranks", "spearman", "ssim"]

SSIM_WINDOW = 7


def average_ranks(values: Tensor) -> Tensor:
    """The 1-based rank of every entry of each row of `values` `(batch, n)`, tied entries
    sharing the average of their ranks (float64)."""
    batch, count = values.shape
    ordered, order = values.sort(dim=1, stable=True)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    offsets = torch.arange(batch, device=values.device)[:, None] * count
    group = (starts.cumsum(1) - 1 + offsets).flatten()
    position = torch.arange(count, device=values.device, dtype=torch.float64).repeat(batch)
    first = torch.full((batch * count,), float(count), dtype=torch.float64, device=values.device)
    last = torch.zeros_like(first)
    first = first.scatter_reduce(0, group, position, "amin")
    last = last.scatter_reduce(0, group, position, "amax")
    tied_rank = ((first + last) / 2 + 1)[group].reshape(batch, count)
    return torch.empty_like(tied_rank).scatter_(1, order, tied_rank)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman's rank correlation of each pair of maps, `(batch,)` float64."""
    _check_pair(a, b)
    ranks_a = average_ranks(a.flatten(1))
    ranks_b = average_ranks(b.flatten(1))
    centred_a = ranks_a - ranks_a.mean(1, keepdim=True)
    centred_b = ranks_b - ranks_b.mean(1, keepdim=True)
    norms = centred_a.norm(dim=1) * centred_b.norm(dim=1)
    products = (centred_a * centred_b).sum(1)
    return torch.where(norms > 0, products / norms.clamp_min(1e-300), torch.zeros_like(norms))


def ssim(a: Tensor, b: Tensor, data_range: float = 1.0) -> Tensor:
    """The mean structural similarity of each pair of maps, `(batch,)` float64."""
    _check_pair(a, b)
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise InvalidEvaluationError(
            f"SSIM needs maps of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got "
            f"{tuple(a.shape[-2:])}: use similarity='spearman' for smaller inputs."
        )
    a, b = a.double()[:, None], b.double()[:, None]

    def mean(values: Tensor) -> Tensor:  # over the windows that lie inside the map
        return F.avg_pool2d(values, SSIM_WINDOW, stride=1)

    mu_a, mu_b = mean(a), mean(b)
    unbiased = SSIM_WINDOW**2 / (SSIM_WINDOW**2 - 1)
    var_a = unbiased * (mean(a * a) - mu_a * mu_a)
    var_b = unbiased * (mean(b * b) - mu_b * mu_b)
    covariance = unbiased * (mean(a * b) - mu_a * mu_b)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    numerator = (2 * mu_a * mu_b + c1) * (2 * covariance + c2)
    denominator = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (numerator / denominator).flatten(1).mean(1)


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape or a.ndim != 3:
        raise InvalidEvaluationError(
            f"similarities compare maps of one shape (batch, H, W), got {tuple(a.shape)} and "
            f"{tuple(b.shape)}."
        )
