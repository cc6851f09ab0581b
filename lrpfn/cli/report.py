"""`lrpfn report`: a static site to explore explained stores.

    lrpfn report digits.zarr --out report/
    lrpfn report digits.zarr digits-atlas.zarr --out report/ --clusters 4
    # then open report/index.html (from disk, or copied to any static file host)

Each STORE is one written by `lrpfn explain-dataset` (samples, heatmaps, SpRAy) or by
`lrpfn atlas` (concepts); at most one of each.
"""

from __future__ import annotations

import argparse

from ..report import write
from ._common import CLIError

__all__ = ["register"]


def register(commands) -> None:
    """Add the `report` verb to the subcommands `commands`."""
    verb = commands.add_parser("report", help="write a static site to explore explained stores")
    verb.add_argument("stores", nargs="+", metavar="STORE", help="explain-dataset / atlas store")
    verb.add_argument("--out", required=True, help="the report's folder")
    verb.add_argument("--samples", type=int, help="rows in the gallery (the first; default all)")
    verb.add_argument(
        "--spray-class",
        type=int,
        action="append",
        dest="spray_classes",
        help="cluster this explained class (repeatable; default: every class with enough rows)",
    )
    verb.add_argument("--no-spray", action="store_true", help="no spectral relevance analysis")
    verb.add_argument("--clusters", type=int, default=3, help="SpRAy clusters per class (3)")
    verb.add_argument("--neighbors", type=int, default=10, help="SpRAy graph neighbours (10)")
    verb.add_argument(
        "--percentile", type=float, default=99.5, help="heatmaps clipped at this percentile"
    )
    verb.add_argument("--cmap", default="bwr", help="bwr, seismic or coldhot")
    verb.add_argument("--title", help="the page's title")
    verb.set_defaults(run=_report)


def _report(args: argparse.Namespace) -> int:
    if args.samples is not None and args.samples < 0:
        raise CLIError(f"--samples must be at least 0, got {args.samples}.")
    if not 0 < args.percentile <= 100:
        raise CLIError(f"--percentile must lie in (0, 100], got {args.percentile}.")
    if args.clusters < 1 or args.neighbors < 1:
        raise CLIError("--clusters and --neighbors must be at least 1.")
    page = write(
        args.stores,
        args.out,
        samples=args.samples,
        spray_classes=[] if args.no_spray else args.spray_classes,
        clusters=args.clusters,
        neighbors=args.neighbors,
        percentile=args.percentile,
        cmap=args.cmap,
        title=args.title,
    )
    print(f"wrote {page}")
    return 0
