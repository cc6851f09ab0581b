"""Shared by the examples: digit data, a small CNN, its training, and the seed's methods.

The data is scikit-learn's bundled `load_digits` (1,797 8x8 images, no download), or MNIST
read from a local folder in torchvision's layout (`<dir>/MNIST/raw/*-ubyte[.gz]`). Pixels
are scaled to [0, 1], so the input box of the z^B rule is simply [0, 1].
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

import lrpfn
from lrpfn import rules


class Digits(NamedTuple):
    """Train and test images `(N, 1, H, W)` in [0, 1] with their labels."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Digits:
    """scikit-learn's 8x8 digits (values 0..16 scaled to [0, 1]), split at random."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    split = int(len(x) * (1 - test_fraction))
    train, test = order[:split], order[split:]
    return Digits(x[train], y[train], x[test], y[test])


def load_mnist(data_dir: str | Path) -> Digits:
    """MNIST from the idx files in `data_dir/MNIST/raw`, `data_dir/raw` or `data_dir`
    (torchvision's layout; gzipped files are read too)."""
    root = Path(data_dir)
    for folder in (root / "MNIST" / "raw", root / "raw", root):
        if _idx(folder, "train-images-idx3-ubyte") is not None:
            break
    else:
        raise SystemExit(
            f"no MNIST idx files (train-images-idx3-ubyte, ...) under {root}: expected "
            f"{root}/MNIST/raw/ as torchvision.datasets.MNIST(root={str(root)!r}) writes it."
        )

    def read(name: str) -> np.ndarray:
        path = _idx(folder, name)
        if path is None:
            raise SystemExit(f"missing MNIST file {name} in {folder}")
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        dims = data[3]
        shape = struct.unpack(f">{dims}I", data[4 : 4 + 4 * dims])
        return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)

    def images(name: str) -> Tensor:
        return torch.tensor(read(name) / 255.0, dtype=torch.float32).unsqueeze(1)

    def labels(name: str) -> Tensor:
        return torch.tensor(read(name), dtype=torch.long)

    return Digits(
        images("train-images-idx3-ubyte"),
        labels("train-labels-idx1-ubyte"),
        images("t10k-images-idx3-ubyte"),
        labels("t10k-labels-idx1-ubyte"),
    )


def _idx(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def make_cnn(size: int, classes: int = 10, width: int = 16) -> nn.Sequential:
    """The seed's layout, two blocks deep: (conv 3x3 - ReLU - max-pool 2) x 2 - dense."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, 1, 1),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(width, 2 * width, 3, 1, 1),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(2 * width * (size // 4) ** 2, classes),
    )


def train(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    epochs: int,
    *,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    progress: bool = True,
) -> nn.Module:
    """Adam on the cross-entropy; a progress bar over epochs. Returns the model in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    bar = tqdm(range(epochs), desc="training", unit="epoch", disable=not progress)
    for _ in bar:
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        bar.set_postfix(loss=f"{total / len(x):.3f}")
    return model.eval()


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def batches(x: Tensor, size: int = 256) -> list[Tensor]:
    """`x` cut into batches (the data argument of `lrpfn.patterns.fit`)."""
    return list(torch.split(x, size))


def one_per_class(y: Tensor, count: int) -> Tensor:
    """Indices of the first example of classes 0, 1, ... (`count` of them)."""
    return torch.stack([torch.nonzero(y == label)[0, 0] for label in range(count)])


Method = Callable[[Tensor], Tensor]


def gradient_times_input(model: nn.Module) -> Method:
    """Gradient x input of the predicted logit: `lrpfn.lrp` with `rules.Gradient()` and a
    one-hot output relevance gives the gradient; times x."""

    def explain(x: Tensor) -> Tensor:
        with torch.no_grad():
            logits = model(x)
        one_hot = nn.functional.one_hot(logits.argmax(1), logits.shape[1]).to(x.dtype)
        return lrpfn.lrp(model, x, rules.Gradient(), output_relevance=one_hot) * x

    return explain


def seed_methods(model: nn.Module, patterns_all, patterns_positive) -> dict[str, Method]:
    """Every method of TorchLRP (the seed), explaining each sample's predicted class."""

    def by(mapping) -> Method:
        plan = lrpfn.prepare(model, mapping)
        return lambda x: lrpfn.lrp(plan, x)

    return {
        "gradient x input": gradient_times_input(model),
        "epsilon": by("epsilon"),
        "gamma": by("gamma"),
        "gamma+epsilon": by("gamma+epsilon"),
        "alpha1beta0": by("alpha1beta0"),
        "alpha2beta1": by("alpha2beta1"),
        "PatternNet (all)": by(rules.PatternNet(patterns_all)),
        "PatternNet (pos)": by(rules.PatternNet(patterns_positive)),
        "PatternAttribution (all)": by(rules.PatternAttribution(patterns_all)),
        "PatternAttribution (pos)": by(rules.PatternAttribution(patterns_positive)),
    }


def fit_patterns(model: nn.Module, x: Tensor, progress: bool = True):
    """Patterns of both kinds ("linear": all, "positive"), fitted on `x`."""
    from lrpfn import patterns

    data = batches(x)
    return (
        patterns.fit(model, data, kind="linear", progress=progress),
        patterns.fit(model, data, kind="positive", progress=progress),
    )
