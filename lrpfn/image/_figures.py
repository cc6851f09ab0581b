"""The heatmaps and figures of `lrpfn.image` (see the package docstring): colouring,
PNG writing without matplotlib, and the matplotlib figures."""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..colormaps import BWR, COLDHOT, COLORMAPS, SEISMIC, Colormap, as_colormap

__all__ = [
    "BWR",
    "COLDHOT",
    "COLORMAPS",
    "SEISMIC",
    "Colormap",
    "colorize",
    "finish_figure",
    "heatmap",
    "overlay",
    "plot_concepts",
    "plot_explanation",
    "plot_grid",
    "reduce_channels",
    "save_figure",
    "save_png",
    "symmetric_normalize",
    "to_pixels",
    "upscale",
]


def _numpy(values: Any) -> np.ndarray:
    """A NumPy float64 copy of an array or a (CPU or GPU, grad-tracking) torch tensor."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def reduce_channels(relevance: Any, how: str = "sum") -> np.ndarray:
    """Collapse the channel axis of `(N, C, H, W)` or `(C, H, W)` relevance to `(N, H, W)`
    or `(H, W)`; a 2-d map `(H, W)` is returned as is.

    Arguments:
        relevance: an array or tensor.
        how: "sum" (the relevance of a pixel: conservation is kept), "max-abs" (the
            channel value of largest magnitude), or "first".
    """
    values = _numpy(relevance)
    if values.ndim == 2:
        return values
    if values.ndim not in (3, 4):
        raise ValueError(
            f"relevance must be (H, W), (C, H, W) or (N, C, H, W), got shape {values.shape}."
        )
    if how == "sum":
        return values.sum(axis=-3)
    if how == "max-abs":
        index = np.abs(values).argmax(axis=-3)
        return np.take_along_axis(values, np.expand_dims(index, -3), axis=-3).squeeze(-3)
    if how == "first":
        return values[..., 0, :, :]
    raise ValueError(f"unknown channel reduction {how!r}; use 'sum', 'max-abs' or 'first'.")


def symmetric_normalize(maps: Any, percentile: float = 100.0) -> np.ndarray:
    """Divide each map (the last two axes) by the `percentile` of its absolute values
    (100: the largest) and clip to [-1, 1], zero kept at zero; a zero map stays zero.
    Clipping at a percentile below 100 keeps a few extreme pixels from fading the rest."""
    values = _numpy(maps)
    if values.ndim < 2:
        raise ValueError(f"maps must have at least two axes (H, W), got shape {values.shape}.")
    if not 0.0 < percentile <= 100.0:
        raise ValueError(f"percentile must lie in (0, 100], got {percentile!r}.")
    magnitude = np.abs(values)
    scale = np.percentile(magnitude, percentile, axis=(-2, -1), keepdims=True)
    scale = np.where(scale > 0, scale, magnitude.max(axis=(-2, -1), keepdims=True))
    return np.clip(values / np.where(scale > 0, scale, 1.0), -1.0, 1.0)


def colorize(normalized: Any, cmap: Any = "bwr") -> np.ndarray:
    """Colour values in [-1, 1] with `cmap`: uint8 RGB of shape `normalized.shape + (3,)`,
    each channel `round(255 * c)`."""
    colors = as_colormap(cmap)(normalized)
    return np.round(colors * 255.0).astype(np.uint8)


def heatmap(
    relevance: Any, cmap: Any = "bwr", *, channels: str = "sum", percentile: float = 99.5
) -> np.ndarray:
    """The heatmap of relevance: channels reduced, each map divided by the `percentile`
    of its absolute values and clipped to [-1, 1], coloured with `cmap`.

    Arguments:
        relevance: `(N, C, H, W)`, `(C, H, W)` or `(H, W)`, an array or tensor.
        cmap: a `Colormap`, one of `COLORMAPS` ("bwr", "seismic", "coldhot"), or a
            matplotlib colormap (object or name; see `lrpfn.colormaps.as_colormap`).
        channels: how to reduce the channel axis (see `reduce_channels`).
        percentile: where the colour scale saturates (99.5, as captum's default clips;
            100 for the largest value).

    Returns:
        uint8 RGB, `(N, H, W, 3)` or `(H, W, 3)`.
    """
    maps = reduce_channels(relevance, channels)
    return colorize(symmetric_normalize(maps, percentile), cmap)


def to_pixels(x: Any, mean: Any = 0.0, std: Any = 1.0) -> np.ndarray:
    """Turn normalised network inputs `(N, C, H, W)` or `(C, H, W)` back into uint8 RGB
    `(N, H, W, 3)` or `(H, W, 3)`: `x * std + mean` per channel, clipped to [0, 1];
    one channel is repeated as grey."""
    values = _numpy(x)
    if values.ndim not in (3, 4):
        raise ValueError(f"x must be (C, H, W) or (N, C, H, W), got shape {values.shape}.")
    channels = values.shape[-3]
    shape = (channels, 1, 1)
    mean = np.broadcast_to(np.asarray(mean, dtype=np.float64).reshape(-1, 1, 1), shape)
    std = np.broadcast_to(np.asarray(std, dtype=np.float64).reshape(-1, 1, 1), shape)
    pixels = np.clip(values * std + mean, 0.0, 1.0)
    pixels = np.moveaxis(pixels, -3, -1)
    if channels == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    elif channels != 3:
        raise ValueError(f"x must have 1 or 3 channels to be shown, got {channels}.")
    return np.round(pixels * 255.0).astype(np.uint8)


def overlay(pixels: Any, heat: Any, alpha: float = 0.5) -> np.ndarray:
    """Blend a heatmap over an image: `(1 - alpha) * pixels + alpha * heat`, uint8 RGB.

    Both are uint8 RGB of the same shape (`to_pixels` and `heatmap` give that)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}.")
    a, b = np.asarray(pixels, dtype=np.float64), np.asarray(heat, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"image {a.shape} and heatmap {b.shape} differ in shape.")
    return np.round((1.0 - alpha) * a + alpha * b).astype(np.uint8)


