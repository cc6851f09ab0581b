"""Where the walk starts: the checked input, targets, the output relevance and its scale.

- `check_input`: the explained batch is a finite floating tensor (`check_token_ids`:
  or integer ids where the model's input feeds embeddings);
- `check_output`: the model output has a batch axis (unless the start relevance is given);
- `initial_relevance`: one-hot(target) times the output, for one target per sample or
  `(batch, k)` targets (a leading axis of k), a `Region` of a dense output, or the given
  `output_relevance`;
- `power_of_two_scale` and `rescaled`: the walk starts from `initial / scale` with a
  power of two per sample, exact in floating point (see `power_of_two_scale`).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import InvalidInputError, InvalidTargetError
from ..ops.embedding import takes_token_ids
from .plan import Plan

__all__ = [
    "Region",
    "Target",
    "check_input",
    "check_output",
    "check_token_ids",
    "initial_relevance",
    "power_of_two_scale",
    "rescaled",
]


@dataclass(frozen=True, eq=False)
class Region:
    r"""Explain class `target` summed over a region of a dense output (segmentation).

    For an output $y$ of shape `(batch, classes, *spatial)` the start relevance is
    $R_{b,c,p} = y_{b,c,p}\,[c = t]\,m_{b,p}$: class $t$'s score at the pixels $p$ of the
    mask $m$ (0/1 or weights), so the explained "logit" is $\sum_p m_{b,p} y_{b,t,p}$.

    Arguments:
        target: the class index.
        mask: a tensor of the output's spatial shape, or `(batch, *spatial)`; None for
            every position.
    """

    target: int
    mask: Tensor | None = None


Target = int | Sequence[int] | Tensor | Region | None


def check_output(output: Tensor, x: Tensor, output_relevance: Tensor | None) -> None:
    if output.ndim < 2 and output_relevance is None:
        raise InvalidInputError(
            f"the model output has shape {tuple(output.shape)}, without a batch axis, for "
            f"x of shape {tuple(x.shape)}: x has probably lost its batch axis. Fix: "
            "explain a batch, e.g. x[None] for one sample, or pass output_relevance=."
        )


def power_of_two_scale(initial: Tensor, output_ndim: int) -> Tensor:
    """A power of two near each sample's largest initial relevance (shape `(..., batch)`).

    Every rule is linear in the relevance, so the walk starts from `initial / scale` and
    its results are multiplied back: exact in floating point (only exponents change), and
    in float32 the ratios $R / (z \\pm \\epsilon)$ stay in range where $|R| \\gg |z|$.
    """
    if initial.dtype == torch.float64:
        return torch.ones((), dtype=initial.dtype, device=initial.device)
    axes = tuple(range(initial.ndim - output_ndim + 1, initial.ndim))
    largest = initial.abs().amax(dim=axes)
    scale = torch.ldexp(torch.ones_like(largest), torch.frexp(largest).exponent)
    return torch.where(largest > 0, scale, torch.ones_like(scale))


def rescaled(value: Any, scale: Tensor) -> Any:
    """`value * scale`, the scale broadcast over the per-sample axes (tuples elementwise)."""
    if isinstance(value, (tuple, list)):
        return type(value)(rescaled(item, scale) for item in value)
    if value is None or scale.ndim == 0:
        return value
    if tuple(value.shape[: scale.ndim]) != tuple(scale.shape):
        # a node value whose leading axes are not the samples' (a batch merged into another
        # axis, or a value without one): only a scale common to all samples applies
        if bool((scale != scale.flatten()[0]).any()):
            raise ValueError(
                f"a per-sample scale {tuple(scale.shape)} cannot apply to a value of shape "
                f"{tuple(value.shape)}; walk with a scale common to the batch."
            )
        return value * scale.flatten()[0]
    return value * scale.reshape(scale.shape + (1,) * (value.ndim - scale.ndim))


def check_input(x: Any, token_ids: bool = False) -> None:
    """`x` is a finite floating tensor (or, with `token_ids`, an integer tensor: see
    `check_token_ids`)."""
    if not isinstance(x, Tensor):
        raise InvalidInputError(f"x must be a torch.Tensor, got {type(x).__name__}.")
    if token_ids and _is_integer(x):
        return
    if not x.is_floating_point():
        raise InvalidInputError(
            f"x must be a floating tensor, got dtype {x.dtype}. Fix: x = x.float()."
        )
    if not bool(torch.isfinite(x).all()):
        raise InvalidInputError(
            "x contains NaN or inf; relevance of a non-finite input is undefined. "
            "Fix: clean the input (e.g. torch.nan_to_num)."
        )


def _is_integer(x: Tensor) -> bool:
    return not x.is_floating_point() and not x.is_complex() and x.dtype != torch.bool


def check_token_ids(plan: Plan, x: Tensor) -> None:
    """Integer `x` only where the model's input feeds embedding lookups (`ops.embedding`)."""
    if _is_integer(x) and not takes_token_ids(plan.module):
        raise InvalidInputError(
            f"x must be a floating tensor, got dtype {x.dtype}. Fix: x = x.float() (integer "
            "token ids are explained only where the model's input feeds nn.Embedding or "
            "F.embedding lookups, which this model's does not)."
        )


