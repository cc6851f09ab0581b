r"""Resampling: `F.interpolate` and `nn.Upsample` (nearest, linear, bilinear, bicubic,
trilinear, area) as linear ops under the node's rule.

Resampling is linear in its input, $z_j = \sum_i w_{ji} x_i$, with weights fixed by the
mode and the sizes; LRP treats it like average pooling (Montavon et al. 2019, section
10.2: sum- and average-pooling layers are linear layers with positive weights, explained
by the rules of linear layers):

- nearest, (bi/tri)linear and area weights are non-negative: the op is a parameter-free
  `layers.LinearFunction` (its transpose is its own vector-Jacobian product), so every
  rule is exact with $W^+ = W$ (under LRP-0 and epsilon each input keeps the share
  $x_i w_{ji} / z_j$ of each output's relevance);
- bicubic weights take both signs (the cubic kernel has negative lobes); epsilon and
  LRP-0 need only the op and its transpose (exact as a `layers.LinearFunction`), but the
  sign-split rules (z+, alpha-beta, gamma) need the signed weights: the op becomes a
  `layers.SpatialMatrix` whose weight is the dense matrix $W$ over the flattened spatial
  axes, read off the op applied to the unit basis (it costs $HW \times H'W'$ numbers:
  fine for the feature maps of CNNs; above 2^25 entries, such as an image resized from
  240 to 224 pixels, a named error asks for Epsilon on that node).

Reference: Montavon et al. 2019, "Layer-wise relevance propagation: an overview", in
Explainable AI: Interpreting, Explaining and Visualizing Deep Learning, Springer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UnsupportedNodeError
from ..layers import Layer, LinearFunction, SpatialMatrix
from ..rules import Epsilon
from .handler import Handler, Step
from .linear import linear_handler

__all__ = ["HANDLERS", "resampling_matrix"]


def _mode(step: Step) -> str:
    node = step.node
    if node.op == "call_module":
        return node.graph.owning_module.get_submodule(node.target).mode
    return step.args[3] if len(step.args) > 3 else step.kwargs.get("mode", "nearest")


def resampling_matrix(resample: Any, x: Tensor) -> Tensor:
    """The matrix $W$ `(outputs, inputs)` of the linear map `resample` over the spatial
    axes of `x` (all axes after the channel axis), from the op applied to the unit basis."""
    spatial = x.shape[2:]
    count = spatial.numel()
    basis = torch.eye(count, dtype=x.dtype, device=x.device).reshape(count, 1, *spatial)
    return resample(basis).reshape(count, -1).T


_LARGEST_MATRIX = 2**25  # entries (128 MiB in float32)


def _resampling_layer(step: Step) -> Layer:
    x = step.inputs[0]
    if _mode(step) == "bicubic" and not isinstance(step.rule, Epsilon):
        entries = x.shape[2:].numel() * step.output.shape[2:].numel()
        if entries > _LARGEST_MATRIX:
            raise UnsupportedNodeError(
                f"node {step.node.name!r}: bicubic resampling from {tuple(x.shape[2:])} to "
                f"{tuple(step.output.shape[2:])} under {step.rule!r} needs its weights with "
                f"their signs, a matrix of {entries:,} entries. Fix: give this node "
                f"rules.Epsilon (exact without the matrix), e.g. rules={{{step.node.name!r}: "
                "lrpfn.rules.Epsilon(), ...}, or resample the input before the model."
            )
        weight = resampling_matrix(step.call, x)
        op = SpatialMatrix(x.ndim - 2, tuple(step.output.shape[2:]))
        return Layer(op, weight, None, step.node.name, False)
    unit = torch.ones((), dtype=x.dtype, device=x.device)
    return Layer(LinearFunction(step.call), unit, None, step.node.name, False)


RESAMPLE = linear_handler(_resampling_layer, rule="default")

HANDLERS: Mapping[Any, Handler] = {
    F.interpolate: RESAMPLE,
    F.upsample: RESAMPLE,
    nn.Upsample: RESAMPLE,
    nn.UpsamplingNearest2d: RESAMPLE,
    nn.UpsamplingBilinear2d: RESAMPLE,
}
