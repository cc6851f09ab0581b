"""A static site to explore explained stores: `lrpfn report STORE --out DIR`.

    import lrpfn.report

    lrpfn.report.write(["digits.zarr", "digits-atlas.zarr"], "report/")

The site shows the samples of a store of `lrpfn.datasets.explain` with input, heatmap
and overlay (sign-aware colormap, percentile clipping); the SpRAy embedding of each class
as a scatter where picking a cluster or points shows their samples and mean heatmap;
and the concepts of an atlas store (`lrpfn.concepts.atlas`), layer by layer and channel
by channel, with their reference crops or, for text, token heatmaps. It is HTML, JSON and
PNG files with Plotly's script copied in: no server, no network. Needs the `report`
extra (`plotly`) and the `datasets` extra (`zarr`, `scikit-learn`).
"""

from ._errors import ReportError
from ._site import write

__all__ = ["ReportError", "write"]
