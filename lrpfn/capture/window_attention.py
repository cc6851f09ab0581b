"""Swin's shifted-window attention as ordinary ops (torchvision's `swin_t`, `swin_s`, `swin_b`).

torchvision wraps `shifted_window_attention` for `torch.fx` (its padding and shift depend
on the input's shape), so the trace records it as one call. `decompose(gm)` replaces each
such call by

    window_partition (pad, cyclic shift, windows) -> F.linear (qkv) -> window_heads (q, k, v)
    -> q @ k.mT -> window_scores (scale, relative position bias, shift mask) -> softmax
    -> P @ V -> merge_window_heads -> F.linear (proj) -> window_reverse

which computes the same function. The helper ops are in `ops.window_functional`.
Cosine attention (Swin V2, `logit_scale`) is left as the one call, reported unsupported.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx

from ..ops.window_functional import (
    merge_window_heads,
    window_heads,
    window_partition,
    window_reverse,
    window_scores,
)

__all__ = ["decompose"]

_TARGET = "torchvision.models.swin_transformer.shifted_window_attention"
_ARGS = (
    "input", "qkv_weight", "proj_weight", "relative_position_bias", "window_size",
    "num_heads", "shift_size", "attention_dropout", "dropout", "qkv_bias", "proj_bias",
    "logit_scale", "training",
)  # fmt: skip


def _qualified(target) -> str:
    return f"{getattr(target, '__module__', '')}.{getattr(target, '__name__', '')}"


def decompose(gm: fx.GraphModule) -> None:
    """Replace each `shifted_window_attention` call (without cosine attention) in place."""
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or _qualified(node.target) != _TARGET:
            continue
        bound = dict(zip(_ARGS, node.args, strict=False))
        bound.update(node.kwargs)
        if bound.get("logit_scale") is not None:
            continue
        x, heads = bound["input"], bound["num_heads"]
        window_size, shift_size = list(bound["window_size"]), list(bound["shift_size"])
        with graph.inserting_before(node):
            # size()[:], not size(): the traversal keeps values derived from shape queries
            shape = graph.call_function(
                operator.getitem, (graph.call_method("size", (x,)), slice(None))
            )
            windows = graph.call_function(window_partition, (x, window_size, shift_size))
            qkv = graph.call_function(
                F.linear, (windows, bound["qkv_weight"], bound.get("qkv_bias"))
            )
            q, k, v = (graph.call_function(window_heads, (qkv, heads, i)) for i in range(3))
            scores = graph.call_function(
                torch.matmul, (q, graph.call_method("transpose", (k, -2, -1)))
            )
            scale = graph.call_function(
                operator.pow,
                (graph.call_function(operator.floordiv, (_channels(graph, shape), heads)), -0.5),
            )
            masked = graph.call_function(
                window_scores,
                (scores, bound["relative_position_bias"], shape, window_size, shift_size, scale),
            )
            weights = graph.call_function(torch.softmax, (masked, -1))
            merged = graph.call_function(
                merge_window_heads, (graph.call_function(torch.matmul, (weights, v)),)
            )
            projected = graph.call_function(
                F.linear, (merged, bound["proj_weight"], bound.get("proj_bias"))
            )
            result = graph.call_function(
                window_reverse, (projected, shape, window_size, shift_size)
            )
        result.meta = dict(node.meta)
        node.replace_all_uses_with(result)
        graph.erase_node(node)


def _channels(graph: fx.Graph, shape: fx.Node) -> fx.Node:
    return graph.call_function(operator.getitem, (shape, -1))
