"""`lrpfn explain`: a heatmap PNG per input image."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from .. import colormaps, image
from ..engine import lrp, model_output, prepare
from ._common import CLIError, add_model_arguments, check_rule_name, device, make_rules
from ._images import find_images, preprocessing_from
from ._models import load_model

__all__ = ["register"]


def register(commands) -> None:
    """Add the `explain` verb to the subcommands `commands`."""
    explain = commands.add_parser("explain", help="write a heatmap PNG per input image")
    add_model_arguments(explain)
    explain.add_argument("--input", required=True, help="an image file or a folder of images")
    explain.add_argument("--out", required=True, help="folder for the heatmaps")
    explain.add_argument("--target", type=int, help="class to explain (default: the prediction)")
    explain.add_argument("--batch-size", type=int, default=8, help="images per batch (8)")
    explain.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    explain.add_argument("--save-npy", action="store_true", help="also save relevance as .npy")
    explain.add_argument(
        "--overlay", action="store_true", help="also save the heatmap over the image"
    )
    explain.add_argument("--alpha", type=float, default=0.6, help="overlay opacity (0.6)")
    explain.add_argument(
        "--cmap", default="bwr", help="bwr, seismic, coldhot or a matplotlib colormap (bwr)"
    )
    explain.add_argument(
        "--percentile", type=float, default=99.5, help="colour scale saturates here (99.5)"
    )
    explain.add_argument(
        "--figure",
        action="store_true",
        help="also save NAME_figure.png: input, heatmap, colorbar and the explained class",
    )
    explain.add_argument("--quiet", action="store_true", help="no progress bar")
    explain.set_defaults(run=_explain)


def _explain(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1, got {args.batch_size}.")
    check_rule_name(args.rules)
    try:
        colormaps.as_colormap(args.cmap)
        image.symmetric_normalize(np.zeros((1, 1)), args.percentile)
    except ValueError as error:
        raise CLIError(str(error)) from error
    root, files = find_images(args.input)
    target_device = device(args.device)
    model, is_torchvision = load_model(args.model, args.weights)
    preprocessing = preprocessing_from(args, is_torchvision)
    plan = prepare(
        model.to(target_device),
        make_rules(args.rules, preprocessing.mean, preprocessing.std),
        output=args.output,
    )
    out = Path(args.out)
    bar = tqdm(total=len(files), unit="image", disable=args.quiet or None, file=sys.stderr)
    for start in range(0, len(files), args.batch_size):
        batch = files[start : start + args.batch_size]
        x = _stack([preprocessing.load(path) for path in batch], batch).to(target_device)
        _explain_batch(plan, model, x, batch, root, out, preprocessing, args, bar)
        bar.update(len(batch))
    bar.close()
    print(f"wrote {len(files)} heatmap(s) to {out}")
    return 0


def _stack(inputs: list[torch.Tensor], paths: list[Path]) -> torch.Tensor:
    shapes = {tuple(x.shape) for x in inputs}
    if len(shapes) > 1:
        found = ", ".join(
            f"{p.name} {tuple(x.shape[1:])}" for p, x in zip(paths, inputs, strict=True)
        )
        raise CLIError(
            f"images of one batch differ in size ({found}): pass --crop N (and --resize N), "
            "or --batch-size 1."
        )
    return torch.stack(inputs)


def _explain_batch(plan, model, x, batch, root, out, preprocessing, args, bar) -> None:
    logits = model_output(plan, x)
    if logits.ndim != 2:
        raise CLIError(f"the model's output has shape {tuple(logits.shape)}, not (batch, classes).")
    target = logits.argmax(1) if args.target is None else args.target
    relevance = lrp(plan, x, target=target)
    index = torch.as_tensor(target, device=logits.device).expand(len(batch))
    explained = logits.gather(1, index[:, None]).squeeze(1)
    heat = image.heatmap(relevance, args.cmap, percentile=args.percentile)
    if args.overlay:
        pixels = image.to_pixels(x, preprocessing.mean, preprocessing.std)
        blended = image.overlay(pixels, heat, args.alpha)
    for i, path in enumerate(batch):
        stem = out / path.relative_to(root).with_suffix("")
        image.save_png(heat[i], stem.with_suffix(".png"))
        if args.overlay:
            image.save_png(blended[i], stem.parent / f"{stem.name}_overlay.png")
        if args.figure:
            pixels = image.to_pixels(x[i], preprocessing.mean, preprocessing.std)
            title = (
                f"{path.name}: class {int(index[i])} (logit {float(explained[i]):.3g}), "
                f"ΣR {float(relevance[i].sum()):.3g}, {args.rules}"
            )
            image.plot_explanation(
                pixels, relevance[i], stem.parent / f"{stem.name}_figure.png", title=title,
                cmap=args.cmap, percentile=args.percentile,
            )  # fmt: skip
        if args.save_npy:
            np.save(stem.with_suffix(".npy"), relevance[i].detach().cpu().numpy())
        bar.write(
            f"{path}: class {int(index[i])}, logit {float(explained[i]):.4g}, "
            f"relevance sum {float(relevance[i].sum()):.4g}",
            file=sys.stdout,
        )
