"""Functional ops that lrpfn's graph passes insert (they never appear in user code)."""

from __future__ import annotations

from torch import Tensor

__all__ = ["channel_affine"]


def channel_affine(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """$x_c s_c + t_c$ over channel axis 1: an eval-mode BatchNorm as an affine layer."""
    view = (-1,) + (1,) * (x.ndim - 2)
    return x * scale.reshape(view) + shift.reshape(view)
