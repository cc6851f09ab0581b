"""The `lrpfn` command line (also `python -m lrpfn`).

    lrpfn explain --model torchvision:vgg16 --weights vgg16.pth --input photos/ \\
        --rules epsilon_gamma_box --out heatmaps/
    lrpfn explain --model mypackage.models:make_net --input digit.png --rules alpha2beta1 \\
        --crop 28 --grayscale --out heatmaps/ --save-npy
    lrpfn rules                                    # rule keys, presets and their parameters
    lrpfn check --model torchvision:resnet50 --rules epsilon_plus   # pre-flight report
    lrpfn explain-dataset --model lrpfn.datasets:digits_cnn --data digits --out digits.zarr
    lrpfn evaluate --model torchvision:resnet18 --input photos/ --rules epsilon_plus --out ev/

Models are `torchvision:NAME` (weights from a local `--weights` file; without one the
weights are random and a warning says so) or `module:attr` / `path/to/file.py:attr`, an
`nn.Module` or a callable returning one. Images are read with Pillow and preprocessed as
for ImageNet for torchvision models (resize 256, centre crop 224, normalise with the
ImageNet mean and std); `--resize`, `--crop`, `--mean`, `--std`, `--grayscale` override
that. For `epsilon_gamma_box` the box bounds are the pixel range [0, 1] after
normalisation, per channel: `low = -mean / std`, `high = (1 - mean) / std`.

Each verb lives in its own module of this package (`explain`, `rules`, `check`, ...) with
a `register(commands)` function; `VERBS` lists them. Every error exits with status 1 (2
for malformed arguments) and a one-line message naming the problem, without a traceback:
a failure inside the user's model names the graph node, the op and the likely fix
(`lrpfn.errors.NodeFailedError`); any other exception is shown as its type and message
(set `LRPFN_TRACEBACK=1` to see the traceback). Ctrl-C ends a verb with one line and
status 130 (under torchrun, from rank 0 only); a closed pipe (`lrpfn rules | head`) ends a
verb quietly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .._version import __version__
from ..errors import LRPError
from . import atlas, check, evaluate, explain, explain_dataset, report, rules
from ._common import CLIError, check_rule_name, make_rules
from ._images import Preprocessing, find_images, imagenet_preprocessing
from ._models import load_model
from .check import describe

__all__ = [
    "CLIError",
    "Preprocessing",
    "check_rule_name",
    "describe",
    "find_images",
    "imagenet_preprocessing",
    "load_model",
    "main",
    "make_rules",
]

INTERRUPTED = 130
"""The exit status after Ctrl-C (128 + SIGINT), as shells report it."""

VERBS = (explain, explain_dataset, atlas, report, evaluate, rules, check)
"""The modules of the subcommands, in the order `lrpfn --help` lists them."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lrpfn", description="Explain PyTorch models with Layer-wise Relevance Propagation."
    )
    parser.add_argument("--version", action="version", version=f"lrpfn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for verb in VERBS:
        verb.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 on success).

    A closed standard output (`lrpfn rules | head`) ends the command quietly, as for any
    Unix tool.
    """
    args = _parser().parse_args(argv)
    try:
        status = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return status
    except (CLIError, LRPError) as error:
        print(f"lrpfn {args.command}: error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0":
            print(f"lrpfn {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as error:
        if os.environ.get("LRPFN_TRACEBACK"):
            raise
        message = " ".join(str(error).split())
        print(
            f"lrpfn {args.command}: error: {type(error).__name__}: {message} (set "
            "LRPFN_TRACEBACK=1 to see where it was raised)",
            file=sys.stderr,
        )
        return 1


def _silence_stdout() -> None:
    """After the reader of stdout has gone: point stdout at devnull so that the
    interpreter's final flush does not report the broken pipe again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
