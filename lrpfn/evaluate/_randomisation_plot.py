"""The figure of the model parameter randomisation test (Adebayo et al. 2018)."""

from __future__ import annotations

from pathlib import Path

from ..image import finish_figure
from ._randomisation import Randomisation

__all__ = ["plot_randomisation"]


def plot_randomisation(
    result: Randomisation, path: str | Path | None = None, *, title: str | None = None
):
    """Each similarity measure's mean over the samples (the band: min to max) against the
    layers randomised so far, output layer first: an explanation that depends on the
    parameters falls from 1 as more layers are randomised. Needs matplotlib.

    Arguments:
        result: from `parameter_randomisation`.
        path: where to save the figure (PNG); None to only return it.
        title: a title above the plot.

    Returns:
        The `matplotlib.figure.Figure`.

    Reference:
        Adebayo et al. 2018, "Sanity checks for saliency maps", NeurIPS (Fig. 2).
    """
    from matplotlib.figure import Figure

    steps = range(len(result.layers))
    figure = Figure(figsize=(max(5.0, 0.35 * len(result.layers) + 2.5), 3.8))
    axis = figure.subplots()
    for measure, values in result.similarity.items():
        values = values.double().cpu()
        axis.plot(steps, values.mean(1), marker="o", markersize=3, label=measure)
        axis.fill_between(steps, values.min(1).values, values.max(1).values, alpha=0.15)
    axis.axhline(0.0, color="grey", linewidth=0.8)
    axis.set_xticks(list(steps), result.layers, rotation=60, ha="right", fontsize=7)
    axis.set_xlabel("randomised up to this layer (cumulative, from the output)")
    axis.set_ylabel("similarity to the original map")
    axis.set_ylim(-1.05, 1.05)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return finish_figure(figure, path, title or "", title_size=10, dpi=110)
