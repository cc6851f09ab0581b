"""The site's files: the page, its script and style, Plotly's bundle, and the data.

The data is written twice: `data/report.json` for programs, and `data/report.js`
(`window.LRPFN_REPORT = {...};`), which the page loads with a `<script>` tag, because a
page opened from disk (`file://`) may not `fetch` a file next to it. Plotly's
`plotly.min.js` is copied from the `plotly` Python package (the `report` extra), so the
page needs no network.
"""

from __future__ import annotations

import html
import json
import shutil
from importlib import resources
from pathlib import Path

from ._errors import ReportError

__all__ = ["prepare_folder", "write_page"]

_JSON = Path("data") / "report.json"
_ASSETS = ("report.js", "report.css")
_OWN = {"img", "data", "assets", "index.html"}  # what a report writes into its folder


def prepare_folder(out: str | Path) -> Path:
    """`out` ready for a new report: created, or emptied of an earlier (or unfinished)
    report's files.

    Raises:
        ReportError: `out` is a file, or a folder with anything else in it.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out} is a file. Fix: choose a folder for the report.")
    if out.is_dir():
        others = sorted(p.name for p in out.iterdir() if p.name not in _OWN)
        if others:
            raise ReportError(
                f"{out} holds files that are not a report's ({', '.join(others[:5])}). Fix: "
                "choose an empty or new folder."
            )
        for name in ("img", "data", "assets"):
            shutil.rmtree(out / name, ignore_errors=True)
        (out / "index.html").unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _plotly_bundle() -> bytes:
    try:
        bundle = resources.files("plotly") / "package_data" / "plotly.min.js"
        return bundle.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as error:
        raise ReportError(
            "the report draws its charts with Plotly, which is not installed. Fix: "
            "pip install 'lrpfn[report]' (or pip install plotly)."
        ) from error


def write_page(out: Path, data: dict, title: str) -> Path:
    """Write `index.html`, `assets/` and `data/` into `out`; returns the page's path."""
    here = resources.files(__package__) / "assets"
    (out / "assets").mkdir(parents=True, exist_ok=True)
    (out / "assets" / "plotly.min.js").write_bytes(_plotly_bundle())
    for name in _ASSETS:
        (out / "assets" / name).write_bytes((here / name).read_bytes())
    page = (here / "index.html").read_text(encoding="utf-8")
    page = page.replace("{{title}}", html.escape(title))
    (out / "index.html").write_text(page, encoding="utf-8")
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    (out / "data").mkdir(parents=True, exist_ok=True)
    (out / _JSON).write_text(text, encoding="utf-8")
    (out / "data" / "report.js").write_text(f"window.LRPFN_REPORT = {text};\n", encoding="utf-8")
    return out / "index.html"