def upscale(pixels: Any, factor: int) -> np.ndarray:
    """Enlarge `(..., H, W, 3)` pixels by an integer factor, nearest neighbour (crisp
    pixels for small inputs such as 8x8 digits)."""
    values = np.asarray(pixels)
    return values.repeat(factor, axis=-3).repeat(factor, axis=-2)


def save_png(pixels: Any, path: str | Path) -> Path:
    """Write uint8 pixels `(H, W, 3)` (RGB) or `(H, W)` (grey) as a PNG file; parent
    folders are created. Returns the path."""
    values = np.asarray(pixels)
    if values.dtype != np.uint8:
        raise ValueError(f"save_png needs uint8 pixels, got {values.dtype}; see heatmap().")
    if values.ndim == 2:
        color_type = 0
    elif values.ndim == 3 and values.shape[-1] == 3:
        color_type = 2
    else:
        raise ValueError(f"save_png needs (H, W) or (H, W, 3) pixels, got shape {values.shape}.")
    height, width = values.shape[:2]
    rows = values.reshape(height, -1)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1)  # filter type 0
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n"
    data += _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
    data += _chunk(b"IEND", b"")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _chunk(kind: bytes, payload: bytes) -> bytes:
    checksum = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", checksum)


def _wrap(title: str, width: int = 16) -> str:
    """Break a long column title after underscores or spaces, lines of about `width`."""
    lines, line = [], ""
    for token in re.findall(r"[^_ ]+[_ ]?", title) or [title]:
        if line and len(line) + len(token) > width:
            lines.append(line.rstrip())
            line = ""
        line += token
    return "\n".join([*lines, line.rstrip()])


