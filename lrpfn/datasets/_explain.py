"""`explain`: a whole data set's explanations written into a Zarr store, in one process or
sharded over the ranks of `torchrun`, resumable after a crash.

    store = lrpfn.datasets.explain(model, dataset, lrpfn.composites.epsilon_plus(),
                                   "digits.zarr", batch_size=64)

One batch is one chunk of every array of the store (layout in `_store`). Each rank
explains a deterministic, disjoint share of the chunks still missing and writes them
itself; a chunk counts as done only after all of its arrays are written, so running the
same call again after a crash completes exactly the missing chunks, and the store is
bit-identical to one written without interruption (each chunk is computed from the same
samples in the same batch by the same code).

Test hook: the environment variable `LRPFN_TEST_SIGKILL="RANK:N"` makes rank RANK kill
itself with SIGKILL in the middle of its chunk N+1, after that chunk's arrays are written
and before it is recorded as complete. It exists only for the kill-and-resume test.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from .._api import lrp, prepare, relevances
from .._plan import Plan
from .._version import __version__
from ..errors import LRPError
from . import _shard, _store
from ._errors import DatasetError
from ._samples import Batch, Guarded, InvalidSample, batches, source_of

__all__ = ["Summary", "explain"]

KILL_HOOK = "LRPFN_TEST_SIGKILL"
_DTYPES = {"float16": np.float16, "float32": np.float32}
_PROBE_LIMIT = 64  # samples tried to find a readable one for the shapes


@dataclasses.dataclass(frozen=True)
class Summary:
    """What a run did.

    Attributes:
        store: the store's path.
        chunks_written: chunks written by this run (all ranks).
        chunks_skipped: chunks already complete before it.
        invalid: the rows marked invalid in the store (on rank 0; elsewhere this rank's).
        seconds: each rank's time over its chunks (reading, explaining, writing).
        write_seconds: each rank's time spent writing the store.
    """

    store: str
    chunks_written: int
    chunks_skipped: int
    invalid: tuple[InvalidSample, ...]
    seconds: tuple[float, ...]
    write_seconds: tuple[float, ...]

    @property
    def write_fraction(self) -> float:
        """The largest fraction of a rank's time spent writing the store."""
        return max(
            w / s if s > 0 else 0.0 for w, s in zip(self.write_seconds, self.seconds, strict=True)
        )


def explain(
    model_or_plan: torch.nn.Module | Plan,
    dataset: Any,
    rules: Any,
    out: str | Path,
    *,
    target: int | Literal["label"] | None = None,
    batch_size: int = 64,
    relevance_dtype: Literal["float16", "float32"] = "float32",
    nodes: Sequence[str] = (),
    device: str | torch.device = "cpu",
    workers: int = 0,
    model_name: str | None = None,
    data_name: str | None = None,
    progress: bool = True,
) -> Summary:
    """Explain every sample of `dataset` and write the results into the Zarr store `out`.

    Run it unchanged under `torchrun --nproc_per_node=N` to share the work between N
    processes (and nodes): rank 0 creates or checks the store, each rank explains its own
    chunks, rank 0 shows the progress bar and writes the run's attributes at the end.

    Arguments:
        model_or_plan: an `nn.Module` in eval mode (never modified; copied if it must move
            to `device`), or a `Plan` from `lrpfn.prepare` (then `rules` is None).
        dataset: a torch map-style data set of `(x, label)` pairs (or of `x`).
        rules: a rule mapping, as for `lrpfn.lrp`.
        out: the store's path (a folder, or an fsspec URL).
        target: the class explained: None (each sample's prediction), an int, or "label"
            (each sample's label).
        batch_size: samples per batch, which is also the rows per chunk of the store.
        relevance_dtype: "float32", or "float16" (half the size; an error if a value
            exceeds float16's range).
        nodes: graph node names (as `lrpfn.relevances` keys them) whose relevance is
            kept per channel (summed over the axes after the channel axis).
        device: "cpu" or "cuda" (under torchrun, rank r uses `cuda:LOCAL_RANK`).
        workers: `DataLoader` worker processes reading the samples.
        model_name, data_name: names recorded in the store (default: the type names).
        progress: show a progress bar (rank 0).

    Returns:
        A `Summary` of the run.

    Raises:
        StoreMismatchError: `out` holds a store written with other settings.
        DatasetError: the data set is empty or has no readable sample near its start.
    """
    if batch_size < 1:
        raise DatasetError(f"batch_size must be at least 1, got {batch_size}.")
    if relevance_dtype not in _DTYPES:
        raise DatasetError(
            f"relevance_dtype must be 'float16' or 'float32', got {relevance_dtype!r}."
        )
    where = _device(device)
    ranks = _shard.join(where)
    names = (model_name or type(model_or_plan).__name__, data_name or type(dataset).__name__)
    options = (batch_size, relevance_dtype, tuple(nodes), target, workers, progress)
    try:
        summary = _explain_here(model_or_plan, rules, dataset, out, where, ranks, names, options)
    except BaseException:
        _shard.abandon(ranks)  # no meeting at the end: the others stop too (torchrun ends them)
        raise
    _shard.leave(ranks)
    return summary


def _explain_here(model_or_plan, rules, dataset, out, where, ranks, names, options) -> Summary:
    """This rank's part of `explain`, between joining the run and leaving it."""
    batch_size, relevance_dtype, nodes, target, workers, progress = options
    plan = _plan_on(model_or_plan, rules, where)
    start = None
    if ranks.rank == 0:
        settings = (batch_size, relevance_dtype, nodes, target, *names)
        start = _attempt(lambda: _start(plan, dataset, out, where, settings, ranks), ranks)
    layout, missing = _started(_shard.share(start, ranks))
    bar = _progress_bar(layout, out, progress and ranks.rank == 0)
    run = _Run(plan, layout, target, nodes, where, str(out), ranks)
    report = run.chunks(dataset, _shard.shard(missing, ranks), workers, bar)
    reports = _shard.gather(report, ranks)
    if bar is not None:
        bar.update(layout.rows - bar.n)
        bar.close()
    if ranks.rank == 0:
        return _finish(out, layout, dataset, reports, len(missing))
    return _summary(out, layout, reports, len(missing), report["invalid"])


def _attempt(start, ranks) -> tuple:
    """Rank 0's start, or the error it raised (to be raised on every rank alike)."""
    try:
        return ("started", *start())
    except LRPError as error:
        if not ranks.distributed:
            raise
        return ("failed", type(error), str(error))


def _started(start: tuple) -> tuple[_store.Layout, list[int]]:
    if start[0] == "failed":
        raise start[1](start[2])
    return start[1], start[2]


def _progress_bar(layout: _store.Layout, out, show: bool):
    """Rank 0's bar over the whole run's samples, from the rows already complete."""
    if not show:
        return None
    import zarr
    from tqdm import tqdm

    bar = tqdm(
        total=layout.rows,
        unit="sample",
        file=sys.stderr,
        desc="lrpfn.datasets.explain",
        disable=None,
    )
    bar.update(_store.complete_rows(zarr.open_group(str(out), mode="r"), layout))
    return bar


def _device(device: str | torch.device) -> torch.device:
    where = torch.device(device)
    if where.type == "cuda" and where.index is None:
        where = torch.device("cuda", _shard.local_rank())
    return where


def _plan_on(model_or_plan, rules, device: torch.device) -> Plan:
    if isinstance(model_or_plan, Plan):
        if rules is not None:
            raise DatasetError("this Plan already has its rules: pass rules=None.")
        parameter = next(iter(model_or_plan.module.parameters()), None)
        if parameter is not None and parameter.device != device:
            raise DatasetError(
                f"the Plan's parameters are on {parameter.device}, the run on {device}: "
                f"prepare the plan from a model on {device}."
            )
        return model_or_plan
    model = model_or_plan
    parameter = next(iter(model.parameters()), None)
    if parameter is not None and parameter.device != device:
        model = copy.deepcopy(model).to(device)  # the user's model stays where it is
    return prepare(model, rules)


def _start(plan, dataset, out, device, settings, ranks) -> tuple[_store.Layout, list[int]]:
    """Rank 0: probe the shapes, create or check the store; the layout and the chunks
    still missing."""
    batch_size, dtype, nodes, target, model, data = settings
    x = _probe(dataset)
    x = x[None].to(device)
    with torch.no_grad():
        logits = plan.module(x)
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


class _Run:
    """One rank's work: explain its chunks, write them, report."""

    def __init__(self, plan, layout, target, nodes, device, out, ranks) -> None:
        import zarr

        self.plan, self.layout, self.target, self.nodes = plan, layout, target, tuple(nodes)
        self.device, self.out, self.ranks = device, out, ranks
        group = zarr.open_group(out, mode="r+")
        self.arrays = {name: group[name] for name in [*layout.arrays(), "complete"]}
        self.input_name = next(n.name for n in plan.module.graph.nodes if n.op == "placeholder")

    def chunks(self, dataset, mine: list[int], workers: int, bar) -> dict[str, Any]:
        """Explain and write the chunks `mine`; `bar`: rank 0's progress bar, or None."""
        began, writing, invalid, polled = time.perf_counter(), 0.0, [], 0.0
        reader = batches(
            dataset, self.layout.input_shape, mine, self.layout.bounds, workers=workers
        )
        for count, batch in enumerate(reader):
            for sample in batch.invalid:
                _report(sample, bar)
            invalid.extend(batch.invalid)
            blocks = self._blocks(batch)
            written = time.perf_counter()
            _store.write_chunk(self.arrays, self.layout, batch.chunk, blocks)
            _kill_hook(self.ranks, count)
            _store.mark_complete(self.arrays, batch.chunk)
            writing += time.perf_counter() - written
            if bar is not None and self.ranks.world == 1:
                bar.update(len(blocks["valid"]))
            elif bar is not None and time.perf_counter() - polled > 0.5:
                bar.update(_store.complete_rows(self.arrays, self.layout) - bar.n)
                polled = time.perf_counter()
        return {
            "chunks": len(mine),
            "seconds": time.perf_counter() - began,
            "write_seconds": writing,
            "invalid": invalid,
        }

    def _blocks(self, batch: Batch) -> dict[str, np.ndarray]:
        start, stop = self.layout.bounds(batch.chunk)
        blocks = {
            name: np.full((stop - start, *shape[1:]), fill, dtype=dtype)
            for name, (shape, dtype, fill) in self.layout.arrays().items()
        }
        blocks["label"][:] = batch.label.numpy()
        if batch.x is None:
            return blocks
        rows = batch.rows.numpy()
        results = self._explain(batch.x.to(self.device), batch.label[batch.rows])
        for name, values in results.items():
            blocks[name][rows] = values
        blocks["valid"][rows] = True
        return blocks

    def _explain(self, x: Tensor, label: Tensor) -> dict[str, np.ndarray]:
        with torch.no_grad():
            logits = self.plan.module(x)
        target = self._target(logits, label)
        if self.nodes:
            recorded = relevances(self.plan, x, target=target)
            relevance = recorded[self.input_name]
        else:
            relevance = lrp(self.plan, x, target=target)
        explained = logits.gather(1, target[:, None])[:, 0].double()
        ratio = relevance.double().flatten(1).sum(1) / explained
        results = {
            "relevance": self._relevance(relevance),
            "logits": logits.float().cpu().numpy(),
            "target": target.cpu().numpy(),
            "ratio": ratio.float().cpu().numpy(),
        }
        for name in self.nodes:
            value = recorded[name]
            per_channel = value.flatten(2).sum(2) if value.ndim > 2 else value.reshape(len(x), -1)
            results[f"nodes/{name}"] = per_channel.float().cpu().numpy()
        return results

    def _target(self, logits: Tensor, label: Tensor) -> Tensor:
        if self.target is None:
            return logits.argmax(1)
        if self.target == "label":
            classes = logits.shape[1]
            if bool(((label < 0) | (label >= classes)).any()):
                raise DatasetError(
                    f"target='label' needs labels in 0..{classes - 1}, got {label.tolist()}."
                )
            return label.to(logits.device)
        return torch.full((len(logits),), int(self.target), device=logits.device)

    def _relevance(self, relevance: Tensor) -> np.ndarray:
        values = relevance.float().cpu().numpy()
        if self.layout.relevance_dtype == "float16":
            largest = float(np.abs(values).max(initial=0.0))
            if largest > np.finfo(np.float16).max:
                raise DatasetError(
                    f"a relevance of {largest:.4g} exceeds float16's range: use "
                    "relevance_dtype='float32'."
                )
        return values.astype(_DTYPES[self.layout.relevance_dtype])


def _report(sample: InvalidSample, bar) -> None:
    message = (
        f"lrpfn: sample {sample.index} ({sample.source or 'no source'}) cannot be explained: "
        f"{sample.error}; its row is marked invalid."
    )
    if bar is not None:
        bar.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr)


