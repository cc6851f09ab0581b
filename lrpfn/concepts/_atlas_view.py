"""`Atlas`: an atlas store read back, with reference samples computed on demand.

atlas = lrpfn.concepts.load_atlas("vgg.atlas.zarr", model, dataset, rules)
indices, scores = atlas.top("features.28", "relevance_max")
refs = atlas.references("features.28", 312, n=8)
lrpfn.concepts.plot_atlas({"312": refs}, "features.28.png")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..datasets import DatasetError
from ..engine import Plan, prepare
from ._atlas_store import ATTRIBUTE, FORMAT, ORDERINGS
from ._references import References, reference_batch
from ._scores import Heads, Neurons

__all__ = ["Atlas", "load_atlas"]


class Atlas:
    """An atlas store; `references` needs the model and data set it was computed from.

    Arguments:
        store: the store's folder.
        plan: the prepared model (for `references`).
        dataset: the data set (for `references`).
    """

    def __init__(
        self,
        store: str | Path,
        *,
        plan: Plan | None = None,
        dataset: Any = None,
    ) -> None:
        self.store = str(store)
        self.plan, self.dataset = plan, dataset
        try:
            attributes = self._group().attrs.get(ATTRIBUTE, {})
        except FileNotFoundError as error:
            raise DatasetError(f"no atlas store at {self.store}.") from error
        if attributes.get("format") != FORMAT:
            raise DatasetError(f"{self.store} is not an atlas store (lrpfn.atlas/1).")
        self.layers: list[str] = list(attributes["layers"])
        self.class_names: list[str] | None = attributes.get("class_names")

    def _group(self):
        import zarr

        return zarr.open_group(self.store, mode="r")

    def _layer(self, layer: str):
        if layer not in self.layers:
            raise DatasetError(f"the atlas has no layer {layer!r}; it has {self.layers}.")
        return self._group()[f"layers/{layer}"]

    def kind(self, layer: str) -> str:
        """The kind of the layer's concepts: "channel", "neuron" or "head"."""
        return str(self._layer(layer).attrs["kind"])

    def _spec(self, layer: str) -> str | Neurons | Heads:
        """The layer as a condition key: its name (channels of axis 1), or `Neurons` /
        `Heads` for transformer concepts on the last axis."""
        attributes = self._layer(layer).attrs
        if attributes.get("concept_axis", 1) == 1:
            return layer
        if attributes["kind"] == "head":
            return Heads(layer, int(attributes["channels"]))
        return Neurons(layer)

    def top(self, layer: str, ordering: str = "relevance_sum") -> tuple[np.ndarray, np.ndarray]:
        """`(indices, scores)`, each `(concepts, k)`, best first (index -1: no sample)."""
        if ordering not in ORDERINGS:
            raise DatasetError(f"ordering must be one of {ORDERINGS}, got {ordering!r}.")
        group = self._layer(layer)[ordering]
        return np.asarray(group["indices"][...]), np.asarray(group["scores"][...])

    def class_relevance(self, layer: str) -> np.ndarray:
        """`(classes, concepts)`: per explained class, the mean normalised relevance."""
        return np.asarray(self._layer(layer)["class_relevance"][...])

    def references(
        self,
        layer: str,
        channel: int | Sequence[int],
        n: int = 8,
        *,
        ordering: str = "relevance_sum",
        size: tuple[int, int] = (64, 64),
        to_pixels: Callable[[Tensor], Tensor] | None = None,
        batch_size: int = 32,
    ) -> References:
        """The top `n` samples of concept `channel` (or of several, `(m,)`) in `ordering`,
        with their conditional heatmaps and crops to the concept's receptive field.

        Arguments:
            layer: a layer of the atlas.
            channel: a concept index, or a list of them.
            n: samples per concept, at most the atlas's k.
            ordering: which top-k the samples come from.
            size: `(h, w)` of the crops.
            to_pixels: inputs `(b, C, H, W)` -> RGB `(b, 3, H, W)` in [0, 1] (default: each
                sample's min..max).
            batch_size: samples per conditional walk.

        Returns:
            `References` with a leading concept axis (of length 1 for one int).
        """
        if self.plan is None or self.dataset is None:
            raise DatasetError(
                "references need the model and the data set: use the Atlas returned by "
                "atlas(...), or load_atlas(store, model, dataset, rules)."
            )
        indices, scores = self.top(layer, ordering)
        concepts = np.atleast_1d(np.asarray(channel, dtype=np.int64))
        if concepts.ndim != 1 or (concepts < 0).any() or (concepts >= len(indices)).any():
            raise DatasetError(
                f"channel must be in 0..{len(indices) - 1} (or a list of such), got {channel!r}."
            )
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= indices.shape[1]:
            raise DatasetError(f"n must be an int in 1..{indices.shape[1]} (k), got {n!r}.")
        chosen = indices[concepts, :n]
        targets = np.asarray(self._group()["target"][...])[np.maximum(chosen, 0)]
        return reference_batch(
            self.plan,
            self.dataset,
            self._spec(layer),
            torch.as_tensor(concepts),
            chosen,
            scores[concepts, :n],
            targets,
            size=size,
            to_pixels=to_pixels,
            batch_size=batch_size,
        )

    def render_references(
        self,
        layers: Sequence[str] | None = None,
        n: int = 8,
        *,
        ordering: str = "relevance_sum",
        size: tuple[int, int] = (64, 64),
        to_pixels: Callable[[Tensor], Tensor] | None = None,
        batch_size: int = 32,
    ) -> None:
        """Write every concept's references into the store: per layer
        `references/images (C, n, h, w, 3) uint8`, `references/heatmaps (C, n, h, w)
        float16` and `references/indices (C, n) int64`; for token inputs
        `references/token_relevance (C, n, T) float16` instead of images and heatmaps.
        Each heatmap is divided by its largest absolute value (float16 would lose the
        small relevances of deep layers; a display normalises each map anyway)."""
        import zarr

        group = zarr.open_group(self.store, mode="r+")
        for layer in layers or self.layers:
            channels = int(self._layer(layer).attrs["channels"])
            per_call = max(1, batch_size // n)
            parts = [
                self.references(
                    layer,
                    list(range(first, min(first + per_call, channels))),
                    n,
                    ordering=ordering,
                    size=size,
                    to_pixels=to_pixels,
                    batch_size=batch_size,
                )
                for first in range(0, channels, per_call)
            ]
            arrays = {"indices": np.concatenate([part.indices for part in parts])}
            if parts[0].token_relevance is not None:
                tokens = np.concatenate([part.token_relevance for part in parts])
                arrays["token_relevance"] = _unit_scale(tokens)
            elif parts[0].images is not None:
                arrays["images"] = np.concatenate([part.images for part in parts])
                arrays["heatmaps"] = _unit_scale(np.concatenate([part.crops for part in parts]))
            for name, values in arrays.items():
                group.create_array(
                    f"layers/{layer}/references/{name}",
                    shape=values.shape,
                    dtype=values.dtype,
                    overwrite=True,
                )[...] = values


def _unit_scale(maps: np.ndarray) -> np.ndarray:
    """Each map `(C, n, ...)` divided by its largest absolute value (0 stays 0), float16."""
    flat = maps.reshape(*maps.shape[:2], -1).astype(np.float64)
    largest = np.abs(flat).max(axis=-1, keepdims=True)
    scaled = np.divide(flat, largest, out=np.zeros_like(flat), where=largest > 0)
    return scaled.reshape(maps.shape).astype(np.float16)


def load_atlas(
    store: str | Path,
    model: torch.nn.Module | Plan | None = None,
    dataset: Any = None,
    rules: Any = None,
) -> Atlas:
    """Open an atlas store; with the model (or `Plan`), its rules and the data set,
    `references` can compute heatmaps.

    The model must be the one the atlas was computed with (the store's settings hold its
    SHA-256 under "model_sha256").
    """
    plan = None
    if model is not None:
        plan = model if isinstance(model, Plan) else prepare(model, rules)
    return Atlas(store, plan=plan, dataset=dataset)
