"""The core ops' handlers: activations, shape ops, pooling, convolutions, sums, products.

These are the ops every CNN uses; `ops.table` merges this table with every other op
family's. Keys are module types (`call_module`), functions or their qualified names
`"module.function"` (`call_function`) and method names (`call_method`).
"""

from __future__ import annotations

import builtins
import operator
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .functional import channel_affine, padded_convolution
from .handler import (
    CONCATENATE,
    NONE,
    PASS,
    PASS_NONNEGATIVE,
    PASS_PRESERVING,
    PASS_RELU,
    PASS_ZERO,
    ROUTE,
    Handler,
)
from .linear import (
    CHANNEL_AFFINE,
    DENSE,
    LAYER_NORM,
    PADDED_CONVOLUTION,
    POOL,
    PRODUCT,
    SUM,
    convolution_handler,
)

__all__ = ["HANDLERS"]

_RELU_LIKE = (nn.ReLU, nn.ReLU6, F.relu, torch.relu, F.relu6, "relu")
_ZERO_AT_ZERO = (
    nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Mish,
    nn.SELU, nn.CELU, nn.PReLU, nn.Tanhshrink, nn.Softsign,
    F.leaky_relu, F.elu, F.gelu, F.silu, torch.tanh, F.tanh, F.hardtanh, F.hardswish,
    F.mish, F.selu, F.celu, torch.selu, "tanh", operator.neg, torch.neg, "neg",
)  # fmt: skip
_OTHER_ACTIVATIONS = (
    nn.Softplus,
    nn.LogSigmoid,
    F.softplus,
    F.logsigmoid,
    torch.clamp,
    torch.clip,
    "clamp",
    "clip",
)
_NONNEGATIVE_ACTIVATIONS = (
    nn.Sigmoid,
    nn.Hardsigmoid,
    torch.sigmoid,
    F.sigmoid,
    F.hardsigmoid,
    "sigmoid",
)
_ROUTE_FUNCTIONS = (
    torch.flatten,
    torch.reshape,
    torch.permute,
    torch.transpose,
    torch.squeeze,
    torch.unsqueeze,
    torch.cat,
    torch.concat,
    torch.concatenate,
    torch.stack,
    torch.split,
    torch.chunk,
    torch.flip,
    torch.roll,
    torch.narrow,
    torch.movedim,
    torch.swapaxes,
    operator.getitem,
    F.pad,
    F.max_pool1d,
    F.max_pool2d,
    F.max_pool3d,
    F.adaptive_max_pool1d,
    F.adaptive_max_pool2d,
    F.adaptive_max_pool3d,
    F.max_pool1d_with_indices,  # `return_indices=True` dispatches to these: (values, indices)
    F.max_pool2d_with_indices,
    F.max_pool3d_with_indices,
    F.adaptive_max_pool1d_with_indices,
    F.adaptive_max_pool2d_with_indices,
    F.adaptive_max_pool3d_with_indices,
    torch.unbind,
    F.pixel_shuffle,
    F.pixel_unshuffle,
    torch.tile,
)
_POOL_FUNCTIONS = (
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
    torch.mean,
    torch.sum,
)
_ROUTE_METHODS = (
    "view",
    "reshape",
    "flatten",
    "permute",
    "transpose",
    "squeeze",
    "unsqueeze",
    "split",
    "chunk",
    "expand",
    "expand_as",
    "flip",
    "roll",
    "narrow",
    "movedim",
    "unbind",
    "view_as",
    "reshape_as",
    "repeat",
    "unflatten",
    "swapaxes",
    "t",
    "mT",
    "T",
    "mH",
    "H",
)
_PASS_METHODS = ("contiguous", "clone", "detach", "float", "double", "to", "type_as")
_NONE_METHODS = ("size", "dim", "numel", "type", "__len__", "get_device", "stride")


def _table() -> dict[Any, Handler]:
    table: dict[Any, Handler] = {
        nn.Identity: PASS_PRESERVING,
        nn.Dropout: PASS_PRESERVING,
        nn.Flatten: ROUTE,
        nn.Unflatten: ROUTE,
        nn.ZeroPad2d: ROUTE,
        nn.ConstantPad2d: ROUTE,
        nn.MaxPool1d: ROUTE,
        nn.MaxPool2d: ROUTE,
        nn.MaxPool3d: ROUTE,
        nn.AdaptiveMaxPool1d: ROUTE,
        nn.AdaptiveMaxPool2d: ROUTE,
        nn.AdaptiveMaxPool3d: ROUTE,
        nn.AvgPool1d: POOL,
        nn.AvgPool2d: POOL,
        nn.AvgPool3d: POOL,
        nn.AdaptiveAvgPool1d: POOL,
        nn.AdaptiveAvgPool2d: POOL,
        nn.AdaptiveAvgPool3d: POOL,
        F.linear: DENSE,
        padded_convolution: PADDED_CONVOLUTION,
        channel_affine: CHANNEL_AFFINE,
        F.layer_norm: LAYER_NORM,
        # functions of optional packages are keyed by qualified name, so none is imported
        "torchvision.ops.stochastic_depth.stochastic_depth": PASS_PRESERVING,  # eval: identity
        F.conv1d: convolution_handler(1, False),
        F.conv2d: convolution_handler(2, False),
        F.conv3d: convolution_handler(3, False),
        F.conv_transpose1d: convolution_handler(1, True),
        F.conv_transpose2d: convolution_handler(2, True),
        F.conv_transpose3d: convolution_handler(3, True),
        F.dropout: PASS_PRESERVING,
        F.dropout1d: PASS_PRESERVING,
        F.dropout2d: PASS_PRESERVING,
        F.dropout3d: PASS_PRESERVING,
        operator.add: SUM,
        torch.add: SUM,
        operator.sub: SUM,
        torch.sub: SUM,
        operator.mul: PRODUCT,
        torch.mul: PRODUCT,
        operator.truediv: PRODUCT,
        torch.div: PRODUCT,
        builtins.getattr: NONE,
        builtins.len: NONE,
        "add": SUM,
        "sub": SUM,
        "mul": PRODUCT,
        "div": PRODUCT,
        "mean": POOL,
        "sum": POOL,
    }
    table.update(dict.fromkeys(_RELU_LIKE, PASS_RELU))
    table.update(dict.fromkeys(_ZERO_AT_ZERO, PASS_ZERO))
    table.update(dict.fromkeys(_OTHER_ACTIVATIONS, PASS))
    table.update(dict.fromkeys(_NONNEGATIVE_ACTIVATIONS, PASS_NONNEGATIVE))
    table.update(dict.fromkeys(_ROUTE_FUNCTIONS, ROUTE))
    table.update(dict.fromkeys((torch.cat, torch.concat, torch.concatenate), CONCATENATE))
    table.update(dict.fromkeys(_POOL_FUNCTIONS, POOL))
    table.update(dict.fromkeys(_ROUTE_METHODS, ROUTE))
    table.update(dict.fromkeys(_PASS_METHODS, PASS_PRESERVING))
    table.update(dict.fromkeys(_NONE_METHODS, NONE))
    return table


HANDLERS: Mapping[Any, Handler] = _table()
"""The core ops' handlers (`ops.table` merges them with every other family's)."""
