"""Rank 0's end of an atlas run: the exact top-k, the class means, the run's record.

The top-k of each concept and ordering is the merge (`_topk.merge`, a total order on
(score, index)) of every rank's running top-k and of the top-k of the chunks an earlier,
interrupted run completed (read back from their per-sample rows); it does not depend on
how the chunks were split. The class means are computed from the per-sample rows in
chunk order, so they too are the same for any split.
"""

from __future__ import annotations

import numpy as np
import torch

from . import _atlas_store as store
from ._topk import TopK, empty, merge, merge_batch

__all__ = ["finish"]


def finish(out, layout: store.AtlasLayout, reports: list[dict], missing: list[int]) -> None:
    """Merge, write the final arrays and record the run (rank 0, after every rank)."""
    import zarr

    group = zarr.open_group(str(out), mode="r+")
    earlier = sorted(set(range(layout.chunks)) - set(missing))
    dtype = torch.float64 if layout.score_dtype == "float64" else torch.float32
    for name, channels, *_ in layout.layers:
        for ordering in store.ORDERINGS:
            top = empty(channels, layout.k, dtype, torch.device("cpu"))
            for report in reports:
                scores, indices = report["tops"][(name, ordering)]
                top = merge(top, TopK(scores, indices))
            samples = group[f"layers/{name}/{ordering}/samples"]
            for chunk in earlier:
                first, stop = layout.bounds(chunk)
                rows = torch.from_numpy(np.asarray(samples[first:stop]))
                top = merge_batch(top, rows.to(dtype), torch.arange(first, stop))
            filled = top.indices >= 0
            scores = torch.where(filled, top.scores, torch.full_like(top.scores, torch.nan))
            group[f"layers/{name}/{ordering}/indices"][...] = top.indices.numpy()
            group[f"layers/{name}/{ordering}/scores"][...] = scores.float().numpy()
    target = np.asarray(group["target"][:])
    counts = np.bincount(target[target >= 0], minlength=layout.classes)
    group["class_count"][...] = counts
    for name, channels, *_ in layout.layers:
        group[f"layers/{name}/class_relevance"][...] = _class_means(
            group[f"layers/{name}/relevance_sum/samples"], target, counts, layout, channels
        )
    _record_run(group, reports, len(missing))


def _class_means(samples, target, counts, layout, channels) -> np.ndarray:
    """Per class, the mean of the per-sample rows of the samples explained as that class
    (NaN for a class never explained); summed in float64, chunk by chunk, in order."""
    sums = np.zeros((layout.classes, channels))
    for chunk in range(layout.chunks):
        first, stop = layout.bounds(chunk)
        np.add.at(sums, target[first:stop], np.asarray(samples[first:stop], dtype=np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[:, None]
    return np.where(counts[:, None] > 0, means, np.nan).astype(np.float32)


def _record_run(group, reports, written: int) -> None:
    attributes = dict(group.attrs[store.ATTRIBUTE])
    attributes["runs"] = [
        *attributes.get("runs", []),
        {
            "finished": store.now(),
            "world_size": len(reports),
            "chunks_written": written,
            "seconds": [report["seconds"] for report in reports],
            "write_seconds": [report["write_seconds"] for report in reports],
        },
    ]
    attributes["complete"] = bool(np.asarray(group["complete"][:]).all())
    group.attrs[store.ATTRIBUTE] = attributes
