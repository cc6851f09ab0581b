"""What a canonical node remembers of where it came from, read by every later layer.

Graph passes replace modules by functional nodes; `node.meta[SOURCE]` keeps the source
module's name and type (composites match rules by them), `node.meta[FOLDED]` names a
BatchNorm folded into the node (its relevance is the node's), and `node.meta[NAME]` the
name of the node a pass replaced (the canonical graph keeps it). `attribute` reads a
dotted attribute path of a module.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["FOLDED", "NAME", "SOURCE", "Source", "attribute"]


SOURCE = "lrpfn_source"


FOLDED = "lrpfn_folded"


NAME = "lrpfn_name"


class Source(NamedTuple):
    """The module a lowered node came from: qualified name and type."""

    name: str
    type: type


def attribute(module: torch.nn.Module, path: str):
    """The attribute at dotted `path` of `module` (tensors detached, never copied)."""
    value = module
    for part in path.split("."):
        value = getattr(value, part)
    return value.detach() if isinstance(value, torch.Tensor) else value
