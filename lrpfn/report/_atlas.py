"""The atlas part of the report: layer by layer, channel by channel, the data set's top
samples under each ordering, which classes use the channel, and its reference crops with
their conditional heatmaps (or, for text, the reference contexts with each token coloured
by its relevance).

The store's layout is that of `lrpfn.concepts.atlas` ("lrpfn.atlas/1"): per layer
`layers/<name>` with `<ordering>/indices` and `<ordering>/scores` `(C, k)`,
`class_relevance (classes, C)`, and optionally `references/images (C, n, h, w, 3)`,
`references/heatmaps (C, n, h, w)`, `references/indices (C, n)` and, for text,
`references/token_relevance (C, n, T)` with the root's `tokens (N, T)`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import image
from ._colors import heat_pixels, overlay_pixels, token_colors
from ._stores import Store

__all__ = ["ORDERINGS", "atlas_layers"]

ORDERINGS = ("relevance_sum", "relevance_max", "activation_sum", "activation_max")


def atlas_layers(store: Store, out: Path, percentile: float, cmap: str) -> list[dict]:
    """One record per layer of the atlas, in the store's order; reference images are
    written under `out/img/atlas/<layer number>/`."""
    group = store.group
    names = store.attributes.get("layers") or list(group["layers"].group_keys())
    tokens = group["tokens"][:] if "tokens" in group else None
    return [
        _layer(group["layers"][name], name, number, out, tokens, percentile, cmap)
        for number, name in enumerate(names)
    ]


def _layer(layer, name, number, out, tokens, percentile, cmap) -> dict:
    attributes = dict(layer.attrs)
    record = {
        "name": name,
        "kind": attributes.get("kind", "channel"),
        "channels": int(attributes.get("channels", layer["class_relevance"].shape[1])),
        "k": int(attributes.get("k", 0)),
        "orderings": {},
        "class_relevance": _finite(layer["class_relevance"][:]),
        "references": None,
    }
    for ordering in ORDERINGS:
        if ordering in layer:
            record["orderings"][ordering] = {
                "indices": layer[ordering]["indices"][:].tolist(),
                "scores": _finite(layer[ordering]["scores"][:]),
            }
    if "references" in layer:
        references = layer["references"]
        if "images" in references:
            record["references"] = _image_references(references, number, out, percentile, cmap)
        elif "token_relevance" in references and tokens is not None:
            record["references"] = _token_references(references, tokens, percentile, cmap)
    return record


def _finite(values: np.ndarray) -> list:
    """Nested lists of the values rounded to 5 decimals, None where NaN (a class never
    explained, a missing sample): JSON has no NaN."""
    rounded = np.round(values.astype(np.float64), 5)
    return np.where(np.isfinite(rounded), rounded, None).tolist()


def _image_references(references, number, out, percentile, cmap) -> list[list[dict]]:
    images, heatmaps = references["images"][:], references["heatmaps"][:].astype(np.float64)
    indices = references["indices"][:]
    folder = f"img/atlas/{number}"
    channels = []
    for channel in range(images.shape[0]):
        shown = []
        for j in range(images.shape[1]):
            if indices[channel, j] < 0:
                continue
            stem = f"{folder}/{channel}-{j}"
            image.save_png(images[channel, j], out / f"{stem}-image.png")
            image.save_png(
                heat_pixels(heatmaps[channel, j], percentile, cmap), out / f"{stem}-heatmap.png"
            )
            overlay = overlay_pixels(images[channel, j], heatmaps[channel, j], percentile, cmap)
            image.save_png(overlay, out / f"{stem}-overlay.png")
            shown.append(
                {
                    "row": int(indices[channel, j]),
                    "image": f"{stem}-image.png",
                    "heatmap": f"{stem}-heatmap.png",
                    "overlay": f"{stem}-overlay.png",
                }
            )
        channels.append(shown)
    return channels


def _token_references(references, tokens, percentile, cmap) -> list[list[dict]]:
    relevance = references["token_relevance"][:].astype(np.float64)
    indices = references["indices"][:]
    channels = []
    for channel in range(relevance.shape[0]):
        shown = []
        for j in range(relevance.shape[1]):
            row = int(indices[channel, j])
            if row < 0:
                continue
            words = [str(t) for t in tokens[row]]
            kept = [i for i, word in enumerate(words) if word != ""]
            values = relevance[channel, j, kept]
            colors = token_colors(values, percentile, cmap) if kept else []
            shown.append(
                {
                    "row": row,
                    "tokens": [
                        [words[i], color, round(float(v), 5)]
                        for i, color, v in zip(kept, colors, values, strict=True)
                    ],
                }
            )
        channels.append(shown)
    return channels