def initial_relevance(output: Tensor, target: Target, output_relevance: Tensor | None) -> Tensor:
    """One-hot(target) times the output, or the given output relevance."""
    if output_relevance is not None:
        if target is not None:
            raise InvalidTargetError("pass either target or output_relevance, not both.")
        if (
            not isinstance(output_relevance, Tensor)
            or output_relevance.shape[-output.ndim :] != output.shape
        ):
            shape = getattr(output_relevance, "shape", type(output_relevance).__name__)
            raise InvalidTargetError(
                f"output_relevance must have the model output's shape {tuple(output.shape)} "
                f"(optionally with a leading axis of targets), got {shape}."
            )
        return output_relevance.to(output.dtype)
    if isinstance(target, Region):
        return _region_relevance(output, target)
    if output.ndim != 2:
        raise InvalidTargetError(
            f"target= needs a model output of shape (batch, classes), got {tuple(output.shape)}. "
            "Fix: pass output_relevance= of the output's shape, or for a dense output "
            "(segmentation) target=lrpfn.Region(class, mask)."
        )
    batch, classes = output.shape
    index = _target_index(target, output, batch, classes)
    if index.ndim == 2:  # (batch, k) -> (k, batch, classes)
        mask = torch.nn.functional.one_hot(index.T, classes).to(output.dtype)
        return mask * output
    return torch.nn.functional.one_hot(index, classes).to(output.dtype) * output


def _region_relevance(output: Tensor, region: Region) -> Tensor:
    if output.ndim < 3:
        raise InvalidTargetError(
            f"Region targets a dense output (batch, classes, *spatial); this output has shape "
            f"{tuple(output.shape)}: pass an int target."
        )
    classes, spatial = output.shape[1], tuple(output.shape[2:])
    if not 0 <= int(region.target) < classes:
        raise InvalidTargetError(
            f"Region target {region.target} is out of range for {classes} classes."
        )
    one_hot = torch.zeros_like(output)
    one_hot[:, int(region.target)] = 1
    if region.mask is None:
        return one_hot * output
    mask = torch.as_tensor(region.mask, device=output.device).to(output.dtype)
    if tuple(mask.shape[-len(spatial) :]) != spatial or mask.ndim not in (
        len(spatial),
        len(spatial) + 1,
    ):
        raise InvalidTargetError(
            f"the Region mask has shape {tuple(mask.shape)}; it must have the output's spatial "
            f"shape {spatial} (or (batch, *{spatial})). Fix: resize the mask to the output."
        )
    if mask.ndim == len(spatial) + 1:
        mask = mask[:, None]
    return one_hot * output * mask


def _target_index(target: Target, output: Tensor, batch: int, classes: int) -> Tensor:
    if target is None:
        return output.argmax(dim=1)
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        target = int(target)  # a NumPy integer
    elif _is_array_like(target):
        try:
            target = torch.as_tensor(target)
        except (TypeError, ValueError, RuntimeError) as error:
            raise InvalidTargetError(
                f"target must hold integer class indices, got {target!r}."
            ) from error
    if isinstance(target, bool) or not isinstance(target, (int, Tensor)):
        raise InvalidTargetError(
            f"target must be None, an int or a LongTensor, got {target!r} (a list of ints works too)."
        )
    index = torch.as_tensor(target, device=output.device)
    if index.is_floating_point() or index.dtype == torch.bool:
        raise InvalidTargetError(
            f"target must hold integer class indices, got dtype {index.dtype}."
        )
    if index.ndim == 0:
        index = index.expand(batch)
    if index.ndim not in (1, 2) or index.shape[0] != batch:
        raise InvalidTargetError(
            f"target must be an int or have shape (batch,) or (batch, k) with batch={batch}, "
            f"got shape {tuple(index.shape)}."
        )
    if bool(((index < 0) | (index >= classes)).any()):
        raise InvalidTargetError(
            f"target {index.tolist()} is out of range for {classes} classes (valid: 0..{classes - 1})."
        )
    return index.long()


def _is_array_like(target: Any) -> bool:
    """A list or tuple of class indices, or a NumPy array (without importing NumPy)."""
    return isinstance(target, (list, tuple)) or type(target).__module__ == "numpy"
