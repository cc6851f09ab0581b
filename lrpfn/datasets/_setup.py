"""Rank 0's start of a run: the shapes from a readable sample, the store created (or an
existing one checked against this run's settings), and the chunks still missing.

The store's attributes record the run's provenance: the model's name and a SHA-256 of the
canonical graph's parameters and buffers, the rules per node, the data, the layout, the
target and the versions of lrpfn and torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor

from .._version import __version__
from ..engine import Plan, lrp, model_output, relevances
from . import _store
from ._errors import DatasetError
from ._samples import Guarded, class_names_of, source_of
from ._thumbnails import thumbnail_size

__all__ = ["fingerprint", "start_run"]

_PROBE_LIMIT = 64  # samples tried to find a readable one for the shapes


def start_run(
    plan, dataset, out, device, settings, ranks, overwrite: bool = False
) -> tuple[_store.Layout, list[int]]:
    """Rank 0: probe the shapes, create or check the store; the layout and the chunks
    still missing."""
    batch_size, dtype, nodes, target, thumbnail, normalization, model, data = settings
    x, label = _probe(dataset)
    x = x[None].to(device)
    logits = model_output(plan, x)
    if logits.ndim != 2:
        raise DatasetError(
            f"the model's output has shape {tuple(logits.shape)}, not (batch, classes)."
        )
    _check_target(plan, x, logits, target, label)  # everything checked before a store exists
    channels = _node_channels(plan, x, nodes) if nodes else {}
    input_shape = tuple(x.shape[1:])
    layout = _store.Layout(
        len(dataset),
        batch_size,
        input_shape,
        logits.shape[1],
        dtype,
        channels,
        thumbnail_size(input_shape, thumbnail),
    )
    fields = {
        "model": model,
        "model_sha256": fingerprint(plan),
        "rules": {name: _rule_text(rule) for name, rule in plan.rules.items()},
        "data": data,
        "dataset_size": layout.rows,
        "batch_size": batch_size,
        "input_shape": layout.input_shape,
        "classes": layout.classes,
        "relevance_dtype": dtype,
        "target": "prediction" if target is None else target,
        "nodes": channels,
        "thumbnail": layout.thumbnail,
        "normalization": normalization,
        "lrpfn": __version__,
        "torch": torch.__version__,
    }
    provenance = {
        "created": _store.now(),
        "world_size": ranks.world,
        "runs": [],
        "class_names": class_names_of(dataset),
    }
    return layout, _store.create_or_check(out, layout, fields, provenance, overwrite)


def _check_target(plan: Plan, x: Tensor, logits: Tensor, target, label: int) -> None:
    """Refuse a target that cannot fit (an int out of range, a label out of range at the
    probed sample) and run the rules once on the probed sample, before the store exists."""
    classes = logits.shape[1]
    if isinstance(target, int) and not 0 <= target < classes:
        raise DatasetError(
            f"target {target} is out of range for the model's {classes} classes (valid: "
            f"0..{classes - 1}); nothing was written. Fix: pass a class index, 'label' or None."
        )
    if target == "label" and not 0 <= label < classes:
        raise DatasetError(
            f"target='label', but the first readable sample's label is {label}, outside the "
            f"model's {classes} classes (valid: 0..{classes - 1}); nothing was written. Fix: "
            "a model with as many classes as the data set, or target=None (the prediction)."
        )
    explained = {None: int(logits.argmax(1)[0]), "label": label}.get(target, target)
    lrp(plan, x, target=explained)


def _rule_text(rule) -> str:
    """A rule as `Name(field=value, ...)` with tensors as their shape and a digest (a store's
    settings compare these; a tensor's repr would fill the mismatch message)."""
    if not dataclasses.is_dataclass(rule) or isinstance(rule, type):
        return repr(rule)
    fields = []
    for field in dataclasses.fields(rule):
        value = getattr(rule, field.name)
        if isinstance(value, Tensor):
            data = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
            value = f"<{tuple(value.shape)} tensor, sha256 {hashlib.sha256(data).hexdigest()[:8]}>"
        else:
            value = repr(value)
        fields.append(f"{field.name}={value}")
    return f"{type(rule).__name__}({', '.join(fields)})"


def _probe(dataset) -> tuple[Tensor, int]:
    if len(dataset) == 0:
        raise DatasetError("the data set is empty.")
    guarded = Guarded(dataset, None)
    errors = []
    for index in range(min(len(dataset), _PROBE_LIMIT)):
        _, x, label, error = guarded[index]
        if error is None:
            return x, label
        errors.append(f"  {index} ({source_of(dataset, index)}): {error}")
    raise DatasetError(
        f"none of the first {len(errors)} samples can be read:\n" + "\n".join(errors[:5])
    )


def _node_channels(plan: Plan, x: Tensor, nodes: Sequence[str]) -> dict[str, int]:
    recorded = relevances(plan, x)
    unknown = [name for name in nodes if name not in recorded]
    if unknown:
        raise DatasetError(
            f"unknown node(s) {unknown}: the graph's nodes are {', '.join(recorded)}."
        )
    return {name: int(recorded[name].shape[1]) if recorded[name].ndim > 1 else 1 for name in nodes}


def fingerprint(plan: Plan) -> str:
    """SHA-256 of the canonical graph's parameters and buffers (names, types, shapes, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in plan.module.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()
