"""The one dispatch table, `HANDLERS`, assembled from every op family.

Each op family keeps the relevance code of its ops in its own small module here, beside
the ops it handles (as JAX registers each transpose rule beside its primitive), and
exports a mapping `HANDLERS` from graph target to handler. This module merges the core
handlers (`core`) with each family's; a key may appear in one family only.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from . import (
    affine,
    attention,
    core,
    elementwise,
    embedding,
    exported,
    normalization,
    recurrent,
    resampling,
    rms_norm,
    state_space,
)  # fmt: skip
from .handler import Handler

__all__ = ["HANDLERS"]

_FAMILIES: tuple[Mapping[Any, Handler], ...] = (
    core.HANDLERS,
    attention.HANDLERS,
    rms_norm.HANDLERS,
    exported.HANDLERS,
    normalization.HANDLERS,
    resampling.HANDLERS,
    affine.HANDLERS,
    elementwise.HANDLERS,
    recurrent.HANDLERS,
    embedding.HANDLERS,
    state_space.HANDLERS,
)


def _merged(families: tuple[Mapping[Any, Handler], ...]) -> Mapping[Any, Handler]:
    table: dict[Any, Handler] = {}
    for family in families:
        clashes = set(table) & set(family)
        if clashes:
            raise RuntimeError(f"op families register the same keys twice: {clashes}")
        table.update(family)
    return MappingProxyType(table)


HANDLERS: Mapping[Any, Handler] = _merged(_FAMILIES)
"""The default dispatch table (read-only: pass `handlers={**HANDLERS, ...}` to extend it)."""
