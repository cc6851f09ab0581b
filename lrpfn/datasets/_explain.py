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

Rank 0 starts the run (`_setup`: shapes, store, provenance); every rank then explains and
writes its share (`_run`, which also holds the kill-and-resume test's hook); rank 0
records the run in the store's attributes when all have finished.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from ..engine import Plan, prepare
from ..errors import LRPError
from . import _store, sharding
from ._errors import DatasetError
from ._run import DTYPES, RankRun
from ._samples import InvalidSample, source_of
from ._setup import start_run
from ._thumbnails import Normalization

__all__ = ["Summary", "explain"]


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
    thumbnail: int | None = 64,
    normalization: Normalization | None = None,
    device: str | torch.device = "cpu",
    workers: int = 0,
    model_name: str | None = None,
    data_name: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
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
        thumbnail: image inputs `(1 or 3, H, W)` are also kept as uint8 RGB pictures of
            at most this many pixels a side (the `inputs` array, for `lrpfn report`);
            None or 0: not kept.
        normalization: `(mean, std)` per channel the inputs were normalised with, to turn
            them back into pixels for the pictures; None: each picture is scaled from its
            sample's minimum to its maximum.
        device: "cpu" or "cuda" (under torchrun, rank r uses `cuda:LOCAL_RANK`).
        workers: `DataLoader` worker processes reading the samples.
        model_name, data_name: names recorded in the store (default: the type names).
        progress: show a progress bar (rank 0).
        overwrite: replace a store written earlier at `out` instead of resuming it (a
            store without any complete chunk is replaced anyway).

    Returns:
        A `Summary` of the run.

    Raises:
        StoreMismatchError: `out` holds a store written with other settings.
        DatasetError: the data set is empty or has no readable sample near its start.
    """
    if batch_size < 1:
        raise DatasetError(f"batch_size must be at least 1, got {batch_size}.")
    if relevance_dtype not in DTYPES:
        raise DatasetError(
            f"relevance_dtype must be 'float16' or 'float32', got {relevance_dtype!r}."
        )
    where = _device(device)
    ranks = sharding.join(where)
    names = (model_name or type(model_or_plan).__name__, data_name or type(dataset).__name__)
    if normalization is not None:
        normalization = tuple(tuple(float(v) for v in part) for part in normalization)
    pictures = (thumbnail, normalization)
    options = (
        batch_size,
        relevance_dtype,
        tuple(nodes),
        target,
        pictures,
        workers,
        progress,
        overwrite,
    )
    try:
        summary = _explain_here(model_or_plan, rules, dataset, out, where, ranks, names, options)
    except BaseException:
        sharding.abandon(ranks)  # no meeting at the end: the others stop too (torchrun ends them)
        raise
    sharding.leave(ranks)
    return summary


def _explain_here(model_or_plan, rules, dataset, out, where, ranks, names, options) -> Summary:
    """This rank's part of `explain`, between joining the run and leaving it."""
    batch_size, relevance_dtype, nodes, target, pictures, workers, progress, overwrite = options
    plan = _plan_on(model_or_plan, rules, where)
    start = None
    if ranks.rank == 0:
        settings = (batch_size, relevance_dtype, nodes, target, *pictures, *names)
        start = _attempt(
            lambda: start_run(plan, dataset, out, where, settings, ranks, overwrite), ranks
        )
    layout, missing = _started(sharding.share(start, ranks))
    bar = _progress_bar(layout, out, progress and ranks.rank == 0)
    run = RankRun(plan, layout, target, nodes, where, str(out), ranks, pictures[1])
    report = run.chunks(dataset, sharding.shard(missing, ranks), workers, bar)
    reports = sharding.gather(report, ranks)
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
        where = torch.device("cuda", sharding.local_rank())
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
