"""How map tiles colour each layer, declared once: a colormap registry and each layer's default colormap and colour
range.

The ranges are fixed, not fitted to the data, so that the same colour means the same value on every date, cube and
tile: GPP 0..15, RECO 0..10 and NEE -6..6 g C m-2 d-1 (diverging: sink blue, source red), spreads 0..3, and the
calibrated bounds over the range of their flux. ``land_mask`` is a fixed grey for viewers without a basemap. A value
outside the range takes the colour of the range's end; a cell without a value (water, not computed, outside the
cube) is transparent.

`colour` turns values into RGBA pixels and `legend` gives the stops a viewer draws; both read the same lookup table
of 256 colours, so a legend stop is the exact colour of a pixel of that value.
"""

from dataclasses import dataclass
from functools import cache

import numpy as np
from matplotlib import colormaps

from jobs.outputs import FLUXES, spread_of
from tamrl.errors import DataError
from tamrl.features import TARGET_UNITS

COLORMAPS = {  # name in the API -> matplotlib colormap
    "viridis": "viridis",
    "ylgn": "YlGn",
    "ylorrd": "YlOrRd",
    "rdbu_r": "RdBu_r",
    "greys": "Greys",
}
LEVELS = 256  # colours in a lookup table
LEGEND_STOPS = 11


@dataclass(frozen=True)
class Style:
    """A layer's default colours: a COLORMAPS name and the value range it spans, in ``units``."""

    colormap: str
    rescale: tuple[float, float]
    units: str = TARGET_UNITS


_FLUX_STYLES = {"GPP": Style("ylgn", (0, 15)), "RECO": Style("ylorrd", (0, 10)), "NEE": Style("rdbu_r", (-6, 6))}
STYLES: dict[str, Style] = {
    **{name: _FLUX_STYLES[name] for name in FLUXES},
    **{spread_of(name): Style("viridis", (0, 3)) for name in FLUXES},
    **{f"{name}_{bound}": _FLUX_STYLES[name] for name in FLUXES for bound in ("p05", "p95")},
    "land_mask": Style("greys", (0, 2), units="1"),  # land is 1: a mid grey
}


@cache
def lookup(colormap: str) -> np.ndarray:
    """The (LEVELS, 4) uint8 RGBA table of a COLORMAPS name."""
    return (colormaps[COLORMAPS[colormap]](np.linspace(0, 1, LEVELS)) * 255).round().astype(np.uint8)


def colour(values: np.ndarray, colormap: str, rescale: tuple[float, float]) -> np.ndarray:
    """RGBA (..., 4) uint8 of ``values`` through ``colormap`` over ``rescale``; NaN is transparent."""
    lo, hi = rescale
    finite = np.isfinite(values)
    index = np.clip(np.rint((np.where(finite, values, lo) - lo) / (hi - lo) * (LEVELS - 1)), 0, LEVELS - 1)
    rgba = lookup(colormap)[index.astype(np.intp)]
    rgba[~finite] = 0
    return rgba


def legend(variable: str, colormap: str, rescale: tuple[float, float]) -> dict:
    """What a viewer needs to draw the legend of ``variable``: units, colormap, range and LEGEND_STOPS colour stops."""
    values = np.linspace(*rescale, LEGEND_STOPS)
    colours = colour(values, colormap, rescale)
    return {
        "variable": variable, "units": STYLES[variable].units, "colormap": colormap, "rescale": list(rescale),
        "stops": [{"value": round(float(v), 6), "color": "#{:02x}{:02x}{:02x}".format(*c[:3])}
                  for v, c in zip(values, colours, strict=True)],
    }  # fmt: skip


def parse_rescale(text: str | None, variable: str) -> tuple[float, float]:
    """``min,max`` from the query, or the variable's default range; DataError unless min < max, both finite."""
    if text is None:
        return STYLES[variable].rescale
    try:
        lo, hi = (float(part) for part in text.split(","))
    except ValueError as exc:
        raise DataError(f"rescale {text!r} must be two comma-separated numbers min,max") from exc
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise DataError(f"rescale {text!r} must be two finite numbers with min < max")
    return lo, hi
