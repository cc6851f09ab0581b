"""The samples of an explained store as the report shows them: per row its input, its
heatmap and the overlay (PNG files), and a record of what the row is (label, target,
prediction, file).

Heatmaps are the relevance summed over the input's channels, brought to the size of the
stored picture (`inputs`; area averaging, which keeps each region's mean relevance), then
coloured by `_colors` (sign-aware, percentile clipping). Without pictures in the store
(inputs that are no images, or `thumbnail=None`), a heatmap of at most 64 pixels a side
is drawn and no input or overlay. Rows that could not be explained get no images.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .. import image
from ._colors import heat_pixels, overlay_pixels
from ._stores import Store, class_name, read_rows

__all__ = ["BLOCK", "has_pictures", "maps_at", "sample_records"]

BLOCK = 256  # rows read from the store at a time
_LONGEST = 64  # pixels a side of a heatmap drawn without a stored picture


def has_pictures(store: Store) -> bool:
    """Whether the store's heatmaps are images (relevance `(N, C, H, W)`)."""
    return store.group["relevance"].ndim == 4


def maps_at(relevance: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`(n, C, H, W)` relevance -> `(n, h, w)` float64: channels summed, area-averaged to
    `size`."""
    maps = torch.from_numpy(np.nan_to_num(relevance.astype(np.float64)).sum(axis=1))
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = torch.nn.functional.interpolate(maps[:, None], size=size, mode="area")[:, 0]
    return maps.numpy()


def _blocks(store: Store, rows: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for start in range(0, len(rows), BLOCK):
        part = rows[start : start + BLOCK]
        yield part, read_rows(store.group["relevance"], part)


def _picture_size(store: Store) -> tuple[int, int]:
    if "inputs" in store.group:
        return tuple(store.group["inputs"].shape[1:3])
    height, width = store.group["relevance"].shape[-2:]
    scale = min(1.0, _LONGEST / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def sample_records(
    store: Store, rows: np.ndarray, out: Path, percentile: float, cmap: str
) -> list[dict]:
    """Write the images of `rows` (sorted) under `out/img/samples/` and return one record
    per row."""
    group, names = store.group, store.class_names
    labels, targets, valid = group["label"][:], group["target"][:], group["valid"][:]
    paths = group["path"][:] if "path" in group else np.full(store.rows, "", dtype=object)
    logits = group["logits"]
    records = []
    pictures = has_pictures(store)
    size = _picture_size(store) if pictures else None
    for part, relevance in _blocks(store, rows):
        predicted = np.nan_to_num(read_rows(logits, part), nan=-np.inf).argmax(axis=1)
        inputs = read_rows(group["inputs"], part) if pictures and "inputs" in group else None
        maps = maps_at(relevance, size) if pictures else None
        for i, row in enumerate(part.tolist()):
            record = {
                "row": row,
                "label": int(labels[row]),
                "label_name": class_name(names, int(labels[row])),
                "target": int(targets[row]),
                "target_name": class_name(names, int(targets[row])),
                "predicted": int(predicted[i]) if valid[row] else -1,
                "path": str(paths[row]),
                "valid": bool(valid[row]),
                "images": {},
            }
            if pictures and valid[row]:
                record["images"] = _write_images(out, row, maps[i], inputs, i, percentile, cmap)
            records.append(record)
    return records


def _write_images(out, row, heat_map, inputs, i, percentile, cmap) -> dict[str, str]:
    folder = out / "img" / "samples"
    names = {"heatmap": f"img/samples/{row}-heatmap.png"}
    image.save_png(heat_pixels(heat_map, percentile, cmap), out / names["heatmap"])
    if inputs is not None:
        names["input"] = f"img/samples/{row}-input.png"
        names["overlay"] = f"img/samples/{row}-overlay.png"
        image.save_png(inputs[i], folder / f"{row}-input.png")
        image.save_png(
            overlay_pixels(inputs[i], heat_map, percentile, cmap), out / names["overlay"]
        )
    return names
