"""`lrpfn evaluate`: region perturbation of several rules on an image folder, as a table,
a CSV file and a figure of the curves."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from .. import evaluate
from ..engine import model_output, prepare
from ._common import CLIError, add_model_arguments, check_rule_name, device, make_rules
from ._images import find_images, preprocessing_from
from ._models import load_model

__all__ = ["register"]


def register(commands) -> None:
    """Add the `evaluate` verb to the subcommands `commands`."""
    verb = commands.add_parser(
        "evaluate",
        help="compare rules by region perturbation (AOPC table, CSV and curves PNG)",
        description="Perturb each image's patches most relevant first and least relevant "
        "first, for every rule, and write aopc.csv and curves.png to --out.",
    )
    add_model_arguments(verb)
    for action in verb._actions:  # the shared --rules takes a list here
        if action.dest == "rules":
            action.help = "comma-separated rule keys or presets (epsilon_gamma_box)"
    verb.add_argument("--input", required=True, help="an image file or a folder of images")
    verb.add_argument("--out", required=True, help="folder for aopc.csv and curves.png")
    verb.add_argument("--target", type=int, help="class to explain (default: the prediction)")
    verb.add_argument("--patch", type=int, default=16, help="patch size in pixels (16)")
    verb.add_argument(
        "--steps", type=int, help="patches perturbed (default: 20, or every patch if fewer)"
    )
    verb.add_argument(
        "--perturbation",
        default="uniform",
        help="uniform (seeded noise in each image's range), blur, mean, or a number (uniform)",
    )
    verb.add_argument("--seed", type=int, default=0, help="seed of the noise and random order")
    verb.add_argument("--batch-size", type=int, default=64, help="images per forward pass (64)")
    verb.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    verb.add_argument("--quiet", action="store_true", help="no progress bar")
    verb.set_defaults(run=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    if args.output is not None:
        raise CLIError(
            "--output is supported by `lrpfn explain` and `lrpfn check`; for evaluate wrap the "
            "model in a module whose forward returns the output to explain."
        )
    names = [name.strip() for name in args.rules.split(",") if name.strip()]
    if not names:
        raise CLIError("--rules is empty: name at least one rule key or preset.")
    for name in names:
        check_rule_name(name)
    perturbation = _perturbation(args.perturbation)
    if args.batch_size < 1 or args.patch < 1 or (args.steps is not None and args.steps < 1):
        raise CLIError("--batch-size, --patch and --steps must be at least 1.")
    root, files = find_images(args.input)
    target_device = device(args.device)
    model, is_torchvision = load_model(args.model, args.weights)
    preprocessing = preprocessing_from(args, is_torchvision)
    x = _stack([preprocessing.load(path) for path in files], files).to(target_device)
    patches = math.ceil(x.shape[-2] / args.patch) * math.ceil(x.shape[-1] / args.patch)
    if args.steps is None:
        args.steps = min(20, patches)
    if args.steps > patches:
        raise CLIError(
            f"--steps {args.steps} is more than the {patches} patch(es) of {args.patch} pixels "
            f"in a {x.shape[-2]}x{x.shape[-1]} image: lower --steps or --patch."
        )
    model = model.to(target_device)
    methods = {name: make_rules(name, preprocessing.mean, preprocessing.std) for name in names}
    model_output(prepare(model, methods[names[0]]), x[:1])  # a model that does not fit: one line
    comparison = evaluate.compare(
        model, x, methods, args.target, patch=args.patch, steps=args.steps,
        perturbation=perturbation, seed=args.seed,
        batch_size=args.batch_size, progress=not args.quiet,
    )  # fmt: skip
    out = Path(args.out)
    table = comparison.to_csv(out / "aopc.csv")
    figure = out / "curves.png"
    evaluate.plot_curves(
        comparison,
        figure,
        title=f"{args.model} on {len(files)} image(s) of {root}: patches of {args.patch} px, "
        f"{args.steps} steps, perturbation {args.perturbation}",
    )
    print(comparison)
    print(f"wrote {table} and {figure}")
    return 0


def _perturbation(spec: str) -> float | str:
    try:
        return float(spec)
    except ValueError:
        if spec not in ("uniform", "blur", "mean"):
            raise CLIError(
                f"unknown --perturbation {spec!r}: use uniform, blur, mean or a number."
            ) from None
        return spec


def _stack(inputs: list[torch.Tensor], paths: list[Path]) -> torch.Tensor:
    shapes = {tuple(x.shape) for x in inputs}
    if len(shapes) > 1:
        found = ", ".join(
            f"{p.name} {tuple(x.shape[1:])}" for p, x in zip(paths, inputs, strict=True)
        )
        raise CLIError(f"the images differ in size ({found}): pass --crop N (and --resize N).")
    return torch.stack(inputs)
