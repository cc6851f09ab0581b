"""`lrpfn atlas`: the concept atlas of some layers over a data set, into a Zarr store.

    lrpfn atlas --model torchvision:vgg16 --weights vgg16.pth --data val/ \\
        --rules epsilon_plus --layer features.28 --layer classifier.0 --out vgg.atlas.zarr
    torchrun --nproc_per_node=4 -m lrpfn atlas ...        # the same, on 4 ranks
    lrpfn atlas --model lrpfn.datasets:digits_cnn --data digits --layer 3 --out d.zarr

`--data` is read as by `lrpfn explain-dataset`. Transformer concepts: `--neurons NAME`
(the last axis, e.g. an MLP's hidden units) and `--heads NAME:H` (H heads side by side on
the last axis). After the run, rank 0 writes each layer's
reference crops and conditional heatmaps into the store (`--references N` per concept,
0 for none) and one PNG per layer (`--figures DIR`, default `<out>.figures/`) with the
`--plot-concepts` concepts of largest mean relevance over the data set. Running the same
command again after a crash completes the missing chunks.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..concepts import Heads, Neurons, atlas, plot_atlas
from ..datasets import Digits, ImageFolder
from ._common import CLIError, add_model_arguments, check_rule_name, make_rules
from ._images import IMAGE_SUFFIXES, preprocessing_from
from ._models import load_model
from .explain_dataset import _is_folder, _target, _user_dataset

__all__ = ["register"]


def register(commands) -> None:
    """Add the `atlas` verb to the subcommands `commands`."""
    verb = commands.add_parser(
        "atlas", help="the concept atlas of some layers over a data set (torchrun-ready)"
    )
    add_model_arguments(verb)
    verb.add_argument(
        "--data", required=True, help="an ImageFolder-layout folder, module:attr, or digits"
    )
    verb.add_argument(
        "--layer", action="append", default=[], help="a layer (node or module name); repeatable"
    )
    verb.add_argument(
        "--neurons",
        action="append",
        default=[],
        help="a transformer layer whose last axis holds the concepts (MLP neurons); repeatable",
    )
    verb.add_argument(
        "--heads",
        action="append",
        default=[],
        help="NAME:H, a transformer layer whose last axis holds H heads' outputs; repeatable",
    )
    verb.add_argument("--out", required=True, help="the Zarr store (a folder)")
    verb.add_argument("--k", type=int, default=40, help="samples kept per concept (40)")
    verb.add_argument("--batch-size", type=int, default=64, help="samples per batch/chunk (64)")
    verb.add_argument(
        "--target", default=None, help="class to explain, or 'label' (default: the prediction)"
    )
    verb.add_argument("--references", type=int, default=8, help="reference samples per concept")
    verb.add_argument("--size", type=int, default=64, help="pixels of a reference crop (64)")
    verb.add_argument("--plot-concepts", type=int, default=8, help="concepts per layer figure")
    verb.add_argument("--figures", help="folder of the PNG per layer (default <out>.figures)")
    verb.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per local rank)")
    verb.add_argument("--workers", type=int, default=0, help="data loader processes (0)")
    verb.add_argument("--threads", type=int, help="torch threads per process")
    verb.add_argument("--quiet", action="store_true", help="no progress bar")
    verb.set_defaults(run=_atlas)


def _atlas(args: argparse.Namespace) -> int:
    layers = _layers(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.references < 0 or args.references > args.k:
        raise CLIError(f"--references must be in 0..--k ({args.k}), got {args.references}.")
    check_rule_name(args.rules)
    model, is_torchvision = load_model(args.model, args.weights)
    preprocessing = preprocessing_from(args, is_torchvision)
    if args.data == "digits":
        dataset: Any = Digits()
        mean, std = (0.0,), (1.0,)
    elif ":" in args.data and not _is_folder(args.data):
        dataset, mean, std = _user_dataset(args.data), (0.0,), (1.0,)
    else:
        dataset = ImageFolder(args.data, preprocessing.load, IMAGE_SUFFIXES)
        mean, std = preprocessing.mean, preprocessing.std
    result = atlas(
        model,
        dataset,
        make_rules(args.rules, preprocessing.mean, preprocessing.std),
        layers,
        args.out,
        k=args.k,
        target=_target(args.target),
        batch_size=args.batch_size,
        device=args.device,
        workers=args.workers,
        model_name=args.model,
        data_name=args.data,
        progress=not args.quiet,
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    figures = Path(args.figures or f"{str(args.out).rstrip('/')}.figures")
    if args.references:
        size = (args.size, args.size)
        result.render_references(n=args.references, size=size, to_pixels=_pixels(mean, std))
        for layer in result.layers:
            path = figures / f"{_file_name(layer)}.png"
            if not _figure(result, layer, args.plot_concepts, path):
                print(f"no figure of layer {layer}: the inputs are not images")
    print(
        f"wrote the atlas of {len(result.layers)} layer(s) to {args.out}"
        + (f"; figures in {figures}" if args.references else "")
    )
    return 0


def _layers(args: argparse.Namespace) -> list[Any]:
    """`--layer`, `--neurons` and `--heads NAME:H` as the atlas's layer list."""
    layers: list[Any] = [*args.layer, *(Neurons(name) for name in args.neurons)]
    for spec in args.heads:
        name, _, count = spec.rpartition(":")
        if not name or not count.isdigit() or int(count) < 1:
            raise CLIError(f"--heads takes NAME:H (e.g. blocks.3.attn.norm:3), got {spec!r}.")
        layers.append(Heads(name, int(count)))
    if not layers:
        raise CLIError("name at least one layer: --layer, --neurons or --heads.")
    return layers


def _pixels(mean, std):
    """Network inputs back to RGB in [0, 1]: `x * std + mean` per channel."""

    def to_pixels(x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        scale = torch.as_tensor(std, dtype=x.dtype).reshape(shape)
        shift = torch.as_tensor(mean, dtype=x.dtype).reshape(shape)
        pixels = (x * scale + shift).clamp(0, 1)
        return pixels.expand(-1, 3, -1, -1) if pixels.shape[1] == 1 else pixels

    return to_pixels


def _figure(result, layer: str, count: int, path: Path) -> bool:
    """The `count` concepts of largest mean normalised relevance over the data set (False
    where the references have no image crops)."""
    import zarr

    group = zarr.open_group(result.store, mode="r")
    if "images" not in group[f"layers/{layer}/references"]:
        return False
    weights = np.asarray(group["class_count"][...], dtype=np.float64)
    means = np.nan_to_num(result.class_relevance(layer).astype(np.float64))
    overall = weights @ means / max(weights.sum(), 1.0)
    concepts = np.argsort(-overall, kind="stable")[: max(1, count)]
    references = group[f"layers/{layer}/references"]
    plot_atlas(
        np.asarray(references["images"][...])[concepts],
        np.asarray(references["heatmaps"][...], dtype=np.float32)[concepts],
        path,
        row_titles=[f"{result.kind(layer)} {c}" for c in concepts],
        indices=np.asarray(references["indices"][...])[concepts],
        title=f"{layer}: the concepts of largest mean relevance and their top samples",
    )
    return True


def _file_name(layer: str) -> str:
    return "".join(
        character if character.isalnum() or character in "._-" else "_" for character in layer
    )
