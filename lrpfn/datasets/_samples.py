"""Reading a data set's samples batch by batch, where any one sample may be unreadable.

A torch `Dataset` item is `(x, y)` or `x`. Reading an item can fail (a corrupt image
file); that must neither stop the run nor turn into a silent zero. `Guarded` reads one
item and returns what happened instead of raising, so a `DataLoader` (with or without
worker processes) delivers every batch; `Batch` then holds the readable samples stacked
and, for the others, their index, source (the file, where the data set knows it) and the
error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["Batch", "Guarded", "InvalidSample", "batches", "class_names_of", "source_of"]


@dataclasses.dataclass(frozen=True)
class InvalidSample:
    """A sample that could not be explained: its dataset index, its source (a file path,
    where the data set knows one) and why."""

    index: int
    source: str | None
    error: str


@dataclasses.dataclass(frozen=True)
class Batch:
    """One chunk's samples: `x` and `label` for the readable ones (`rows` are their
    positions within the chunk), and the unreadable ones."""

    chunk: int
    x: Tensor | None
    label: Tensor
    rows: Tensor
    invalid: tuple[InvalidSample, ...]


def source_of(dataset: Any, index: int) -> str | None:
    """The file behind `dataset[index]`: `dataset.source(index)` if the data set has that
    method, else torchvision's `dataset.samples[index][0]`, else None; a
    `torch.utils.data.Subset` asks the data set it is taken from."""
    if isinstance(dataset, torch.utils.data.Subset):
        return source_of(dataset.dataset, int(dataset.indices[index]))
    if callable(getattr(dataset, "source", None)):
        return str(dataset.source(index))
    samples = getattr(dataset, "samples", None)
    if isinstance(samples, Sequence) and 0 <= index < len(samples):
        entry = samples[index]
        return str(entry[0] if isinstance(entry, (tuple, list)) else entry)
    return None


def class_names_of(dataset: Any) -> list[str] | None:
    """The names of the classes, `dataset.classes` (as torchvision's data sets and
    `lrpfn.datasets.ImageFolder` have them; a `Subset` asks the data set it is taken from),
    or None where the data set has no list of names."""
    if isinstance(dataset, torch.utils.data.Subset):
        return class_names_of(dataset.dataset)
    names = getattr(dataset, "classes", None)
    if isinstance(names, Sequence) and not isinstance(names, str):
        return [str(name) for name in names]
    return None


class Guarded(torch.utils.data.Dataset):
    """`dataset` whose items are `(index, x, label, error)`: a failed or malformed read
    gives `x = None` and the error's message instead of raising."""

    def __init__(self, dataset: Any, input_shape: tuple[int, ...] | None) -> None:
        self.dataset = dataset
        self.input_shape = input_shape

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, Tensor | None, int, str | None]:
        try:
            item = self.dataset[index]
        except Exception as error:  # reported with the sample's index and source
            return index, None, -1, f"{type(error).__name__}: {error}".splitlines()[0]
        x, label = item if isinstance(item, (tuple, list)) and len(item) == 2 else (item, -1)
        problem = self._problem(x)
        if problem is not None:
            return index, None, -1, problem
        return index, x, _label(label), None

    def _problem(self, x: Any) -> str | None:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            kind = x.dtype if isinstance(x, Tensor) else type(x).__name__
            return f"the item's input is {kind}, not a floating torch.Tensor"
        if self.input_shape is not None and tuple(x.shape) != self.input_shape:
            return f"the input has shape {tuple(x.shape)}, the first sample {self.input_shape}"
        if not bool(torch.isfinite(x).all()):
            return "the input contains NaN or inf"
        return None


def _label(label: Any) -> int:
    try:
        return int(label)
    except (TypeError, ValueError, RuntimeError):
        return -1


def batches(
    dataset: Any,
    input_shape: tuple[int, ...],
    chunks: Sequence[int],
    bounds,
    *,
    workers: int = 0,
) -> Iterator[Batch]:
    """The `Batch` of each chunk in `chunks` (rows `bounds(chunk)`), read by a `DataLoader`
    with `workers` worker processes."""
    guarded = Guarded(dataset, input_shape)
    index_lists = [list(range(*bounds(chunk))) for chunk in chunks]
    loader = torch.utils.data.DataLoader(
        guarded, batch_sampler=index_lists, collate_fn=_collate, num_workers=workers
    )
    for chunk, (indices, inputs, labels, errors) in zip(chunks, loader, strict=True):
        rows = [i for i, x in enumerate(inputs) if x is not None]
        invalid = tuple(
            InvalidSample(index, source_of(dataset, index), error)
            for index, error in zip(indices, errors, strict=True)
            if error is not None
        )
        yield Batch(
            chunk=chunk,
            x=torch.stack([inputs[i] for i in rows]) if rows else None,
            label=torch.tensor(labels, dtype=torch.int64),
            rows=torch.tensor(rows, dtype=torch.int64),
            invalid=invalid,
        )


def _collate(items: list[tuple]) -> tuple[list, list, list, list]:
    indices, inputs, labels, errors = zip(*items, strict=True)
    return list(indices), list(inputs), list(labels), list(errors)
