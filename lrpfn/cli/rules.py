"""`lrpfn rules`: the rule keys, presets and rule classes."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from typing import Any

from .. import rules as rule_classes
from ..composites import PRESETS
from ..rules import RULE_KEYS
from ._common import PATTERN_KEYS

__all__ = ["register"]


def register(commands) -> None:
    """Add the `rules` verb to the subcommands `commands`."""
    listing = commands.add_parser("rules", help="list rule keys, presets and rule classes")
    listing.set_defaults(run=_rules)


def _rules(args: argparse.Namespace) -> int:
    print("Rule keys (TorchLRP's names, lrpfn's rules; --rules KEY):")
    for key, make in RULE_KEYS.items():
        print(f"  {key:<20} {make()!r}")
    for key in PATTERN_KEYS:
        print(f"  {key:<20} needs patterns: Python only (lrpfn.patterns.fit)")
    print("\nPresets (lrpfn.composites; --rules NAME):")
    for name, preset in PRESETS.items():
        summary = " ".join((preset.__doc__ or "").split())
        print(f"  {name:<26} {name}({_parameters(preset)})")
        print(f"  {'':<26} {summary}")
    print(
        "  (on the command line epsilon_gamma_box's low and high are the normalised pixel "
        "range [0, 1] per channel)"
    )
    print("\nRule classes (lrpfn.rules, for Python):")
    for name in sorted(dir(rule_classes)):
        value = getattr(rule_classes, name)
        if isinstance(value, type) and dataclasses.is_dataclass(value):
            print(f"  {name}({_parameters(value)})")
    return 0


def _parameters(function: Any) -> str:
    return ", ".join(
        name if parameter.default is inspect.Parameter.empty else f"{name}={parameter.default!r}"
        for name, parameter in inspect.signature(function).parameters.items()
    )
