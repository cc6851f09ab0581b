"""`lrpfn check`: the pre-flight report and the resolved rule of every node."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import torch

from .. import composites
from ..engine import Plan, prepare
from ..errors import UnsupportedNodeError
from ._common import add_model_arguments, check_rule_name, make_rules
from ._images import preprocessing_from
from ._models import load_model

__all__ = ["describe", "register"]


def register(commands) -> None:
    """Add the `check` verb to the subcommands `commands`."""
    check = commands.add_parser(
        "check", help="report unsupported nodes and print the resolved rule of every node"
    )
    add_model_arguments(check)
    check.set_defaults(run=_check)


def _check(args: argparse.Namespace) -> int:
    check_rule_name(args.rules)
    model, is_torchvision = load_model(args.model, args.weights, warn=False)
    preprocessing = preprocessing_from(args, is_torchvision)
    try:
        rules = make_rules(args.rules, preprocessing.mean, preprocessing.std)
        plan = prepare(model, rules, output=args.output)
    except UnsupportedNodeError as error:
        print(f"{args.model}: not ready to explain.\n{error}")
        return 1
    _print_table(plan, args.model, args.rules)
    return 0


def _print_table(plan: Plan, model: str, rules: str) -> None:
    infos = composites.node_infos(plan.module, plan.handlers)
    print(f"{model}: every node has a handler; rules resolved from {rules!r}:")
    rows = [("node", "module", "family", "rule")] + [
        (info.name, info.module or "", info.family, describe(plan.rules[info.name]))
        for info in infos
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  " + "  ".join([*cells, row[3]]))


def describe(rule: Any) -> str:
    """A rule as `Name(field=value, ...)`, tensors shown as short lists of numbers."""
    if not dataclasses.is_dataclass(rule) or isinstance(rule, type):
        return repr(rule)
    fields = []
    for field in dataclasses.fields(rule):
        value = getattr(rule, field.name)
        if isinstance(value, torch.Tensor):
            numbers = [round(float(v), 4) for v in value.flatten()[:8]]
            value = numbers[0] if len(numbers) == 1 else numbers
        fields.append(f"{field.name}={value!r}")
    return f"{type(rule).__name__}({', '.join(fields)})"
