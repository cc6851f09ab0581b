"""scikit-learn's bundled 8x8 digits as a torch data set, and a small CNN for them.

Both need no download: `load_digits` ships with scikit-learn, and `digits_cnn` has
random weights drawn from a fixed seed (load trained weights with `load_state_dict`, or
`--weights` on the command line). `lrpfn explain-dataset --data digits --model
lrpfn.datasets:digits_cnn` explains the whole set in seconds.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["Digits", "digits_cnn"]


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


def digits_cnn(seed: int = 0, width: int = 8) -> nn.Sequential:
    """(conv 3x3 - ReLU - max-pool 2) x 2 - dense, for `(N, 1, 8, 8)` inputs, 10 classes.

    Weights and biases are drawn uniformly from $[-1/\\sqrt{m}, 1/\\sqrt{m}]$ ($m$: the
    fan-in, as torch's default) with a generator seeded by `seed`; the global random
    state is left as it was.
    """
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
    return model.eval()
