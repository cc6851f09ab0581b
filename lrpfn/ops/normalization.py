r"""Normalisations: group norm, functional batch norm, vector normalisation and norms.

Each normalisation divides by a statistic of its input. LRP holds that statistic constant
(the LN-rule of Ali et al. 2022; Achtibat et al. 2024 do the same in AttnLRP): the layer
is then affine in its input and takes the node's rule like any linear layer.

- `F.group_norm` (and `nn.GroupNorm`, lowered to it by `capture.canonical`): per sample and
  group $g$ of channels, $z = (x - \bar{x}_g) \sigma_g^{-1} w_c + b_c$ with
  $\sigma_g^{-1}$ from the forward pass (`layers.GroupNormalization`);
- `F.batch_norm` in eval mode, where `capture.batch_norm` could not fold it (its statistics are
  not module attributes, or no linear layer comes before it): the per-channel affine
  $z_c = x_c s_c + t_c$, $s = w / \sqrt{v + \epsilon}$, $t = b - \mu s$
  (`layers.ChannelAffine`), exactly like the module form;
- `F.normalize(x, p, dim)` $= x / \max(\lVert x \rVert_p, \epsilon)$: with the norm held
  constant a positive diagonal scaling of $x$, under which every rule gives
  $R_x = R$ (relevance passes);
- vector norms (`torch.linalg.vector_norm`, `torch.norm`, `Tensor.norm`, export's
  `aten.linalg_vector_norm`): the statistic itself is held constant, so its node carries
  no relevance (a non-data node, like a shape query); a product `x * f(norm)` then
  scales `x` by a constant and passes its relevance (ConvNeXt-V2's global response
  normalisation).

References: Ali et al. 2022, "XAI for transformers: better explanations through
conservative propagation", ICML; Achtibat et al. 2024, "AttnLRP: attention-aware
layer-wise relevance propagation for transformers", ICML.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ..layers import ChannelAffine, GroupNormalization, Layer
from .handler import NONE, PASS_PRESERVING, Handler, Step
from .linear import linear_handler
from .state_space import held_constant

__all__ = ["CONSTANT_STATISTICS", "CONSTANT_STATISTIC_METHODS", "HANDLERS"]

_BATCH_NORM_ARGUMENTS = (
    "input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps",
)  # fmt: skip
_BATCH_NORM_DEFAULTS = {"weight": None, "bias": None, "training": False, "eps": 1e-5}


def batch_norm_arguments(args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """`F.batch_norm`'s arguments by name, from any mix of positional and keyword forms."""
    bound = dict(_BATCH_NORM_DEFAULTS)
    bound.update(zip(_BATCH_NORM_ARGUMENTS, args, strict=False))
    bound.update(kwargs)
    return bound


def batch_norm_affine(arguments: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with `F.batch_norm(x, ...)` $= x_c s_c + t_c$ in eval mode."""
    mean, var, eps = arguments["running_mean"], arguments["running_var"], arguments["eps"]
    scale = torch.rsqrt(var + eps)
    if arguments["weight"] is not None:
        scale = scale * arguments["weight"]
    shift = -mean * scale
    if arguments["bias"] is not None:
        shift = shift + arguments["bias"]
    return scale, shift


def _batch_norm_layer(step: Step) -> Layer:
    arguments = batch_norm_arguments(step.args, step.kwargs)
    scale, shift = batch_norm_affine(arguments)
    return Layer(ChannelAffine(step.inputs[0].ndim - 2), scale, shift, step.node.name)


def _group_norm_layer(step: Step) -> Layer:
    r"""`F.group_norm(x, groups, weight, bias, eps)` with $\sigma_g$ from the forward pass."""
    x = step.inputs[0]
    names = ("input", "num_groups", "weight", "bias", "eps")
    arguments = {"weight": None, "bias": None, "eps": 1e-5}
    arguments.update(zip(names, step.args, strict=False))
    arguments.update(step.kwargs)
    groups = arguments["num_groups"]
    grouped = x.reshape(x.shape[0], groups, -1)
    inverse_std = torch.rsqrt(grouped.var(-1, unbiased=False, keepdim=True) + arguments["eps"])
    weight = arguments["weight"]
    if weight is None:
        weight = torch.ones(x.shape[1], dtype=x.dtype, device=x.device)
    return Layer(GroupNormalization(groups, inverse_std), weight, arguments["bias"], step.node.name)


BATCH_NORM = linear_handler(_batch_norm_layer)
GROUP_NORM = linear_handler(_group_norm_layer)

CONSTANT_STATISTICS = (
    torch.norm,
    torch.linalg.vector_norm,
    torch.linalg.norm,
    torch.ops.aten.linalg_vector_norm,
    torch.ops.aten.norm,
    held_constant,  # MambaLRP's selection parameters (lrpfn.ops.state_space)
)
"""Functions whose result is a statistic held constant: non-data nodes."""
CONSTANT_STATISTIC_METHODS = ("norm",)

HANDLERS: Mapping[Any, Handler] = {
    F.batch_norm: BATCH_NORM,
    F.group_norm: GROUP_NORM,
    F.normalize: PASS_PRESERVING,
    **dict.fromkeys(CONSTANT_STATISTICS, NONE),
    **dict.fromkeys(CONSTANT_STATISTIC_METHODS, NONE),
}
