"""Rank 0's start of a run: the shapes from a readable sample, the store created (or an
existing one checked against this run's settings), and the chunks still missing.

The store's attributes record the run's provenance: the model's name and a SHA-256 of the
canonical graph's parameters and buffers, the rules per node, the data, the layout, the
target and the versions of lrpfn and torch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor

from .._version import __version__
from ..engine import Plan, model_output, relevances
from . import _store
from ._errors import DatasetError
from ._samples import Guarded, source_of

__all__ = ["start_run"]

_PROBE_LIMIT = 64  # samples tried to find a readable one for the shapes


def start_run(plan, dataset, out, device, settings, ranks) -> tuple[_store.Layout, list[int]]:
    """Rank 0: probe the shapes, create or check the store; the layout and the chunks
    still missing."""
    batch_size, dtype, nodes, target, model, data = settings
    x = _probe(dataset)
    x = x[None].to(device)
    logits = model_output(plan, x)
    if logits.ndim != 2:
        raise DatasetError(
            f"the model's output has shape {tuple(logits.shape)}, not (batch, classes)."
        )
    channels = _node_channels(plan, x, nodes) if nodes else {}
    layout = _store.Layout(
        len(dataset), batch_size, tuple(x.shape[1:]), logits.shape[1], dtype, channels
    )
    fields = {
        "model": model,
        "model_sha256": _fingerprint(plan),
        "rules": {name: repr(rule) for name, rule in plan.rules.items()},
        "data": data,
        "dataset_size": layout.rows,
        "batch_size": batch_size,
        "input_shape": layout.input_shape,
        "classes": layout.classes,
        "relevance_dtype": dtype,
        "target": "prediction" if target is None else target,
        "nodes": channels,
        "lrpfn": __version__,
        "torch": torch.__version__,
    }
    provenance = {"created": _store.now(), "world_size": ranks.world, "runs": []}
    return layout, _store.create_or_check(out, layout, fields, provenance)


def _probe(dataset) -> Tensor:
    if len(dataset) == 0:
        raise DatasetError("the data set is empty.")
    guarded = Guarded(dataset, None)
    errors = []
    for index in range(min(len(dataset), _PROBE_LIMIT)):
        _, x, _, error = guarded[index]
        if error is None:
            return x
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


def _fingerprint(plan: Plan) -> str:
    """SHA-256 of the canonical graph's parameters and buffers (names, types, shapes, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in plan.module.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()
