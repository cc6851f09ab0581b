"""Image files in torchvision's `ImageFolder` layout (`root/<class>/<image>`) as a data set."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from torch import Tensor

from ._errors import DatasetError

__all__ = ["ImageFolder"]


class ImageFolder:
    """The images under `root`, one sub-folder per class (sorted names give the labels
    0, 1, ...), files in sorted order; items `(load(path), label)`.

    Arguments:
        root: the folder.
        load: reads one file into a `(C, H, W)` tensor (e.g. `Preprocessing.load` of the
            command line); its errors are reported by `explain` with the file's path.
        suffixes: the file endings counted as images (lower case).
    """

    def __init__(
        self, root: str | Path, load: Callable[[Path], Tensor], suffixes: Sequence[str]
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"image folder not found: {root}")
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        self.samples = [
            (path, label)
            for label, name in enumerate(self.classes)
            for path in sorted((self.root / name).rglob("*"))
            if path.is_file() and path.suffix.lower() in suffixes
        ]
        if not self.samples:
            raise DatasetError(
                f"no images ({', '.join(suffixes)}) in class folders under {root}: expected "
                "the ImageFolder layout root/<class>/<image>."
            )
        self.load = load

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        return self.load(path), label

    def source(self, index: int) -> str:
        return str(self.samples[index][0])
