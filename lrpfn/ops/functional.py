"""Functional ops that lrpfn's graph passes insert (they never appear in user code)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["channel_affine", "padded_convolution"]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def channel_affine(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """$x_c s_c + t_c$ over channel axis 1: an eval-mode BatchNorm as an affine layer."""
    view = (-1,) + (1,) * (x.ndim - 2)
    return x * scale.reshape(view) + shift.reshape(view)


def padded_convolution(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    groups: int,
    padding_mode: str,
) -> Tensor:
    """A convolution with `padding_mode` "reflect", "replicate" or "circular":
    `F.pad(x, padding, mode)` (padding in `F.pad`'s order) then an unpadded convolution."""
    padded = F.pad(x, padding, mode=padding_mode)
    return _CONV[weight.ndim - 2](padded, weight, bias, stride, 0, dilation, groups)
