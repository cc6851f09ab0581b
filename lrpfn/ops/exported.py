"""Handlers for the aten ops `torch.export` emits that have no torch-level twin.

`capture.export` rewrites every aten op with a torch-level equivalent (`aten.conv2d` ->
`F.conv2d`, ...) before the table is consulted; the ops here keep their
`OpOverloadPacket` as the graph target (`torch.ops.aten.slice`). They move or select
values (routed exactly by their vector-Jacobian product, so a slice, a select or an
expand passes relevance back to the elements it read), copy them (passed), average them
(a parameter-free linear op under the node's rule), or query shapes (no relevance:
`sym_size` and friends are non-data nodes, see `engine.analyses.data_flow`). Comparisons
(`aten.ge`, ...) are boolean decisions about the data: no relevance flows through them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .handler import NONE, PASS_PRESERVING, ROUTE, Handler
from .linear import POOL

__all__ = ["HANDLERS", "SHAPE_QUERIES"]

aten = torch.ops.aten

_ROUTES = (
    "slice", "select", "expand", "index", "t", "numpy_T", "repeat", "unflatten", "swapaxes",
    "view_as", "expand_as", "max_pool2d_with_indices", "max_pool3d_with_indices",
    "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "_unsafe_view", "channel_shuffle", "diagonal", "index_select", "gather", "topk",
)  # fmt: skip
# comparisons: a boolean decision about the data (a routing choice, a threshold); no
# relevance flows back through it, the values it selects carry relevance where they are used
_DECISIONS = ("eq", "ne", "lt", "le", "gt", "ge")
_PASSES = ("contiguous", "clone", "alias", "_to_copy", "to", "detach", "type_as", "identity")
_POOLS = ("_adaptive_avg_pool2d",)
SHAPE_QUERIES = tuple(
    getattr(aten, name)
    for name in ("sym_size", "sym_numel", "sym_stride", "sym_storage_offset", "size", "stride")
    if hasattr(aten, name)
)
"""aten ops whose result is a shape: non-data nodes."""


def _packets(names: tuple[str, ...]) -> list[Any]:
    return [getattr(aten, name) for name in names if hasattr(aten, name)]


HANDLERS: Mapping[Any, Handler] = {
    **dict.fromkeys(_packets(_ROUTES), ROUTE),
    **dict.fromkeys(_packets(_PASSES), PASS_PRESERVING),
    **dict.fromkeys(_packets(_POOLS), POOL),
    **dict.fromkeys(SHAPE_QUERIES, NONE),
    **dict.fromkeys(_packets(_DECISIONS), NONE),
}
