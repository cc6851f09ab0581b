"""A report to explore: the digits with a Clever-Hans tag, explained, clustered and mapped
into concepts, in one static site.

Every other digit 3 carries a bright 2x2 tag in its top-left corner (as in
examples/spray_digits.py), and a CNN trained on these data learns it. The data set is
explained into a store (`lrpfn.datasets.explain`), the concept atlas of both
convolutions is computed (`lrpfn.concepts.atlas`, with reference crops), and
`lrpfn.report.write` turns both into a site: open OUT/report/index.html from disk, pick
the SpRAy tab and the class 3, and one cluster holds the tagged threes.

    python examples/report_digits.py                          # out/report_digits/report/
    python examples/report_digits.py --screenshots docs/img   # also the docs' screenshots
    python examples/report_digits.py --smoke                  # seconds

`--screenshots` needs Chromium (Debian's `chromium`) and Playwright's Python package.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _digits
from spray_digits import CLASS, TaggedDigits

import lrpfn.report
from lrpfn import composites, concepts, datasets

LAYERS = ["_0", "_3"]  # the two convolutions


class NamedTaggedDigits(TaggedDigits):
    """The tagged digits, with class names the store records."""

    classes = tuple(f"digit {d}" for d in range(10))


def build(out: Path, epochs: int, smoke: bool) -> Path:
    """Train, explain, compute the atlas, write the report; returns the page's path."""
    data = NamedTaggedDigits()
    torch.manual_seed(0)
    model = _digits.make_cnn(size=8)
    _digits.train(model, data.images, data.labels, epochs, progress=not smoke)
    print(f"accuracy {_digits.accuracy(model, data.images, data.labels):.3f}")
    for store in ("digits.zarr", "atlas.zarr"):
        shutil.rmtree(out / store, ignore_errors=True)  # a new model: new stores
    rules = composites.epsilon_plus()
    datasets.explain(
        model, data, rules, out / "digits.zarr", target="label", batch_size=128,
        normalization=((0.0,), (1.0,)), progress=not smoke,
    )  # fmt: skip
    atlas = concepts.atlas(
        model, data, rules, LAYERS, out / "atlas.zarr", k=16, target="label",
        batch_size=128, progress=not smoke,
    )  # fmt: skip
    atlas.render_references(n=6, size=(32, 32))
    return lrpfn.report.write(
        [out / "digits.zarr", out / "atlas.zarr"],
        out / "report",
        spray_classes=[CLASS] if smoke else None,
        clusters=2,
        title="digits, every other 3 tagged top-left",
    )


def screenshots(page_path: Path, folder: Path) -> list[Path]:
    """The SpRAy tab (class 3) and the atlas tab (layer _3), as PNG files."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        raise SystemExit("--screenshots needs Chromium: apt-get install chromium")
    folder.mkdir(parents=True, exist_ok=True)
    shots = [folder / "report.png", folder / "report_atlas.png"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(page_path.resolve().as_uri())
        page.click("#tab-spray")
        page.click(f"#spray-classes button[data-class='{CLASS}']")
        page.wait_for_timeout(800)
        page.screenshot(path=str(shots[0]))
        page.click("#tab-atlas")
        page.click("#atlas-layers button[data-layer='1']")
        page.click("#atlas-channels button[data-channel='0']")
        page.wait_for_timeout(800)
        page.screenshot(path=str(shots[1]))
        browser.close()
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="out/report_digits", help="folder for stores and site")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--screenshots", help="also write report.png, report_atlas.png here")
    parser.add_argument("--smoke", action="store_true", help="one epoch, one class clustered")
    args = parser.parse_args()
    torch.set_num_threads(1)  # small tensors: threads cost more than they give
    out = Path(args.out)
    page = build(out, 1 if args.smoke else args.epochs, args.smoke)
    print(f"wrote {page}")
    if args.screenshots:
        for path in screenshots(page, Path(args.screenshots)):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
