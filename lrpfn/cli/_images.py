"""Image files as network inputs: finding them, reading and preprocessing them."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from ._common import CLIError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_SUFFIXES",
    "Preprocessing",
    "find_images",
    "imagenet_preprocessing",
    "preprocessing_from",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How files become network inputs: resize the shorter side, centre-crop, normalise.

    With `enlarge` False (the ImageNet defaults, not asked for on the command line) an
    image is only ever made smaller: one smaller than `resize` keeps its size and is
    cropped to its shorter side at most, so a 64 px image is explained at 64 px, not
    blown up to 224 px (whose heatmap would show the resize grid)."""

    resize: int | None
    crop: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    grayscale: bool
    enlarge: bool = True

    def load(self, path: Path) -> torch.Tensor:
        """The image at `path` as a `(C, H, W)` float tensor."""
        try:
            from PIL import Image
        except ImportError as error:
            raise CLIError("Pillow is not installed: pip install 'lrpfn[vision]'.") from error
        try:
            with Image.open(path) as opened:
                picture = opened.convert("L" if self.grayscale else "RGB")
        except OSError as error:
            raise CLIError(f"cannot read image {path}: {error}".splitlines()[0]) from error
        if self.resize is not None and (self.enlarge or min(picture.size) > self.resize):
            width, height = picture.size
            scale = self.resize / min(width, height)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            picture = picture.resize(size, Image.Resampling.BILINEAR)
        crop = self.crop if self.enlarge else min(self.crop or 0, *picture.size) or None
        if crop is not None:
            width, height = picture.size
            if width < crop or height < crop:
                raise CLIError(
                    f"image {path} is {width}x{height}, smaller than --crop {crop}; add --resize."
                )
            left, top = round((width - crop) / 2), round((height - crop) / 2)
            picture = picture.crop((left, top, left + crop, top + crop))
        pixels = np.asarray(picture, dtype=np.float32) / 255.0
        x = torch.from_numpy(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1).copy())
        mean = torch.tensor(self.mean).reshape(-1, 1, 1)
        std = torch.tensor(self.std).reshape(-1, 1, 1)
        return (x - mean) / std


def imagenet_preprocessing(resize: int = 256, crop: int = 224) -> Preprocessing:
    """Resize the shorter side to 256, centre-crop 224, normalise with ImageNet's statistics."""
    return Preprocessing(resize, crop, IMAGENET_MEAN, IMAGENET_STD, grayscale=False)


def preprocessing_from(args: argparse.Namespace, torchvision_model: bool) -> Preprocessing:
    channels = 1 if args.grayscale else 3
    default_mean, default_std = (
        (IMAGENET_MEAN, IMAGENET_STD) if torchvision_model else ((0.0,) * 3, (1.0,) * 3)
    )
    mean = tuple(args.mean) if args.mean is not None else default_mean[:channels]
    std = tuple(args.std) if args.std is not None else default_std[:channels]
    for label, values in (("--mean", mean), ("--std", std)):
        if len(values) not in (1, channels):
            raise CLIError(f"{label} needs 1 or {channels} values, got {len(values)}.")
    if len(mean) == 1:
        mean = mean * channels
    if len(std) == 1:
        std = std * channels
    if any(value <= 0 for value in std):
        raise CLIError(f"--std values must be positive, got {std}.")
    resize = args.resize if args.resize is not None else (256 if torchvision_model else None)
    crop = args.crop if args.crop is not None else (224 if torchvision_model else None)
    enlarge = args.resize is not None or not torchvision_model
    return Preprocessing(resize, crop, mean, std, args.grayscale, enlarge)


def find_images(spec: str) -> tuple[Path, list[Path]]:
    """The root folder and the image files of `--input` (a file, or a folder searched
    recursively), sorted."""
    path = Path(spec)
    if path.is_file():
        return path.parent, [path]
    if not path.is_dir():
        raise CLIError(f"input not found: {spec}")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CLIError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {spec}")
    return path, files
