"""Reading an atlas's samples: batches by chunk, each sample's file, the class names.

A data set item is `(x, label)` or `x` (label -1). Where the data set is ImageFolder-like
(torchvision's `ImageFolder`, `lrpfn.datasets.ImageFolder`), `dataset.samples[i][0]` is
sample i's file and `dataset.classes` the class names; a `dataset.source(i)` method wins
over `samples`. Without them the path is "" and the class names are None.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from ..datasets import DatasetError

__all__ = ["class_names", "read_chunks", "read_sample", "sample_path"]


def sample_path(dataset: Any, index: int) -> str:
    """The file behind `dataset[index]`, or "" where the data set names none."""
    if callable(getattr(dataset, "source", None)):
        return str(dataset.source(index))
    samples = getattr(dataset, "samples", None)
    if isinstance(samples, Sequence) and 0 <= index < len(samples):
        entry = samples[index]
        return str(entry[0] if isinstance(entry, (tuple, list)) else entry)
    return ""


def class_names(dataset: Any) -> list[str] | None:
    """`dataset.classes` as a list of str, or None where the data set has none."""
    classes = getattr(dataset, "classes", None)
    if isinstance(classes, Sequence) and not isinstance(classes, str):
        return [str(name) for name in classes]
    return None


class _Indexed(torch.utils.data.Dataset):
    """`dataset` whose items are `(x, label)`, a failed read raised with its index."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        try:
            item = self.dataset[index]
        except Exception as error:
            path = sample_path(self.dataset, index) or "no file"
            raise DatasetError(
                f"sample {index} ({path}) cannot be read: {type(error).__name__}: {error}. "
                "Fix: repair or remove it (the atlas needs every sample)."
            ) from error
        x, label = item if isinstance(item, (tuple, list)) and len(item) == 2 else (item, -1)
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise DatasetError(
                f"sample {index}'s input is {type(x).__name__}, not a floating torch.Tensor."
            )
        try:
            return x, int(label)
        except (TypeError, ValueError, RuntimeError):
            return x, -1


def read_chunks(
    dataset: Any, chunks: Sequence[int], bounds, workers: int = 0
) -> Iterator[tuple[int, Tensor, Tensor]]:
    """`(chunk, x, label)` for each chunk (rows `bounds(chunk)`), in order."""
    loader = torch.utils.data.DataLoader(
        _Indexed(dataset),
        batch_sampler=[list(range(*bounds(chunk))) for chunk in chunks],
        num_workers=workers,
    )
    for chunk, (x, label) in zip(chunks, loader, strict=True):
        yield chunk, x, label.long()


def read_sample(dataset: Any, index: int) -> tuple[Tensor, int]:
    """`(x, label)` of sample `index` (a read error names the sample)."""
    return _Indexed(dataset)[index]
