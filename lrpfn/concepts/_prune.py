r"""Relevance-guided pruning: a copy of a model with its least relevant channels removed.

Yeom et al. (2021), "Pruning by explaining: a novel criterion for deep neural network
pruning", Pattern Recognition 115, 107899: the relevance of a channel $c$ of layer $l$,
summed over a set of reference samples, $S_c = \sum_x R^l_c(x)$, is a criterion for
pruning; the channels with the smallest $S_c$ go first. The atlas
(`lrpfn.concepts.atlas`) stores per class the mean normalised relevance of every
channel, `class_relevance (classes, C)`; its mean over the classes (each class
weighted alike; classes never explained are left out) is the score here, or over chosen
`classes` only, which prunes a model for those classes.

A channel is removed by masking: the copy computes the model's own function with the
channel's output set to zero, $a^l_c \leftarrow 0$ (so every later layer sees it as
absent). Where the named layer is a convolution or linear layer whose only user is a
BatchNorm, the mask comes after the BatchNorm: lrpfn explains that pair as one folded
layer, and the filter together with its normalisation is what is removed.

`weight_magnitude` gives the usual baseline's scores, the $L_1$ norm of each filter's
weights (Li et al. 2017, "Pruning filters for efficient ConvNets", ICLR).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, fx, nn

from ..errors import LRPError

__all__ = ["PruningError", "mask_channels", "prune", "weight_magnitude"]

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class PruningError(LRPError, ValueError):
    """Scores that do not fit the model, a bad fraction, or a layer that cannot be found."""


def mask_channels(x: Tensor, keep: Tensor) -> Tensor:
    """`x` with the channels (axis 1) where `keep` is 0 set to zero."""
    if x.ndim < 2 or x.shape[1] != keep.numel():
        raise PruningError(
            f"a pruned layer's output has shape {tuple(x.shape)}, its scores {keep.numel()} "
            "values: one score per channel (axis 1) is needed."
        )
    return x * keep.reshape(1, -1, *([1] * (x.ndim - 2))).to(x.dtype)


def prune(
    model: nn.Module,
    scores: Mapping[str, Any] | str | Path | Any,
    fraction: float,
    *,
    scope: Literal["layer", "global"] = "layer",
    classes: Sequence[int] | None = None,
) -> fx.GraphModule:
    """A copy of `model` with the `fraction` least relevant channels of each scored layer
    masked to zero (the model itself is left untouched).

    Arguments:
        model: an `nn.Module` that `torch.fx.symbolic_trace` can trace.
        scores: `{layer: (C,) channel scores}` (higher is more relevant; a layer is a
            graph node name as `lrpfn.relevances` keys it, e.g. "_3", or a module name,
            e.g. "features.3"), or an atlas store (a path or an open Zarr group): the
            mean of its `class_relevance` over the classes.
        fraction: the share of channels to remove, in [0, 1].
        scope: "layer": `floor(fraction * C)` channels of every layer; "global": the
            `floor(fraction * total)` lowest scores of all layers together (the scores
            must then be comparable across layers, as the atlas's normalised ones are).
        classes: with an atlas store, average the relevance over these classes only.

    Returns:
        A `torch.fx.GraphModule` computing the model with the removed channels zeroed.

    Raises:
        PruningError: a bad fraction or scope, a layer not in the model, or scores of
            the wrong length.
    """
    if not 0.0 <= fraction <= 1.0:
        raise PruningError(f"fraction must lie in [0, 1], got {fraction!r}.")
    if scope not in ("layer", "global"):
        raise PruningError(f"scope must be 'layer' or 'global', got {scope!r}.")
    table = _scores(scores, classes)
    traced = _trace(copy.deepcopy(model))
    nodes = {layer: _masked_node(traced, layer) for layer in table}
    keep = _keep(table, fraction, scope)
    for number, (layer, node) in enumerate(nodes.items()):
        _insert_mask(traced, node, keep[layer], f"lrpfn_keep_{number}")
    traced.graph.lint()
    traced.recompile()
    return traced.train(model.training)


def weight_magnitude(model: nn.Module, layers: Sequence[str]) -> dict[str, np.ndarray]:
    """`{layer: the L1 norm of each output channel's weights}` for convolution and linear
    layers (named as for `prune`): the weight-magnitude criterion."""
    traced = _trace(model)
    table = {}
    for layer in layers:
        node = _node(traced, layer)
        module = traced.get_submodule(node.target) if node.op == "call_module" else None
        if not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            raise PruningError(
                f"layer {layer!r} is not a convolution or linear layer, so it has no filter "
                "weights to measure. Fix: name the layer's convolution or linear module."
            )
        weight = module.weight.detach().double()
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            weight = weight.transpose(0, 1)  # (in, out / groups, ...) -> out first
        table[layer] = weight.abs().flatten(1).sum(1).numpy()
    return table


def _scores(scores: Any, classes: Sequence[int] | None) -> dict[str, np.ndarray]:
    if isinstance(scores, Mapping):
        if classes is not None:
            raise PruningError("classes= selects classes of an atlas store; got a mapping.")
        return {str(k): np.asarray(v, dtype=np.float64).reshape(-1) for k, v in scores.items()}
    return _atlas_scores(scores, classes)


def _atlas_scores(store: Any, classes: Sequence[int] | None) -> dict[str, np.ndarray]:
    """The mean over (chosen) classes of each layer's `class_relevance`."""
    import zarr

    group = zarr.open_group(str(store), mode="r") if isinstance(store, (str, Path)) else store
    attributes = dict(group.attrs.get("lrpfn", {}))
    if attributes.get("format") != "lrpfn.atlas/1":
        raise PruningError(
            f"{store} is not an atlas store (format {attributes.get('format')!r}). Fix: pass "
            "a store written by lrpfn.concepts.atlas, or a {layer: scores} mapping."
        )
    table = {}
    for layer in attributes.get("layers") or list(group["layers"].group_keys()):
        relevance = group["layers"][layer]["class_relevance"][:].astype(np.float64)
        if classes is not None:
            relevance = relevance[list(classes)]
        explained = relevance[~np.isnan(relevance).all(axis=1)]
        if len(explained) == 0:
            raise PruningError(f"layer {layer!r}: none of the classes was explained.")
        table[layer] = explained.mean(axis=0)
    return table


def _trace(model: nn.Module) -> fx.GraphModule:
    try:
        return fx.symbolic_trace(model)
    except Exception as error:
        raise PruningError(
            f"pruning traces the model with torch.fx, which failed ({type(error).__name__}: "
            f"{error}). Fix: prune a traceable part of the model."
        ) from error


def _node(traced: fx.GraphModule, layer: str) -> fx.Node:
    """The node named `layer`, or the `call_module` node of the module named `layer`."""
    for node in traced.graph.nodes:
        if node.name == layer or (node.op == "call_module" and node.target == layer):
            return node
    known = [n.name for n in traced.graph.nodes if n.op in ("call_module", "call_function")]
    raise PruningError(
        f"no layer {layer!r} in the model; its graph nodes are {', '.join(known)} (module "
        "names such as 'features.3' are accepted too)."
    )


def _masked_node(traced: fx.GraphModule, layer: str) -> fx.Node:
    """Where the mask goes: after the layer, or after its BatchNorm (folded by lrpfn)."""
    node = _node(traced, layer)
    users = list(node.users)
    only = users[0] if len(users) == 1 else None
    if only is not None and only.op == "call_module":
        return only if isinstance(traced.get_submodule(only.target), _NORMS) else node
    return node


def _keep(table: dict[str, np.ndarray], fraction: float, scope: str) -> dict[str, Tensor]:
    """Per layer a 0/1 vector: 0 for the lowest scores (ties: the lower channel first)."""
    keep = {layer: np.ones(len(values)) for layer, values in table.items()}
    if scope == "layer":
        for layer, values in table.items():
            keep[layer][np.argsort(values, kind="stable")[: math.floor(fraction * len(values))]] = 0
    else:
        everything = [
            (v, layer, c) for layer, values in table.items() for c, v in enumerate(values)
        ]
        everything.sort(key=lambda item: item[0])  # stable: layers in order, channels in order
        for _, layer, channel in everything[: math.floor(fraction * len(everything))]:
            keep[layer][channel] = 0
    return {layer: torch.tensor(values, dtype=torch.float32) for layer, values in keep.items()}


def _insert_mask(traced: fx.GraphModule, node: fx.Node, keep: Tensor, name: str) -> None:
    """`node`'s users read `mask_channels(node, keep)` instead of `node`."""
    traced.register_buffer(name, keep)
    with traced.graph.inserting_after(node):
        constant = traced.graph.get_attr(name)
    with traced.graph.inserting_after(constant):
        masked = traced.graph.call_function(mask_channels, (node, constant))
    node.replace_all_uses_with(masked, delete_user_cb=lambda user: user is not masked)
    _check_channels(traced, node, keep)


def _check_channels(traced: fx.GraphModule, node: fx.Node, keep: Tensor) -> None:
    """The scores must have one value per channel of the layer (a module's out size)."""
    if node.op != "call_module":
        return
    module = traced.get_submodule(node.target)
    channels = getattr(module, "out_channels", None) or getattr(module, "out_features", None)
    channels = channels or getattr(module, "num_features", None)
    if channels is not None and channels != len(keep):
        raise PruningError(
            f"layer {node.name!r} has {channels} channels, its scores {len(keep)} values."
        )
