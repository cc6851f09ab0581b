"""Small models for the command-line tests, loaded by `--model tiny_models:NAME`.

Each factory is deterministic (fixed seed), so a test can rebuild the same model in-process.
"""

import torch
from torch import nn


def tiny_cnn(channels: int = 3, seed: int = 0) -> nn.Module:
    """conv - relu - maxpool - conv - relu - global average - dense, 3 classes."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()


def tiny_gray_cnn() -> nn.Module:
    """`tiny_cnn` for one input channel."""
    return tiny_cnn(channels=1)


class Sorted(nn.Module):
    """Sorts its input: `torch.sort` has no relevance handler in lrpfn."""

    def forward(self, x):
        return torch.sort(x, dim=-1).values


def unsupported_model() -> nn.Module:
    """A model whose `torch.sort` node no handler covers (for `lrpfn check`)."""
    return nn.Sequential(nn.Flatten(), Sorted(), nn.Linear(48, 2)).eval()


NOT_A_MODEL = 42
