"""`lrpfn explain-dataset`: a whole data set's explanations into a Zarr store.

    lrpfn explain-dataset --model torchvision:resnet18 --weights r18.pth --data val/ \\
        --rules epsilon_plus --out val.zarr --batch-size 64
    torchrun --nproc_per_node=4 -m lrpfn explain-dataset ...     # the same, on 4 ranks
    lrpfn explain-dataset --model lrpfn.datasets:digits_cnn --data digits --out digits.zarr

`--data` is a folder in ImageFolder layout (`root/<class>/<image>`, read and preprocessed
as by `lrpfn explain`), a `module:attr` naming a torch Dataset of `(x, y)` pairs or a
callable returning one, or `digits` (scikit-learn's 8x8 digits as 1x8x8 tensors).
Running the same command again after a crash completes the missing chunks.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from ..datasets import Digits, ImageFolder, explain
from ._common import CLIError, add_model_arguments, check_rule_name, make_rules
from ._images import IMAGE_SUFFIXES, preprocessing_from
from ._models import _import, load_model

__all__ = ["register"]


def register(commands) -> None:
    """Add the `explain-dataset` verb to the subcommands `commands`."""
    verb = commands.add_parser(
        "explain-dataset", help="explain a whole data set into a Zarr store (torchrun-ready)"
    )
    add_model_arguments(verb)
    verb.add_argument(
        "--data", required=True, help="an ImageFolder-layout folder, module:attr, or digits"
    )
    verb.add_argument("--out", required=True, help="the Zarr store (a folder or fsspec URL)")
    verb.add_argument("--batch-size", type=int, default=64, help="samples per batch/chunk (64)")
    verb.add_argument(
        "--target", default=None, help="class to explain, or 'label' (default: the prediction)"
    )
    verb.add_argument(
        "--dtype", default="float32", choices=("float32", "float16"), help="of the relevance"
    )
    verb.add_argument(
        "--keep-node",
        action="append",
        default=[],
        help="also keep this graph node's relevance per channel (repeatable)",
    )
    verb.add_argument(
        "--thumbnail",
        type=int,
        default=64,
        help="keep each image input as RGB of at most this many pixels a side (64; 0: none)",
    )
    verb.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per local rank)")
    verb.add_argument("--workers", type=int, default=0, help="data loader processes (0)")
    verb.add_argument("--threads", type=int, help="torch threads per process")
    verb.add_argument("--quiet", action="store_true", help="no progress bar")
    verb.add_argument(
        "--overwrite", action="store_true", help="replace a store already at --out (not resume)"
    )
    verb.set_defaults(run=_explain_dataset)


def _explain_dataset(args: argparse.Namespace) -> int:
    if args.output is not None:
        raise CLIError(
            "--output is supported by `lrpfn explain` and `lrpfn check`; for explain-dataset wrap the "
            "model in a module whose forward returns the output to explain."
        )
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1, got {args.batch_size}.")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    check_rule_name(args.rules)
    model, is_torchvision = load_model(args.model, args.weights)
    preprocessing = preprocessing_from(args, is_torchvision)
    normalization = None  # a user's data set: each picture scaled from its min to its max
    if args.data == "digits":
        dataset: Any = Digits()
        normalization = ((0.0,), (1.0,))  # the digits lie in [0, 1]
    elif ":" in args.data and not _is_folder(args.data):
        dataset = _user_dataset(args.data)
    else:
        dataset = ImageFolder(args.data, preprocessing.load, IMAGE_SUFFIXES)
        normalization = (preprocessing.mean, preprocessing.std)
    summary = explain(
        model,
        dataset,
        make_rules(args.rules, preprocessing.mean, preprocessing.std),
        args.out,
        target=_target(args.target),
        batch_size=args.batch_size,
        relevance_dtype=args.dtype,
        nodes=args.keep_node,
        thumbnail=args.thumbnail,
        normalization=normalization,
        device=args.device,
        workers=args.workers,
        model_name=args.model,
        data_name=args.data,
        progress=not args.quiet,
        overwrite=args.overwrite,
    )
    if _rank() == 0:
        print(
            f"wrote {summary.chunks_written} chunk(s) of {args.batch_size} to {args.out} "
            f"({summary.chunks_skipped} already complete); "
            f"{len(summary.invalid)} invalid row(s)"
        )
    return 0


def _is_folder(spec: str) -> bool:
    from pathlib import Path

    return Path(spec).is_dir()


def _user_dataset(spec: str) -> Any:
    source, _, attr = spec.partition(":")
    value: Any = _import(source, spec)
    for part in attr.split("."):
        if not hasattr(value, part):
            raise CLIError(f"unknown data {spec!r}: {source!r} has no attribute {attr!r}.")
        value = getattr(value, part)
    if isinstance(value, type) or not (hasattr(value, "__getitem__") and hasattr(value, "__len__")):
        if not callable(value):
            raise CLIError(f"data {spec!r} is {type(value).__name__}, not a torch Dataset.")
        value = value()  # a Dataset class or a function returning a data set
    if not (hasattr(value, "__getitem__") and hasattr(value, "__len__")):
        raise CLIError(
            f"data {spec!r} is {type(value).__name__}, not a map-style torch Dataset "
            "(with __getitem__ and __len__) or a callable returning one."
        )
    return value


def _target(value: str | None) -> int | str | None:
    if value is None or value == "label":
        return value
    try:
        return int(value)
    except ValueError as error:
        raise CLIError(f"--target must be a class index or 'label', got {value!r}.") from error


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))
