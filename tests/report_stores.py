"""Stores for the report's tests: an explained digits store (`lrpfn.datasets.explain`) and
tiny atlas stores written by hand after the layout of `lrpfn.concepts.atlas`
("lrpfn.atlas/1": a group per layer with the four orderings' indices and scores, the
per-class relevance and the reference crops, or token relevance for text)."""

from pathlib import Path

import numpy as np
import torch

from lrpfn import composites, datasets

ROWS = 200
ORDERINGS = ("relevance_sum", "relevance_max", "activation_sum", "activation_max")
TEXT_TOKENS = (
    ("the", "cat", "sat", "on", "the", "mat", "", ""),
    ("a", "dog", "ran", "", "", "", "", ""),
    ("stocks", "fell", "sharply", "today", "in", "new", "york", "trading"),
    ("rain", "is", "expected", "tomorrow", "", "", "", ""),
)


def digits_store(out: Path) -> Path:
    """The first `ROWS` digits explained by the (untrained, seeded) digits CNN."""
    subset = torch.utils.data.Subset(datasets.Digits(), range(ROWS))
    datasets.explain(
        datasets.digits_cnn(),
        subset,
        composites.epsilon_plus(),
        out,
        batch_size=64,
        normalization=((0.0,), (1.0,)),
        progress=False,
    )
    return out


def atlas_store(
    out: Path,
    labels: np.ndarray,
    class_names: list[str] | None,
    layers: dict[str, int],
    *,
    k: int = 5,
    references: int = 3,
    tokens: tuple[tuple[str, ...], ...] | None = None,
    seed: int = 0,
) -> Path:
    """An atlas store of `len(labels)` rows with `layers` `{name: channels}`; random
    orderings (best first), per-class relevance (class 1 never explained: NaN), and
    references: `references` crops of 12x12 (or token relevance with `tokens`); the last
    reference of channel 0 of every layer is missing (-1)."""
    import zarr

    rng = np.random.default_rng(seed)
    rows = len(labels)
    classes = len(class_names) if class_names else int(labels.max()) + 1
    group = zarr.open_group(str(out), mode="w")
    group.create_array("label", data=labels.astype(np.int64))
    group.create_array("target", data=labels.astype(np.int64))
    group.create_array("logits", data=rng.normal(size=(rows, classes)).astype(np.float32))
    path = group.create_array("path", shape=(rows,), dtype=str, fill_value="")
    path[:] = np.array([f"data/{r}.png" for r in range(rows)], dtype=object)
    if tokens is not None:
        width = len(tokens[0])
        array = group.create_array("tokens", shape=(rows, width), dtype=str, fill_value="")
        array[:] = np.array([tokens[r % len(tokens)] for r in range(rows)], dtype=object)
    for name, channels in layers.items():
        layer = group.create_group(f"layers/{name}")
        layer.attrs.update({"channels": channels, "kind": "channel", "k": k})
        for ordering in ORDERINGS:
            indices = np.stack([rng.permutation(rows)[:k] for _ in range(channels)])
            scores = -np.sort(-rng.random((channels, k)), axis=1)
            layer.create_array(f"{ordering}/indices", data=indices.astype(np.int64))
            layer.create_array(f"{ordering}/scores", data=scores.astype(np.float32))
        relevance = rng.normal(size=(classes, channels)).astype(np.float32)
        relevance[1] = np.nan
        layer.create_array("class_relevance", data=relevance)
        chosen = layer["relevance_sum/indices"][:, :references].copy()
        chosen[0, -1] = -1
        layer.create_array("references/indices", data=chosen)
        if tokens is None:
            crops = rng.integers(0, 256, (channels, references, 12, 12, 3), dtype=np.uint8)
            heat = rng.normal(size=(channels, references, 12, 12)).astype(np.float16)
            layer.create_array("references/images", data=crops)
            layer.create_array("references/heatmaps", data=heat)
        else:
            values = rng.normal(size=(channels, references, len(tokens[0]))).astype(np.float16)
            layer.create_array("references/token_relevance", data=values)
    group.attrs["lrpfn"] = {
        "format": "lrpfn.atlas/1",
        "class_names": class_names,
        "layers": list(layers),
        "settings": {},
    }
    return out
