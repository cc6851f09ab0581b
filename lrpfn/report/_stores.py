"""Opening the stores a report is made from, and telling their kinds apart.

A store is a Zarr v3 group whose attributes hold, under "lrpfn", its `format`:
"lrpfn.datasets/1" (written by `lrpfn.datasets.explain`: one heatmap per sample) or
"lrpfn.atlas/1" (written by `lrpfn.concepts.atlas`: the top samples of every channel).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import ReportError

__all__ = ["ATLAS", "DATASETS", "Store", "class_name", "open_store", "read_rows"]

DATASETS = "lrpfn.datasets/1"
ATLAS = "lrpfn.atlas/1"


@dataclasses.dataclass(frozen=True)
class Store:
    """An open store: its location, kind (`DATASETS` or `ATLAS`), Zarr group and the
    attributes under "lrpfn"."""

    location: str
    kind: str
    group: Any
    attributes: dict

    @property
    def class_names(self) -> list[str] | None:
        return self.attributes.get("class_names")

    @property
    def rows(self) -> int:
        return int(self.group["label"].shape[0])


def open_store(location: str | Path) -> Store:
    """Open the store at `location` for reading.

    Raises:
        ReportError: nothing readable is there, or a Zarr group of another kind.
    """
    import zarr

    try:
        group = zarr.open_group(str(location), mode="r")
    except Exception as error:
        raise ReportError(
            f"{location} is not a Zarr store ({type(error).__name__}: {error}). Fix: pass a "
            "store written by `lrpfn explain-dataset` or `lrpfn atlas`."
        ) from error
    attributes = dict(group.attrs.get("lrpfn", {}))
    kind = attributes.get("format")
    if kind not in (DATASETS, ATLAS) or "label" not in group:
        raise ReportError(
            f"{location} is a Zarr store of format {kind!r}, not one written by "
            f"`lrpfn explain-dataset` ({DATASETS!r}) or `lrpfn atlas` ({ATLAS!r})."
        )
    return Store(str(location), kind, group, attributes)


def class_name(names: list[str] | None, label: int) -> str:
    """The name of class `label` ("3" where the store has no names; "" for -1)."""
    if label < 0:
        return ""
    if names is not None and label < len(names):
        return str(names[label])
    return str(label)


def read_rows(array: Any, rows: np.ndarray) -> np.ndarray:
    """`array[rows]` for sorted `rows`, read one chunk at a time (a Zarr array indexed by a
    list of rows reads them one by one)."""
    step = array.chunks[0]
    parts = []
    for start in range(0, array.shape[0], step):
        inside = rows[(rows >= start) & (rows < start + step)]
        if len(inside):
            parts.append(array[start : start + step][inside - start])
    if not parts:
        return np.zeros((0, *array.shape[1:]), dtype=array.dtype)
    return np.concatenate(parts)
