"""Diverging colormaps for relevance, and matplotlib's colormaps adapted to them.

A `Colormap` maps relevance normalised to [-1, 1] to RGB; `as_colormap` accepts one of
lrpfn's own (`COLORMAPS`: "bwr", "seismic", "coldhot"), any matplotlib colormap object
(`matplotlib.colormaps["RdBu_r"]`), or the name of one, which then spans [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BWR", "COLDHOT", "COLORMAPS", "SEISMIC", "Colormap", "as_colormap"]


@dataclass(frozen=True)
class Colormap:
    """A diverging colormap: RGB colours (in [0, 1]) at increasing positions in [-1, 1].

    `cmap(r)` maps values `r` in [-1, 1] (clipped) to float RGB of shape `r.shape + (3,)`
    by linear interpolation between neighbouring positions.
    """

    name: str
    positions: tuple[float, ...]
    colors: tuple[tuple[float, float, float], ...]

    def __post_init__(self) -> None:
        if len(self.positions) != len(self.colors) or len(self.positions) < 2:
            raise ValueError(f"colormap {self.name!r}: one colour per position, at least two.")
        if self.positions[0] != -1.0 or self.positions[-1] != 1.0:
            raise ValueError(f"colormap {self.name!r}: positions must run from -1 to 1.")
        if any(b <= a for a, b in zip(self.positions[:-1], self.positions[1:], strict=True)):
            raise ValueError(f"colormap {self.name!r}: positions must increase.")

    def __call__(self, values: Any) -> np.ndarray:
        r = np.clip(np.asarray(values, dtype=np.float64), -1.0, 1.0)
        table = np.asarray(self.colors, dtype=np.float64)
        channels = [np.interp(r, self.positions, table[:, c]) for c in range(3)]
        return np.stack(channels, axis=-1)


BWR = Colormap("bwr", (-1.0, 0.0, 1.0), ((0.0, 0.0, 1.0), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0)))
"""Blue (negative) through white (zero) to red (positive)."""

SEISMIC = Colormap(
    "seismic",
    (-1.0, -0.5, 0.0, 0.5, 1.0),
    ((0.0, 0.0, 0.3), (0.0, 0.0, 1.0), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0), (0.5, 0.0, 0.0)),
)
"""As `BWR`, darkening towards both ends: dark blue, blue, white, red, dark red."""

COLDHOT = Colormap(
    "coldhot",
    (-1.0, -0.5, 0.0, 0.5, 1.0),
    ((0.0, 1.0, 1.0), (0.0, 0.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (1.0, 1.0, 0.0)),
)
"""Black at zero; cold colours for negative relevance (blue, then cyan at -1) and hot ones
for positive relevance (red, then yellow at +1)."""

COLORMAPS: dict[str, Colormap] = {cmap.name: cmap for cmap in (BWR, SEISMIC, COLDHOT)}
"""The colormaps by name: "bwr", "seismic", "coldhot"."""


@dataclass(frozen=True, eq=False)
class _Matplotlib:
    """A matplotlib colormap (it maps [0, 1]) over [-1, 1]: `cmap((r + 1) / 2)`."""

    cmap: Any

    def __call__(self, values: Any) -> np.ndarray:
        r = np.clip(np.asarray(values, dtype=np.float64), -1.0, 1.0)
        return np.asarray(self.cmap((r + 1.0) / 2.0), dtype=np.float64)[..., :3]


def as_colormap(cmap: Any) -> Any:
    """`cmap` as a function from [-1, 1] to float RGB: a `Colormap`, a name of `COLORMAPS`
    or of a matplotlib colormap, or a matplotlib colormap object."""
    if isinstance(cmap, Colormap):
        return cmap
    if isinstance(cmap, str) and cmap in COLORMAPS:
        return COLORMAPS[cmap]
    if isinstance(cmap, str):
        try:
            import matplotlib
        except ImportError:
            matplotlib = None
        if matplotlib is None or cmap not in matplotlib.colormaps:
            raise ValueError(
                f"unknown colormap {cmap!r}; known: {', '.join(COLORMAPS)}, or a matplotlib "
                "colormap name or object."
            )
        return _Matplotlib(matplotlib.colormaps[cmap])
    if callable(cmap) and hasattr(cmap, "N"):  # a matplotlib Colormap
        return _Matplotlib(cmap)
    raise ValueError(f"cmap must be a colormap or its name, got {type(cmap).__name__}.")
