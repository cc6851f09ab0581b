"""What the command line's verbs share: the error type, rule names, devices, model options."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import torch

from .. import composites
from ..composites import PRESETS
from ..rules import RULE_KEYS

__all__ = [
    "PATTERN_KEYS",
    "CLIError",
    "add_model_arguments",
    "check_rule_name",
    "device",
    "make_rules",
    "output_choice",
]

PATTERN_KEYS = ("patternnet", "patternattribution")


class CLIError(Exception):
    """A problem with the command line's arguments or files: shown as one line, no traceback."""


def make_rules(name: str, mean: Sequence[float], std: Sequence[float]) -> Any:
    """The rule mapping for `--rules NAME`: a TorchLRP rule key or a preset composite.

    `epsilon_gamma_box` gets the bounds of the normalised pixel range [0, 1] per channel.
    """
    check_rule_name(name)
    if name == "epsilon_gamma_box":
        mean_t = torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        return composites.epsilon_gamma_box(low=(0.0 - mean_t) / std_t, high=(1.0 - mean_t) / std_t)
    if name in PRESETS:
        return PRESETS[name]()
    return composites.key_composite(name)


def check_rule_name(name: str) -> None:
    """Raise `CLIError` unless `name` is a rule key or preset usable from the command line."""
    if name in PRESETS or name in RULE_KEYS:
        return
    if name in PATTERN_KEYS:
        raise CLIError(
            f"rule {name!r} needs patterns fitted on training data, which the command line "
            "cannot do: use lrpfn.patterns.fit and lrpfn.rules.PatternNet in Python."
        )
    raise CLIError(
        f"unknown rule {name!r}; choose a rule key ({', '.join(RULE_KEYS)}) or a preset "
        f"({', '.join(PRESETS)}); `lrpfn rules` lists them."
    )


def device(name: str) -> torch.device:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CLIError(f"--device {name}: CUDA is not available on this machine; use --device cpu.")
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise CLIError(f"unknown device {name!r}: {error}") from error


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="torchvision:NAME, or module:attr / file.py:attr"
    )
    parser.add_argument("--weights", help="a local state-dict file (torch.save)")
    parser.add_argument(
        "--rules", default="epsilon_gamma_box", help="a rule key or preset (epsilon_gamma_box)"
    )
    parser.add_argument("--resize", type=int, help="shorter side first resized to N pixels")
    parser.add_argument("--crop", type=int, help="then centre-cropped to N x N")
    parser.add_argument("--mean", type=float, nargs="+", help="per-channel mean to subtract")
    parser.add_argument("--std", type=float, nargs="+", help="per-channel std to divide by")
    parser.add_argument("--grayscale", action="store_true", help="one input channel")
    parser.add_argument(
        "--output",
        type=output_choice,
        help="for a model returning a dict or tuple: the key or index of the output to explain",
    )


def output_choice(value: str) -> str | int:
    """`--output`: an index where it is a whole number, else a key."""
    return int(value) if value.lstrip("-").isdigit() else value
