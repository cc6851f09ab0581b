"""One rank's share of a run: read its chunks' samples, explain them, write each chunk's
arrays, then mark the chunk complete.

Test hook: the environment variable `LRPFN_TEST_SIGKILL="RANK:N"` makes rank RANK kill
itself with SIGKILL in the middle of its chunk N+1, after that chunk's arrays are written
and before it is recorded as complete. It exists only for the kill-and-resume test.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..engine import lrp, model_output, relevances
from . import _store
from ._errors import DatasetError
from ._samples import Batch, InvalidSample, batches, source_of
from ._thumbnails import thumbnails

__all__ = ["DTYPES", "KILL_HOOK", "RankRun", "report_invalid"]

KILL_HOOK = "LRPFN_TEST_SIGKILL"
DTYPES = {"float16": np.float16, "float32": np.float32}


class RankRun:
    """One rank's work: explain its chunks, write them, report."""

    def __init__(self, plan, layout, target, nodes, device, out, ranks, normalization) -> None:
        import zarr

        self.plan, self.layout, self.target, self.nodes = plan, layout, target, tuple(nodes)
        self.normalization = normalization
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
                report_invalid(sample, bar)
            invalid.extend(batch.invalid)
            blocks = self._blocks(batch, dataset)
            written = time.perf_counter()
            _store.write_chunk(self.arrays, self.layout, batch.chunk, blocks)
            kill_hook(self.ranks, count)
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

    def _blocks(self, batch: Batch, dataset) -> dict[str, np.ndarray]:
        start, stop = self.layout.bounds(batch.chunk)
        blocks = {
            name: np.full(
                (stop - start, *shape[1:]), fill, dtype=object if dtype == "str" else dtype
            )
            for name, (shape, dtype, fill) in self.layout.arrays().items()
        }
        blocks["label"][:] = batch.label.numpy()
        blocks["path"][:] = [source_of(dataset, index) or "" for index in range(start, stop)]
        if batch.x is None:
            return blocks
        rows = batch.rows.numpy()
        if self.layout.thumbnail is not None:
            blocks["inputs"][rows] = thumbnails(batch.x, self.layout.thumbnail, self.normalization)
        results = self._explain(batch.x.to(self.device), batch.label[batch.rows])
        for name, values in results.items():
            blocks[name][rows] = values
        blocks["valid"][rows] = True
        return blocks

    def _explain(self, x: Tensor, label: Tensor) -> dict[str, np.ndarray]:
        logits = model_output(self.plan, x)
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
        return values.astype(DTYPES[self.layout.relevance_dtype])


def report_invalid(sample: InvalidSample, bar) -> None:
    message = (
        f"lrpfn: sample {sample.index} ({sample.source or 'no source'}) cannot be explained: "
        f"{sample.error}; its row is marked invalid."
    )
    if bar is not None:
        bar.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr)


def kill_hook(ranks, count: int) -> None:
    """The kill-and-resume test's hook (see the module docstring)."""
    setting = os.environ.get(KILL_HOOK)
    if setting:
        rank, chunks = (int(part) for part in setting.split(":"))
        if ranks.rank == rank and count == chunks:
            os.kill(os.getpid(), signal.SIGKILL)