def plot_grid(
    pixels: Any,
    heatmaps: Mapping[str, Any],
    path: str | Path | None = None,
    *,
    row_titles: Sequence[str] | None = None,
    notes: Mapping[str, str] | None = None,
    cell_size: float = 1.2,
    title: str | None = None,
    font_size: float = 7,
) -> Any:
    """A figure with one row per input and one column per rule: the input first, then its
    heatmap under each rule. Needs matplotlib (imported here only).

    Arguments:
        pixels: uint8 RGB inputs `(N, H, W, 3)` (see `to_pixels`).
        heatmaps: `{column title: uint8 RGB (N, H, W, 3)}`, one entry per rule.
        path: where to save the figure (PNG); None to only return it.
        row_titles: a label per row (e.g. the predicted class).
        notes: `{column title: a short second title line}` (e.g. a conservation figure).
        cell_size: inches per cell.
        title: a title above the grid.
        font_size: the points of the column and row titles.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    from matplotlib.figure import Figure  # lazily: the rest of the module needs NumPy only

    pixels = np.asarray(pixels)
    columns = {"input": pixels, **{name: np.asarray(maps) for name, maps in heatmaps.items()}}
    rows = pixels.shape[0]
    for name, maps in columns.items():
        if maps.shape[0] != rows:
            raise ValueError(f"column {name!r} has {maps.shape[0]} images, the input has {rows}.")
    figure = Figure(figsize=(cell_size * len(columns), cell_size * rows + (0.6 if title else 0.3)))
    axes = figure.subplots(rows, len(columns), squeeze=False)
    for column, (name, maps) in enumerate(columns.items()):
        label = _wrap(name) if not notes or name not in notes else f"{_wrap(name)}\n{notes[name]}"
        axes[0, column].set_title(label, fontsize=font_size)
        for row in range(rows):
            axis = axes[row, column]
            axis.imshow(maps[row], interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0 and row_titles is not None:
                axis.set_ylabel(row_titles[row], fontsize=font_size)
    return finish_figure(figure, path, title)


def plot_concepts(
    pixels: Any,
    relevance: Any,
    shares: Sequence[float] | Any,
    labels: Sequence[str],
    path: str | Path | None = None,
    *,
    fields: Any = None,
    cmap: str | Colormap = "bwr",
    cell_size: float = 2.2,
    title: str | None = None,
) -> Any:
    """One sample's top concepts as a row: the input, then each concept's conditional
    heatmap titled with its label and its share of the relevance (see `lrpfn.concepts`).
    Needs matplotlib (imported here only). At the defaults a row of four concepts is
    1100 x 250 pixels with 9-point titles; heatmaps saturate at the 99.5th percentile of
    |R| (`heatmap`), and a receptive field is marked by its bounding box, which leaves
    the relevance inside it visible however small the field is.

    Arguments:
        pixels: the sample as uint8 RGB `(H, W, 3)` (see `to_pixels`).
        relevance: the k conditional heatmaps of this sample, `(k, C, H, W)` or
            `(k, H, W)` (e.g. `concepts.conditional(...)[:, sample]`).
        shares: k relevance shares (e.g. `top.share[sample]`), shown as percentages.
        labels: k column titles (e.g. "channel 17").
        path: where to save the figure (PNG); None to only return it.
        fields: optional `(k, H, W)` bool receptive fields (`concepts.receptive_field`),
            outlined on the heatmaps.
        cmap: the colormap of the heatmaps.
        cell_size: inches per panel.
        title: a title above the row.

    Returns:
        The `matplotlib.figure.Figure`.
    """
    values = _numpy(relevance)
    maps = heatmap(values[:, None] if values.ndim == 3 else values, cmap)
    shares = _numpy(shares).reshape(-1)
    if not (maps.ndim == 4 and len(labels) == len(shares) == maps.shape[0]):
        raise ValueError(
            f"plot_concepts needs k heatmaps (k, C, H, W) with k labels and k shares; got "
            f"heatmaps of shape {np.shape(relevance)}, {len(labels)} labels, {len(shares)} shares."
        )
    if len(set(labels)) != len(labels):
        raise ValueError(f"the concept labels must differ from each other, got {list(labels)}.")
    columns = {label: maps[index][None] for index, label in enumerate(labels)}
    notes = {
        label: f"{100 * share:.1f}% of the layer"
        for label, share in zip(labels, shares, strict=True)
    }
    figure = plot_grid(
        np.asarray(pixels)[None], columns, None, notes=notes, cell_size=cell_size, title=title,
        font_size=9,
    )  # fmt: skip
    if fields is not None:
        from matplotlib.patches import Rectangle

        outlines = _numpy(fields) > 0.5
        for index, axis in enumerate(figure.axes[1 : 1 + len(labels)]):
            rows, columns_hit = (
                np.nonzero(outlines[index].any(1))[0],
                np.nonzero(outlines[index].any(0))[0],
            )
            if rows.size:
                corner = (columns_hit[0] - 0.5, rows[0] - 0.5)
                width, height = columns_hit[-1] - columns_hit[0] + 1, rows[-1] - rows[0] + 1
                axis.add_patch(
                    Rectangle(corner, width, height, fill=False, edgecolor="black", linewidth=1.0)
                )
    if path is not None:
        save_figure(figure, path)
    return figure


def finish_figure(
    figure: Any,
    path: str | Path | None = None,
    title: str = "",
    *,
    title_size: float = 9,
    dpi: int = 100,
) -> Any:
    """Give a matplotlib `figure` its `title` (if any), lay it out tightly and, with a
    `path`, write it there as PNG (`save_figure`); returns the figure."""
    if title:
        figure.suptitle(title, fontsize=title_size)
    figure.tight_layout()
    if path is not None:
        save_figure(figure, path, dpi=dpi)
    return figure


def save_figure(figure: Any, path: str | Path, *, dpi: int = 100) -> Path:
    """Write a matplotlib `figure` to `path` as PNG, making its folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return path


def plot_explanation(
    pixels: Any, relevance: Any, path: str | Path | None = None, *, title: str = "",
    cmap: Any = "bwr", percentile: float = 99.5,
) -> Any:  # fmt: skip
    """One input and its heatmap side by side, with a colorbar in relevance units (the
    scale saturates at the `percentile` of |R|) and a `title` (the explained class).

    Arguments:
        pixels: uint8 RGB `(H, W, 3)`; relevance: `(C, H, W)` or `(H, W)` of the same size.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.figure import Figure

    maps = reduce_channels(relevance)
    scale = float(np.percentile(np.abs(maps), percentile)) or float(np.abs(maps).max()) or 1.0
    figure = Figure(figsize=(5.6, 2.8))
    left, right = figure.subplots(1, 2)
    left.imshow(np.asarray(pixels), interpolation="nearest")
    right.imshow(heatmap(maps, cmap, percentile=percentile), interpolation="nearest")
    for axis, name in ((left, "input"), (right, "relevance")):
        axis.set_title(name, fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    table = ListedColormap(as_colormap(cmap)(np.linspace(-1.0, 1.0, 256)))
    colors = ScalarMappable(Normalize(-scale, scale), table)
    figure.colorbar(colors, ax=right, fraction=0.046, pad=0.04).ax.tick_params(labelsize=7)
    return finish_figure(figure, path, title, title_size=10, dpi=120)
