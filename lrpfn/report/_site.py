"""`write`: a static site that explores explained stores, written from the stores alone.

    lrpfn.report.write(["digits.zarr", "digits-atlas.zarr"], "report/")
    # open report/index.html in a browser: no server, no network

The site is HTML, JSON and PNG files (layout in `_page`); its charts are Plotly's, from
the copy of `plotly.min.js` it carries. It opens from disk (`file://`) and from any
static file host.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import image
from ._atlas import atlas_layers
from ._embedding import spray_classes as classes_with_rows, spray_sections
from ._errors import ReportError
from ._page import prepare_folder, write_page
from ._samples import has_pictures, sample_records
from ._stores import ATLAS, DATASETS, Store, class_name, open_store

__all__ = ["write"]


def write(
    stores: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    samples: int | None = None,
    spray_classes: Sequence[int] | None = None,
    clusters: int = 3,
    neighbors: int = 10,
    percentile: float = 99.5,
    cmap: str = "bwr",
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """Write the report of `stores` into the folder `out`.

    Arguments:
        stores: the path of a store, or of several: at most one written by
            `lrpfn explain-dataset` (its samples with input, heatmap and overlay, and the
            SpRAy of its classes) and one written by `lrpfn atlas` (its concepts). Given
            both, over the same data set, an atlas's top samples show their pictures.
        out: the report's folder: new, empty, or holding an earlier report (replaced);
            a folder with other files is refused.
        samples: how many rows (the first ones) the gallery shows; None: all.
        spray_classes: the explained classes whose heatmaps are clustered (SpRAy); None:
            every class with more than `max(clusters, neighbors)` valid rows (for image
            heatmaps; none for other inputs); `[]`: none.
        clusters: clusters per class.
        neighbors: neighbours per heatmap in SpRAy's affinity graph.
        percentile: heatmaps are divided by this percentile of their absolute values and
            clipped (sign-aware; 100 is the plain maximum).
        cmap: the diverging colormap of `lrpfn.image.COLORMAPS` ("bwr", "seismic",
            "coldhot").
        seed: the random state of SpRAy's clustering and embedding.
        title: the page's title (default: the stores' names).

    Returns:
        The path of `index.html`.

    Raises:
        ReportError: a store is missing or of another kind, two of one kind are given,
            or `out` holds something else.
    """
    if cmap not in image.COLORMAPS:
        raise ReportError(f"unknown colormap {cmap!r}; known: {', '.join(image.COLORMAPS)}.")
    if not 0.0 < percentile <= 100.0:
        raise ReportError(f"percentile must lie in (0, 100], got {percentile!r}.")
    opened = [open_store(s) for s in ([stores] if isinstance(stores, (str, Path)) else stores)]
    explained, atlas = _one_of_each(opened)
    out = prepare_folder(out)
    data: dict = {
        "title": title or " + ".join(Path(s.location).name for s in opened),
        "percentile": percentile,
        "samples": [],
        "gallery": [],
        "spray": [],
        "atlas": None,
    }
    if explained is not None:
        if spray_classes is not None:
            wanted = [int(c) for c in spray_classes]
        elif has_pictures(explained):
            wanted = classes_with_rows(explained, clusters, neighbors)
        else:
            wanted = []  # SpRAy clusters image heatmaps
        data["spray"] = spray_sections(explained, wanted, clusters, neighbors, seed)
        gallery = np.arange(explained.rows if samples is None else min(samples, explained.rows))
        shown = np.union1d(gallery, [r for section in data["spray"] for r in section["rows"]])
        data["gallery"] = gallery.tolist()
        data["samples"] = sample_records(explained, shown.astype(np.int64), out, percentile, cmap)
        data["class_names"] = explained.class_names
    if atlas is not None:
        data["atlas"] = {
            "layers": atlas_layers(atlas, out, percentile, cmap),
            "rows": _atlas_rows(atlas),
            "linked": explained is not None and explained.rows == atlas.rows,
        }
        data.setdefault("class_names", atlas.class_names)
    return write_page(out, data, data["title"])


def _one_of_each(stores: list[Store]) -> tuple[Store | None, Store | None]:
    kinds = {DATASETS: [], ATLAS: []}
    for store in stores:
        kinds[store.kind].append(store)
    for kind, found in kinds.items():
        if len(found) > 1:
            raise ReportError(
                f"a report shows one store of each kind; got {len(found)} of kind {kind!r}: "
                f"{', '.join(s.location for s in found)}. Fix: write one report per store."
            )
    if not stores:
        raise ReportError("no store given.")
    return (kinds[DATASETS] or [None])[0], (kinds[ATLAS] or [None])[0]


def _atlas_rows(atlas: Store) -> dict[str, dict]:
    """Label and file of every row that an ordering of the atlas lists."""
    group = atlas.group
    rows: set[int] = set()
    for name in atlas.attributes.get("layers") or list(group["layers"].group_keys()):
        layer = group["layers"][name]
        for ordering in layer.group_keys():
            if "indices" in layer[ordering]:
                rows.update(int(i) for i in np.unique(layer[ordering]["indices"][:]) if i >= 0)
    labels = group["label"][:]
    paths = group["path"][:] if "path" in group else None
    names = atlas.class_names
    return {
        str(row): {
            "label": int(labels[row]),
            "label_name": class_name(names, int(labels[row])),
            "path": "" if paths is None else str(paths[row]),
        }
        for row in sorted(rows)
    }
