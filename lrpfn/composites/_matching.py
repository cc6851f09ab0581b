"""The key language of rule mappings: which key matches which graph node.

A key is a node or module name (`str`), a module type or functional op, a layer family
(`CONVOLUTION`, ...), a position (`First(...)`, `Last(...)`) or a predicate
`(NodeInfo) -> bool`. When several keys match a node, a name beats a position or
predicate, which beats a type or family (`level`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import fx

from ..errors import InvalidRuleError
from ..ops.functional import channel_affine, padded_convolution
from ..ops.handler import Handler

__all__ = [
    "ANY",
    "BATCHNORM",
    "CONVOLUTION",
    "DENSE",
    "MATMUL",
    "NORMALIZATION",
    "OWN_RULE_SHAPES",
    "POOLING",
    "PRODUCT",
    "SOFTMAX",
    "SUM",
    "Family",
    "First",
    "Last",
    "NodeInfo",
    "family_of",
    "level",
    "matches",
]


class NodeInfo(NamedTuple):
    """What keys and predicates see of a node that takes a rule."""

    name: str  # the fx node name
    module: str | None  # qualified name of the source module, if any
    module_type: type | None  # its type
    target: Any  # the fx target (function, method name, module path)
    family: str  # "dense", "convolution", "batchnorm", "normalization", "pooling", "sum",
    # "product", "softmax", "matmul"
    position: int  # index among the nodes that take a rule, in graph order


@dataclass(frozen=True)
class Family:
    """A key matching a layer family, e.g. `CONVOLUTION` (Conv and ConvTranspose, any dim)."""

    name: str

    def __repr__(self) -> str:
        return self.name.upper()


CONVOLUTION, DENSE, POOLING = Family("convolution"), Family("dense"), Family("pooling")


SUM, BATCHNORM, PRODUCT = Family("sum"), Family("batchnorm"), Family("product")


NORMALIZATION = Family("normalization")


SOFTMAX, MATMUL = Family("softmax"), Family("matmul")


OWN_RULE_SHAPES = ("product", "softmax", "matmul")  # families whose rules are not linear rules


ANY = Family("any")  # every node that takes a linear rule (the single-rule form)


@dataclass(frozen=True)
class First:
    """The first node in graph order (from the input) matched by any of `keys`."""

    keys: tuple

    def __init__(self, *keys: Any) -> None:
        object.__setattr__(self, "keys", keys or (ANY,))


@dataclass(frozen=True)
class Last:
    """The last node in graph order (nearest the output) matched by any of `keys`."""

    keys: tuple

    def __init__(self, *keys: Any) -> None:
        object.__setattr__(self, "keys", keys or (ANY,))


_CONVOLUTIONS = {
    F.conv1d,
    F.conv2d,
    F.conv3d,
    F.conv_transpose1d,
    F.conv_transpose2d,
    F.conv_transpose3d,
    padded_convolution,
}


def family_of(node: fx.Node, handler: Handler) -> str:
    own = getattr(handler, "family", "")
    if own:
        return own
    if handler.kind == "sum":
        return "sum"
    if handler.kind == "product":
        return "product"
    if node.target is F.linear:
        return "dense"
    if node.target in _CONVOLUTIONS:
        return "convolution"
    if node.target in (channel_affine, F.batch_norm, torch.addcmul, "addcmul"):
        return "batchnorm"  # per-channel or elementwise scale and shift
    if node.target in (F.layer_norm, F.group_norm):
        return "normalization"
    return "pooling"


def _type_matches(key: Any, info: NodeInfo) -> bool:
    if isinstance(key, Family):
        if key is ANY:
            return info.family not in OWN_RULE_SHAPES
        return key.name == info.family
    if isinstance(key, type):
        return info.module_type is not None and issubclass(info.module_type, key)
    return key is info.target


_NAME, _POSITION, _TYPE = 0, 1, 2


def level(key: Any) -> int:
    if isinstance(key, str):
        return _NAME
    if isinstance(key, (First, Last)):
        return _POSITION
    if isinstance(key, (Family, type)) or key in _OP_KEYS:
        return _TYPE
    if callable(key):
        return _POSITION
    raise InvalidRuleError(
        f"unsupported rule key {key!r}: use a node or module name (str), a module type, a "
        "functional op, a family such as composites.CONVOLUTION, composites.First(...), "
        "or a predicate (NodeInfo) -> bool."
    )


_OP_KEYS = frozenset(
    {
        F.linear,
        F.layer_norm,
        F.group_norm,
        F.batch_norm,
        torch.addcmul,
        channel_affine,
        *_CONVOLUTIONS,
    }
)


def matches(key: Any, info: NodeInfo, infos: tuple[NodeInfo, ...]) -> bool:
    if isinstance(key, str):
        return key in (info.name, info.module)
    if isinstance(key, First):
        return any(info is other for other in _first(key.keys, infos))
    if isinstance(key, Last):
        return any(info is other for other in _first(key.keys, tuple(reversed(infos))))
    if level(key) == _TYPE:
        return _type_matches(key, info)
    return bool(key(info))


def _first(keys: tuple, infos: Iterable[NodeInfo]) -> tuple[NodeInfo, ...]:
    for info in infos:
        if any(_type_matches(key, info) for key in keys):
            return (info,)
    return ()
