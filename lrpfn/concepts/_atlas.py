"""`atlas`: for every concept of some layers, the data set samples that use it most.

    atlas = lrpfn.concepts.atlas(model, dataset, lrpfn.composites.epsilon_plus(),
                                 ["features.28", "classifier.0"], "vgg.atlas.zarr", k=40)
    atlas.top("features.28", "relevance_max")      # (indices (C, k), scores (C, k))
    atlas.references("features.28", 312, n=8)      # crops and conditional heatmaps

Per batch: one forward pass and one reverse walk that records each listed layer's
activation and relevance (`_record`), reduced to the four normalised scores per sample
and concept (`_scores`), merged into a running top-k per concept (`_topk`). Each batch is
one chunk of the store (`_atlas_store`); every rank of a `torchrun` run computes a
disjoint share of the missing chunks, the ranks' top-ks are merged exactly at the end
together with those of chunks written by an earlier, interrupted run, and rank 0 writes
the final arrays.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .._version import __version__
from ..datasets import DatasetError, fingerprint, sharding
from ..engine import Plan, prepare
from ..errors import LRPError
from . import _atlas_store as store
from ._atlas_data import class_names, read_chunks, sample_path
from ._atlas_final import finish
from ._atlas_view import Atlas
from ._nodes import resolve_node
from ._record import record
from ._scores import Heads, Layer, Neurons, concept_axis, layer_name, scores
from ._topk import empty, merge_batch

__all__ = ["atlas"]


def atlas(
    model_or_plan: torch.nn.Module | Plan,
    dataset: Any,
    rules: Any,
    layers: Sequence[Layer],
    out: str | Path,
    *,
    k: int = 40,
    target: int | Literal["label"] | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    workers: int = 0,
    model_name: str | None = None,
    data_name: str | None = None,
    progress: bool = True,
) -> Atlas:
    """The concept atlas of `layers` over `dataset`, written into the Zarr store `out`.

    For every concept $c$ of every listed layer (a convolution's channel, a dense
    layer's neuron; `Neurons`/`Heads` for transformers), four orderings of the data set:
    by the normalised relevance summed over the concept's positions and by its maximum
    (the walk explains `target`), and the same for the activation (see `_scores` for
    the formulas; zennit-crp's `FeatureVisualization` with `abs_norm`). The k best
    samples of each are kept, and per explained class the mean normalised relevance of
    every concept. Achtibat et al. (2023), Nature Machine Intelligence 5, 1006-1019.

    Runs unchanged under `torchrun --nproc_per_node=N`; a rerun after a crash completes
    the missing chunks and gives the same store as an uninterrupted run.

    Arguments:
        model_or_plan: an `nn.Module` in eval mode (copied if it must move to `device`),
            or a `Plan` (then `rules` is None).
        dataset: a map-style data set of `(x, label)` pairs (or of `x`).
        rules: a rule mapping, as for `lrpfn.lrp`.
        layers: node or module names (`lrpfn.relevances` keys, or `model.named_modules()`
            names), or `Neurons(name)` / `Heads(name, heads)`.
        out: the store's folder.
        k: samples kept per concept and ordering.
        target: the class explained: None (the prediction), an int, or "label".
        batch_size: samples per batch, which is also the rows per chunk of the store.
        device: "cpu" or "cuda" (under torchrun, rank r uses `cuda:LOCAL_RANK`).
        workers: `DataLoader` worker processes.
        model_name, data_name: names recorded in the store (default: the type names).
        progress: show a progress bar (rank 0).

    Returns:
        An `Atlas` over the store (with the model and data set, for `references`).

    Raises:
        StoreMismatchError: `out` holds a store written with other settings.
        DatasetError: a bad option, an empty data set, or a sample that cannot be read.
    """
    _check_options(layers, k, batch_size, target)
    where = torch.device(device)
    if where.type == "cuda" and where.index is None:
        where = torch.device("cuda", sharding.local_rank())
    ranks = sharding.join(where)
    names = (model_name or type(model_or_plan).__name__, data_name or type(dataset).__name__)
    try:
        plan = _plan_on(model_or_plan, rules, where, dataset, batch_size)
        options = (k, target, batch_size, workers, progress)
        _run(plan, dataset, tuple(layers), out, options, names, ranks)
    except BaseException:
        sharding.abandon(ranks)
        raise
    sharding.leave(ranks)
    return Atlas(out, plan=plan, dataset=dataset)


def _check_options(layers, k, batch_size, target) -> None:
    if isinstance(layers, (str, Neurons, Heads)) or not len(layers):
        raise DatasetError(
            f"layers must be a non-empty list of layer names, got {layers!r}; e.g. "
            "['features.28'] or [lrpfn.concepts.Neurons('blocks.3.mlp.fc1')]."
        )
    names = [layer_name(layer) for layer in layers]
    if len(set(names)) != len(names):
        raise DatasetError(f"a layer is listed twice: {names}.")
    for value, what in ((k, "k"), (batch_size, "batch_size")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DatasetError(f"{what} must be a positive int, got {value!r}.")
    if not (target is None or target == "label" or (isinstance(target, int) and target >= 0)):
        raise DatasetError(f"target must be None, 'label' or a class index, got {target!r}.")


def _plan_on(model_or_plan, rules, device: torch.device, dataset, batch_size: int) -> Plan:
    """The plan; a model is captured at the first batch (the shape `torch.export`
    specialises to, where fx cannot trace it: smaller batches are padded to it)."""
    if isinstance(model_or_plan, Plan):
        if rules is not None:
            raise DatasetError("this Plan already has its rules: pass rules=None.")
        return model_or_plan
    model = model_or_plan
    parameter = next(iter(model.parameters()), None)
    if parameter is not None and parameter.device != device:
        model = copy.deepcopy(model).to(device)  # the user's model stays where it is
    if len(dataset) == 0:
        raise DatasetError("the data set is empty.")
    first = min(batch_size, len(dataset))
    _, example, _ = next(read_chunks(dataset, [0], lambda _: (0, first)))
    return prepare(model, rules, example_input=example.to(device))


def _run(plan, dataset, layers, out, options, names, ranks) -> None:
    _, target, batch_size, workers, progress = options
    nodes = [resolve_node(plan, layer_name(layer)) for layer in layers]
    device = _device_of(plan)
    start = None
    if ranks.rank == 0:
        start = _attempt(
            lambda: _start(plan, dataset, layers, nodes, out, options, names, ranks), ranks
        )
    started = sharding.share(start, ranks)
    if started[0] == "failed":
        raise started[1](started[2])
    layout, missing = started[1], started[2]
    mine = sharding.shard(missing, ranks)
    bar = _progress_bar(len(mine) * batch_size, progress and ranks.rank == 0)
    report = _chunks(
        plan, dataset, layers, nodes, layout, (target, workers), out, mine, device, bar
    )
    if bar is not None:
        bar.close()
    reports = sharding.gather(report, ranks)
    if ranks.rank == 0:
        finish(out, layout, reports, missing)


def _attempt(start, ranks) -> tuple:
    """Rank 0's start, or (under torchrun) the error it raised, to be raised on every rank."""
    try:
        return ("started", *start())
    except LRPError as error:
        if not ranks.distributed:
            raise
        return ("failed", type(error), str(error))


def _device_of(plan: Plan) -> torch.device:
    parameter = next(iter(plan.module.parameters()), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _start(plan, dataset, layers, nodes, out, options, names, ranks):
    """Rank 0: the shapes from the first sample; the store created or checked."""
    k, target, batch_size, _, _ = options
    if len(dataset) == 0:
        raise DatasetError("the data set is empty.")
    _, x, _ = next(read_chunks(dataset, [0], lambda _: (0, 1)))
    probe = record(plan, x.to(_device_of(plan)), nodes, None)
    kinds = [
        concept_axis(layer, probe.activation[node.name])
        for layer, node in zip(layers, nodes, strict=True)
    ]
    layout = store.AtlasLayout(
        rows=len(dataset),
        batch_size=batch_size,
        classes=int(probe.logits.shape[1]),
        k=k,
        layers=tuple(
            (layer_name(layer), int(flat.shape[1]), kind, 1 if isinstance(layer, str) else -1)
            for layer, (flat, kind) in zip(layers, kinds, strict=True)
        ),
        score_dtype="float64" if probe.logits.dtype == torch.float64 else "float32",
    )
    settings = {
        "model": names[0],
        "model_sha256": fingerprint(plan),
        "rules": {name: repr(rule) for name, rule in plan.rules.items()},
        "data": names[1],
        "dataset_size": layout.rows,
        "batch_size": batch_size,
        "k": k,
        "target": "prediction" if target is None else target,
        "layers": [list(entry) for entry in layout.layers],
        "classes": layout.classes,
        "score_dtype": layout.score_dtype,
        "lrpfn": __version__,
        "torch": torch.__version__,
    }
    attributes = {
        "class_names": class_names(dataset),
        "layers": [entry[0] for entry in layout.layers],
        "created": store.now(),
        "world_size": ranks.world,
        "runs": [],
    }
    return layout, store.create_or_check(out, layout, settings, attributes)


def _chunks(plan, dataset, layers, nodes, layout, options, out, mine, device, bar) -> dict:
    """This rank's chunks: record, score, merge into the running top-k, write."""
    import zarr

    target, workers = options
    group = zarr.open_group(str(out), mode="r+")
    dtype = torch.float64 if layout.score_dtype == "float64" else torch.float32
    tops = {
        (name, ordering): empty(channels, layout.k, dtype, device)
        for name, channels, *_ in layout.layers
        for ordering in store.ORDERINGS
    }
    began, writing = time.perf_counter(), 0.0
    for chunk, x, label in read_chunks(dataset, mine, layout.bounds, workers):
        first, stop = layout.bounds(chunk)
        indices = torch.arange(first, stop, device=device)
        recorded = record(plan, x.to(device), nodes, _target(target, label, layout.classes))
        blocks = {
            "label": label.numpy(),
            "target": recorded.target.cpu().numpy(),
            "path": np.array([sample_path(dataset, i) for i in range(first, stop)], dtype=str),
            "logits": recorded.logits.float().cpu().numpy(),
        }
        for layer, node in zip(layers, nodes, strict=True):
            name = layer_name(layer)
            for source in ("relevance", "activation"):
                value = getattr(recorded, source)[node.name]
                for ordering, score in zip(("sum", "max"), scores(layer, value), strict=True):
                    key = (name, f"{source}_{ordering}")
                    _check_finite(score, key, first)
                    tops[key] = merge_batch(tops[key], score.to(dtype), indices)
                    blocks[f"layers/{name}/{key[1]}/samples"] = score.to(dtype).cpu().numpy()
        written = time.perf_counter()
        store.write_rows(group, layout, chunk, blocks)
        store.mark_complete(group, chunk)
        writing += time.perf_counter() - written
        if bar is not None:
            bar.update(stop - first)
    return {
        "tops": {key: (top.scores.cpu(), top.indices.cpu()) for key, top in tops.items()},
        "seconds": time.perf_counter() - began,
        "write_seconds": writing,
    }


def _target(target, label: torch.Tensor, classes: int):
    if target != "label":
        return target
    if bool(((label < 0) | (label >= classes)).any()):
        raise DatasetError(
            f"target='label' needs labels in 0..{classes - 1}, got {label.tolist()}. Fix: "
            "pass target=None (the prediction) or a class index."
        )
    return label


def _check_finite(score: torch.Tensor, key, first: int) -> None:
    bad = ~torch.isfinite(score).all(dim=1)
    if bool(bad.any()):
        rows = (torch.nonzero(bad)[:, 0] + first).tolist()
        raise DatasetError(
            f"samples {rows} have non-finite {key[1]} scores at layer {key[0]!r} (NaN or inf "
            "in the model's values). Fix: check these inputs, or the model's dtype."
        )


def _progress_bar(total: int, show: bool):
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="sample", file=sys.stderr, desc="lrpfn atlas", disable=None)
