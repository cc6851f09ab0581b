"""The Zarr store of an atlas: its layout, the settings check, chunk and final writes.

Layout (a Zarr v3 group; docs/concepts.md and the contract in the atlas brief):

| array | shape | dtype | written |
| --- | --- | --- | --- |
| `label`, `target` | `(N,)` | int64 (-1: none) | per chunk |
| `path` | `(N,)` | str ("" where the data set has no files) | per chunk |
| `logits` | `(N, classes)` | float32 | per chunk |
| `layers/<L>/<ordering>/samples` | `(N, C)` | the run's float type: every sample's normalised score, the rows the top-k come from | per chunk |
| `complete` | `(chunks,)` | bool: chunk `j` is whole | per chunk |
| `layers/<L>/<ordering>/indices` | `(C, k)` | int64, best first, -1 where fewer than k samples | at the end |
| `layers/<L>/<ordering>/scores` | `(C, k)` | float32, NaN where the index is -1 | at the end |
| `layers/<L>/class_relevance` | `(classes, C)` | float32: per explained class, the mean normalised relevance (sum) of each concept; NaN for a class never explained | at the end |
| `class_count` | `(classes,)` | int64: samples explained per class | at the end |

`<ordering>` is one of `relevance_sum`, `relevance_max`, `activation_sum`,
`activation_max`. Every per-chunk array is chunked by `batch_size` rows, so one batch of
the run is one chunk of each; Zarr writes each chunk file atomically (a temporary file
renamed into place) and `complete[j]` is set only after all of chunk `j`'s files are
written, so a run that dies leaves `complete[j]` unset and the next run writes chunk `j`
again. The group's attributes hold, under "lrpfn": "format" (`lrpfn.atlas/1`), the run's
"settings" (a resumed run with other settings is refused, listing what differs),
"class_names", "layers" (in the order given) and provenance; each layer group's
attributes hold {"channels", "kind", "k"}.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets import check_settings, open_existing, store_exists

__all__ = [
    "ATTRIBUTE",
    "FORMAT",
    "ORDERINGS",
    "AtlasLayout",
    "create_or_check",
    "mark_complete",
    "now",
    "write_rows",
]

FORMAT = "lrpfn.atlas/1"
ATTRIBUTE = "lrpfn"
ORDERINGS = ("relevance_sum", "relevance_max", "activation_sum", "activation_max")


@dataclasses.dataclass(frozen=True)
class AtlasLayout:
    """The shapes and types of an atlas store.

    Attributes:
        rows: the data set's size `N`.
        batch_size: rows per chunk.
        classes: the width of the model's output.
        k: samples kept per concept and ordering.
        layers: `((name, concepts, kind, concept axis), ...)` in the order given (axis 1,
            or -1 for `Neurons`/`Heads` of transformers).
        score_dtype: "float32" or "float64", the per-sample scores' type.
    """

    rows: int
    batch_size: int
    classes: int
    k: int
    layers: tuple[tuple[str, int, str, int], ...]
    score_dtype: str

    @property
    def chunks(self) -> int:
        return -(-self.rows // self.batch_size)

    def bounds(self, chunk: int) -> tuple[int, int]:
        """The rows `[start, stop)` of chunk `chunk`."""
        start = chunk * self.batch_size
        return start, min(start + self.batch_size, self.rows)

    def row_arrays(self) -> dict[str, tuple[tuple[int, ...], Any, Any]]:
        """`{path: (shape, dtype, fill)}` of the arrays written chunk by chunk."""
        n = self.rows
        arrays: dict[str, tuple[tuple[int, ...], Any, Any]] = {
            "label": ((n,), "int64", -1),
            "target": ((n,), "int64", -1),
            "path": ((n,), str, ""),
            "logits": ((n, self.classes), "float32", np.nan),
        }
        for name, channels, *_ in self.layers:
            for ordering in ORDERINGS:
                arrays[f"layers/{name}/{ordering}/samples"] = (
                    (n, channels),
                    self.score_dtype,
                    np.nan,
                )
        return arrays

    def final_arrays(self) -> dict[str, tuple[tuple[int, ...], Any, Any]]:
        """`{path: (shape, dtype, fill)}` of the arrays written once, at the end."""
        arrays: dict[str, tuple[tuple[int, ...], Any, Any]] = {
            "class_count": ((self.classes,), "int64", 0)
        }
        for name, channels, *_ in self.layers:
            for ordering in ORDERINGS:
                arrays[f"layers/{name}/{ordering}/indices"] = ((channels, self.k), "int64", -1)
                arrays[f"layers/{name}/{ordering}/scores"] = (
                    (channels, self.k),
                    "float32",
                    np.nan,
                )
            arrays[f"layers/{name}/class_relevance"] = (
                (self.classes, channels),
                "float32",
                np.nan,
            )
        return arrays


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def create_or_check(
    out: str | Path, layout: AtlasLayout, settings: Mapping[str, Any], attributes: Mapping
) -> list[int]:
    """Create the store at `out`, or check that the one there has these `settings`.

    Returns:
        The chunks not yet complete, in order.

    Raises:
        StoreMismatchError: `out` holds something else, or an atlas with other settings.
    """
    import zarr

    settings = _plain(settings)
    if store_exists(out):
        group = open_existing(out, FORMAT, "lrpfn.concepts.atlas")
        check_settings(out, group.attrs.get(ATTRIBUTE, {}).get("settings"), settings)
        return [int(j) for j in np.flatnonzero(~group["complete"][:])]
    group = zarr.open_group(str(out), mode="w")
    for name, (shape, dtype, fill) in layout.row_arrays().items():
        chunks = (layout.batch_size, *shape[1:])
        group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill)
    for name, (shape, dtype, fill) in layout.final_arrays().items():
        group.create_array(name, shape=shape, dtype=dtype, fill_value=fill)
    group.create_array(
        "complete", shape=(layout.chunks,), chunks=(1,), dtype="bool", fill_value=False
    )
    for name, channels, kind, axis in layout.layers:
        group[f"layers/{name}"].attrs.update(
            {"channels": channels, "kind": kind, "k": layout.k, "concept_axis": axis}
        )
    group.attrs[ATTRIBUTE] = _plain(
        {"format": FORMAT, "settings": settings, "complete": False, **attributes}
    )
    return list(range(layout.chunks))


def write_rows(group, layout: AtlasLayout, chunk: int, blocks: Mapping[str, np.ndarray]) -> None:
    """Write chunk `chunk` of every per-chunk array; it counts only after `mark_complete`."""
    start, stop = layout.bounds(chunk)
    for name in layout.row_arrays():
        group[name][start:stop] = blocks[name]


def mark_complete(group, chunk: int) -> None:
    group["complete"][chunk] = True


def _plain(value: Any) -> Any:
    """`value` as the JSON the store's attributes hold (tuples become lists)."""
    return json.loads(json.dumps(value))
