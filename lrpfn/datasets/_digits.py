"""scikit-learn's bundled 8x8 digits as a torch data set, and a small CNN for them.

Both need no download: `load_digits` ships with scikit-learn, and `digits_cnn` is trained
on its first 1,500 digits at first use in a process (a few seconds on one CPU core, from
a fixed seed; the last 297 digits are held out, and it classifies about 92% of them
correctly), so `lrpfn explain-dataset --data digits --model lrpfn.datasets:digits_cnn`
explains a trained model in seconds, as the README shows.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TRAINED_ON", "Digits", "digits_cnn"]

TRAINED_ON = 1500
"""`digits_cnn` is trained on the digits `[0, TRAINED_ON)`; the rest are held out."""
_EPOCHS = 8


class Digits(torch.utils.data.Dataset):
    """The 1,797 digits of `sklearn.datasets.load_digits`, items `(x, label)`: `x` of shape
    `(1, 8, 8)`, float32, the 17 grey levels 0..16 scaled to [0, 1]; `classes` names the
    labels 0..9 ("0".."9")."""

    classes = tuple(str(digit) for digit in range(10))

    def __init__(self) -> None:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        self.images = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
        self.labels = torch.tensor(bunch.target, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], int(self.labels[index])


def digits_cnn(seed: int = 0, width: int = 8, trained: bool = True) -> nn.Sequential:
    r"""(conv 3x3 - ReLU - max-pool 2) x 2 - dense, for `(N, 1, 8, 8)` inputs, 10 classes.

    Weights and biases start uniform in $[-1/\sqrt{m}, 1/\sqrt{m}]$ ($m$: the fan-in, as
    torch's default) from a generator seeded by `seed`; with `trained` (the default) they
    are then trained on the first `TRAINED_ON` digits (Adam, learning rate 0.01, batches of
    64 in a seeded order, 8 epochs), once per process and cached. The global random state
    is left as it was.
    """
    model = _initialised(seed, width)
    if trained:
        model.load_state_dict(_trained_state(seed, width))
    return model.eval()


def _initialised(seed: int, width: int) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):  # the layers' own initialisation draws from it
        model = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * 2 * 2, 10),
        )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                bound = 1.0 / math.sqrt(layer.weight[0].numel())
                for parameter in (layer.weight, layer.bias):
                    values = torch.rand(parameter.shape, generator=generator) * 2 - 1
                    parameter.copy_(values * bound)
    return model


@functools.lru_cache(maxsize=4)
def _trained_state(seed: int, width: int) -> dict[str, Tensor]:
    """The state dict of `digits_cnn(seed, width)` after training (see `digits_cnn`)."""
    model = _initialised(seed, width).train()
    digits = Digits()
    x, y = digits.images[:TRAINED_ON], digits.labels[:TRAINED_ON]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(_EPOCHS):
        for batch in torch.randperm(TRAINED_ON, generator=generator).split(64):
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return {name: value.detach().clone() for name, value in model.state_dict().items()}
