"""Fold BatchNorm into the layer before it, or make it a per-channel affine node.

An eval-mode BatchNorm whose input comes from a linear or convolution node used by
nothing else is folded into it,
$W' = W \\gamma / \\sqrt{\\sigma^2 + \\epsilon}$,
$b' = (b - \\mu) \\gamma / \\sqrt{\\sigma^2 + \\epsilon} + \\beta$;
any other BatchNorm becomes a per-channel affine node (`ops.functional.channel_affine`).
The functional form `F.batch_norm(x, running_mean, running_var, weight, bias, False, ...)`
(timm's `BatchNormAct2d`, and every BatchNorm captured by `torch.export`), in any mix of
positional and keyword arguments, is folded or made affine exactly the same way when its
statistics and parameters are module attributes (or None); otherwise the node stays and
its handler makes it a per-channel affine layer at run time (`ops.normalization`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import TrainingModeError
from ..ops.functional import channel_affine
from ..ops.normalization import batch_norm_affine, batch_norm_arguments
from .edit import buffer_node, modules_of, replace_node
from .source import FOLDED, SOURCE, Source, attribute

__all__ = ["BATCH_NORMS", "fold_batch_norms"]

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


_FOLDABLE = (F.linear, F.conv1d, F.conv2d, F.conv3d)


def _batch_norm_affine(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with BN(x) = x * scale + shift per channel, in eval mode."""
    with torch.no_grad():
        mean, var = module.running_mean, module.running_var
        scale = torch.rsqrt(var + module.eps)
        if module.weight is not None:
            scale = scale * module.weight
        shift = -mean * scale
        if module.bias is not None:
            shift = shift + module.bias
    return scale, shift  # new tensors (computed under no_grad), never the module's own


def fold_batch_norms(gm: fx.GraphModule) -> None:
    _fold_functional_batch_norms(gm)
    for node, module in list(modules_of(gm)):
        if not isinstance(module, BATCH_NORMS):
            continue
        if module.running_mean is None:
            raise TrainingModeError(
                f"BatchNorm node {node.name!r} ({node.target}) has track_running_stats=False, so "
                "it normalises with batch statistics even in eval mode and mixes samples. "
                "Fix: explain a copy of the model with running statistics."
            )
        scale, shift = _batch_norm_affine(module)
        (x,) = node.args
        _fold_or_affine(gm, node, x, scale, shift, Source(node.target, type(module)))


def _fold_functional_batch_norms(gm: fx.GraphModule) -> None:
    """`F.batch_norm` nodes (eval mode) whose statistics and parameters are module
    attributes: folded into the layer before, or a per-channel affine node, as modules are."""
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not F.batch_norm:
            continue
        arguments = batch_norm_arguments(node.args, node.kwargs)
        constants = {}
        for key in ("running_mean", "running_var", "weight", "bias"):
            value = arguments[key]
            if isinstance(value, fx.Node) and value.op == "get_attr":
                constants[key] = attribute(gm, value.target)
            elif value is None and key in ("weight", "bias"):
                constants[key] = None
            else:
                break  # computed or missing statistics: the handler makes it affine at run time
        else:
            with torch.no_grad():
                scale, shift = batch_norm_affine({**arguments, **constants})
            _fold_or_affine(gm, node, arguments["input"], scale, shift, node.meta.get(SOURCE))


def _fold_or_affine(gm, node, x, scale, shift, source) -> None:
    if _foldable(x):
        _fold_into(gm, x, scale, shift)
        x.meta[FOLDED] = node.name
        node.replace_all_uses_with(x)
        gm.graph.erase_node(node)
        return
    scale_node = buffer_node(gm, node, scale, "_lrpfn_bn_scale_")
    shift_node = buffer_node(gm, node, shift, "_lrpfn_bn_shift_")
    with gm.graph.inserting_before(node):
        affine = gm.graph.call_function(channel_affine, (x, scale_node, shift_node))
    affine.meta = dict(node.meta)
    if source is not None:
        affine.meta[SOURCE] = source
    replace_node(gm, node, affine)


def _foldable(x) -> bool:
    return (
        isinstance(x, fx.Node)
        and x.op == "call_function"
        and x.target in _FOLDABLE
        and len(x.users) == 1
        and isinstance(x.args[1], fx.Node)
        and x.args[1].op == "get_attr"
    )


def _fold_into(gm: fx.GraphModule, affine: fx.Node, scale: torch.Tensor, shift: torch.Tensor):
    weight = attribute(gm, affine.args[1].target)
    bias_arg = affine.args[2] if len(affine.args) > 2 else affine.kwargs.get("bias")
    bias = attribute(gm, bias_arg.target) if bias_arg is not None else None
    with torch.no_grad():  # arithmetic makes new tensors: the module's are never written
        view = (-1,) + (1,) * (weight.ndim - 1)
        folded_weight = weight * scale.reshape(view)
        folded_bias = shift if bias is None else bias * scale + shift
    weight_node = buffer_node(gm, affine, folded_weight, "_lrpfn_folded_weight_")
    bias_node = buffer_node(gm, affine, folded_bias, "_lrpfn_folded_bias_")
    args = list(affine.args)
    args[1] = weight_node
    kwargs = dict(affine.kwargs)
    if len(args) > 2:
        args[2] = bias_node
    else:
        kwargs["bias"] = bias_node
    affine.args, affine.kwargs = tuple(args), kwargs