def _kill_hook(ranks, count: int) -> None:
    """The kill-and-resume test's hook (see the module docstring)."""
    setting = os.environ.get(KILL_HOOK)
    if setting:
        rank, chunks = (int(part) for part in setting.split(":"))
        if ranks.rank == rank and count == chunks:
            os.kill(os.getpid(), signal.SIGKILL)


def _finish(out, layout, dataset, reports, missing) -> Summary:
    """Rank 0, after every rank has finished: the attributes and the summary."""
    import zarr

    group = zarr.open_group(str(out), mode="r+")
    errors = {s.index: s for report in reports for s in report["invalid"]}
    invalid = tuple(
        errors.get(i) or InvalidSample(i, source_of(dataset, i), "reported by an earlier run")
        for i in _store.invalid_rows(group)
    )
    summary = _summary(out, layout, reports, missing, invalid)
    attributes = dict(group.attrs[_store.ATTRIBUTE])
    attributes["runs"] = [
        *attributes.get("runs", []),
        {
            "finished": _store.now(),
            "world_size": len(reports),
            "chunks_written": missing,
            "seconds": list(summary.seconds),
            "write_seconds": list(summary.write_seconds),
        },
    ]
    attributes["complete"] = bool(group["complete"][:].all())
    attributes["invalid"] = [dataclasses.asdict(sample) for sample in invalid]
    group.attrs[_store.ATTRIBUTE] = attributes
    return summary


def _summary(out, layout, reports, missing, invalid) -> Summary:
    return Summary(
        store=str(out),
        chunks_written=missing,
        chunks_skipped=layout.chunks - missing,
        invalid=tuple(invalid),
        seconds=tuple(r["seconds"] for r in reports),
        write_seconds=tuple(r["write_seconds"] for r in reports),
    )
