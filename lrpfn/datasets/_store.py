"""The Zarr store of an explained data set: its layout, the settings check, chunk writes.

Layout (a Zarr v3 group; one row per dataset index, in dataset order; every array chunked
by `batch_size` rows along its first axis, so one batch of the run is one chunk of each):

| array | shape | dtype | rows that could not be explained |
| --- | --- | --- | --- |
| `relevance` | `(N, *input_shape)` | float16 or float32 | NaN |
| `logits` | `(N, classes)` | float32 | NaN |
| `target` | `(N,)` | int64, the explained class | -1 |
| `ratio` | `(N,)` | float32, `sum(relevance) / logits[target]` | NaN |
| `label` | `(N,)` | int64, the data set's label (-1 if none) | -1 |
| `valid` | `(N,)` | bool | False |
| `path` | `(N,)` | variable-length string: the sample's file (ImageFolder), "" where none | "" |
| `inputs` | `(N, h, w, 3)` | uint8, the input as RGB pixels, shrunk to at most `thumbnail` pixels a side (only for inputs `(1 or 3, H, W)`) | 0 |
| `nodes/<name>` | `(N, channels)` | float32, relevance of node `<name>` summed over all axes after the channel axis | NaN |
| `complete` | `(chunks,)` | bool, chunk `k` is whole | |

A chunk is written chunk file by chunk file (Zarr writes each file atomically: a
temporary file renamed into place), and `complete[k]` is set only after every array's
chunk `k` is whole. A run that dies between leaves `complete[k]` unset, so the next run
writes chunk `k` again, entirely.

The group's attributes hold, under "lrpfn", the run's `settings` (compared before a
resumed run writes anything: a store written with other settings is refused), its
provenance (dates, world size, timing, the invalid rows) and `class_names`: the data
set's class names (`dataset.classes`), so that `class_names[label]` names a label, or
null where the data set has none.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import StoreMismatchError

__all__ = [
    "FORMAT",
    "Layout",
    "check_settings",
    "complete_rows",
    "create_or_check",
    "invalid_rows",
    "mark_complete",
    "now",
    "open_existing",
    "store_exists",
    "write_chunk",
]

FORMAT = "lrpfn.datasets/1"
ATTRIBUTE = "lrpfn"
_INTEGER_FILL = -1


@dataclasses.dataclass(frozen=True)
class Layout:
    """The shapes and types of a store: what is needed to create its arrays.

    Attributes:
        rows: the data set's size `N`.
        batch_size: rows per chunk.
        input_shape: one sample's shape.
        classes: the width of the model's output.
        relevance_dtype: "float16" or "float32".
        nodes: `{node name: channels}` for the intermediate relevance kept.
        thumbnail: `(h, w)` of the `inputs` array, or None for no such array.
    """

    rows: int
    batch_size: int
    input_shape: tuple[int, ...]
    classes: int
    relevance_dtype: str
    nodes: Mapping[str, int]
    thumbnail: tuple[int, int] | None = None

    @property
    def chunks(self) -> int:
        return -(-self.rows // self.batch_size)

    def bounds(self, chunk: int) -> tuple[int, int]:
        """The rows `[start, stop)` of chunk `chunk`."""
        start = chunk * self.batch_size
        return start, min(start + self.batch_size, self.rows)

    def arrays(self) -> dict[str, tuple[tuple[int, ...], str, Any]]:
        """`{array path: (shape, dtype, fill value)}`, `complete` excluded."""
        n = self.rows
        arrays = {
            "relevance": ((n, *self.input_shape), self.relevance_dtype, np.nan),
            "logits": ((n, self.classes), "float32", np.nan),
            "target": ((n,), "int64", _INTEGER_FILL),
            "ratio": ((n,), "float32", np.nan),
            "label": ((n,), "int64", _INTEGER_FILL),
            "valid": ((n,), "bool", False),
            "path": ((n,), "str", ""),
        }
        if self.thumbnail is not None:
            arrays["inputs"] = ((n, *self.thumbnail, 3), "uint8", 0)
        for name, channels in self.nodes.items():
            arrays[f"nodes/{name}"] = ((n, channels), "float32", np.nan)
        return arrays


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def create_or_check(
    out: str | Path,
    layout: Layout,
    settings: Mapping[str, Any],
    provenance: Mapping[str, Any],
    overwrite: bool = False,
) -> list[int]:
    """Create the store at `out`, or check that the one there has these `settings`.

    A store written by lrpfn is replaced (not resumed) with `overwrite`, or when its
    settings differ and none of its chunks is complete (a run that failed at its start
    leaves nothing worth keeping); anything else at `out` is never deleted.

    Returns:
        The chunks not yet complete, in order.

    Raises:
        StoreMismatchError: `out` holds something else, or a store with other settings.
    """
    import zarr

    settings = _plain(settings)
    if store_exists(out):
        group = open_existing(out)
        stored = group.attrs.get(ATTRIBUTE, {}).get("settings")
        replace = overwrite or (stored != settings and not group["complete"][:].any())
        if not replace:
            check_settings(out, stored, settings)
            return _missing(group["complete"][:])
    group = zarr.open_group(str(out), mode="w")
    for name, (shape, dtype, fill) in layout.arrays().items():
        chunks = (layout.batch_size, *shape[1:])
        group.create_array(
            name,
            shape=shape,
            chunks=chunks,
            dtype=str if dtype == "str" else dtype,
            fill_value=fill,
            dimension_names=_dimension_names(name, len(shape)),
        )
    group.create_array(
        "complete",
        shape=(layout.chunks,),
        chunks=(1,),
        dtype="bool",
        fill_value=False,
        dimension_names=("chunk",),
    )
    group.attrs[ATTRIBUTE] = {"format": FORMAT, "settings": settings, **_plain(provenance)}
    return list(range(layout.chunks))


def _dimension_names(name: str, ndim: int) -> tuple[str, ...]:
    """Names of the axes (Zarr v3 `dimension_names`, which xarray reads)."""
    if name == "relevance":
        known = {2: ("feature",), 3: ("channel", "x"), 4: ("channel", "y", "x")}
        return ("sample", *known.get(ndim, tuple(f"axis_{i}" for i in range(1, ndim))))
    if name == "logits":
        return ("sample", "class")
    if name == "inputs":
        return ("sample", "y", "x", "rgb")
    if name.startswith("nodes/"):
        return ("sample", f"{name[len('nodes/') :]}_channel")
    return ("sample",)


def store_exists(out: str | Path) -> bool:
    """Whether something is at `out` already (a local path, or an fsspec URL)."""
    if "://" not in str(out):
        path = Path(out)
        return path.is_file() or (path.is_dir() and any(path.iterdir()))
    import zarr

    try:
        zarr.open_group(str(out), mode="r")
    except FileNotFoundError:
        return False
    return True


def open_existing(out: str | Path, format: str = FORMAT, writer: str = "lrpfn.datasets.explain"):
    """The Zarr group at `out` for a resumed run, refused unless `writer` wrote it (its
    attributes carry `format` and it has the `complete` array)."""
    import zarr

    try:
        group = zarr.open_group(str(out), mode="r+")
    except Exception as error:
        raise StoreMismatchError(
            f"{out} exists and is not a Zarr store ({type(error).__name__}: {error}). Fix: "
            "choose another output path, or delete it."
        ) from error
    if group.attrs.get(ATTRIBUTE, {}).get("format") != format or "complete" not in group:
        raise StoreMismatchError(
            f"{out} is a Zarr store but not one written by {writer}. Fix: choose "
            "another output path, or delete it."
        )
    return group


def check_settings(out, stored: Any, settings: dict[str, Any]) -> None:
    if stored == settings:
        return
    stored = stored or {}
    differences = _differences(stored, settings, "")
    raise StoreMismatchError(
        f"{out} was written with other settings; resuming would mix two runs:\n"
        + "\n".join(differences)
        + "\nFix: run with the store's settings to complete it, write to another path, or "
        "pass overwrite=True (--overwrite) to start again."
    )


def _differences(stored: Mapping, settings: Mapping, prefix: str) -> list[str]:
    """One line per setting that differs (nested mappings entry by entry, at most 8)."""
    lines = []
    for key in sorted(set(stored) | set(settings), key=str):
        old, new = stored.get(key, "(missing)"), settings.get(key, "(missing)")
        if old == new:
            continue
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            lines += _differences(old, new, f"{prefix}{key}.")
        else:
            lines.append(f"  {prefix}{key}: store has {old!r}, this run has {new!r}")
    return lines[:8] + ([f"  ... and {len(lines) - 8} more"] if len(lines) > 8 else [])


def _plain(value: Any) -> Any:
    """`value` as the JSON the store's attributes hold (tuples become lists)."""
    return json.loads(json.dumps(value))


def _missing(complete: np.ndarray) -> list[int]:
    return [int(k) for k in np.flatnonzero(~complete)]


def write_chunk(arrays, layout: Layout, chunk: int, blocks: Mapping[str, np.ndarray]) -> None:
    """Write chunk `chunk` of every array (`arrays`: the store's open arrays by path;
    `blocks`: the chunk's rows by path). It counts as complete only once `mark_complete`
    has run."""
    start, stop = layout.bounds(chunk)
    for name in layout.arrays():
        arrays[name][start:stop] = blocks[name]


def mark_complete(arrays, chunk: int) -> None:
    """Record chunk `chunk` as whole (after `write_chunk`)."""
    arrays["complete"][chunk] = True


def complete_rows(arrays, layout: Layout) -> int:
    """How many rows lie in complete chunks (`arrays`: the store's group or open arrays)."""
    done = np.flatnonzero(arrays["complete"][:])
    return int(sum(layout.bounds(int(k))[1] - layout.bounds(int(k))[0] for k in done))


def invalid_rows(group) -> Sequence[int]:
    """The rows marked invalid, in order."""
    return [int(i) for i in np.flatnonzero(~group["valid"][:])]
