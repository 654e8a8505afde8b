"""Map tiles of a cube: 256 px RGBA PNGs on the WebMercatorQuad grid (OGC TileMatrixSet, the web's z/x/y tiles).

A tile reads the cube's cells under it (whole 0.05 deg cells, through the catalog's cache of decoded chunks,
`service.catalog.OpenCube.window`), takes the mean over the requested days, derives the layer (`LAYERS`), reprojects
it to EPSG:3857 with rasterio (nearest cell, so a pixel shows one cell's value) and colours it (`service.styles`).
The tile bounds come from morecantile. Cells without a value (water, not computed) and everything outside the
cube's bbox are transparent.

Each layer says which daily variables it reads (for the cost admitted before reading) and how it is derived from
their period means: a flux or spread is its mean; a calibrated bound is `tamrl.calibration.cube_bounds` of the mean
flux and spread (the bounds are linear in both, so the mean of daily bounds is the bound of the means); the land
mask is the cube's own static layer.
"""

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import morecantile
import numpy as np
import xarray as xr
from PIL import Image
from rasterio.crs import CRS
from rasterio.transform import from_bounds, from_origin
from rasterio.warp import Resampling, reproject

from jobs import grid
from jobs.outputs import DAILY, FLUXES, spread_of
from service.catalog import OpenCube
from service.styles import colour
from tamrl.calibration import cube_bounds
from tamrl.errors import DataError

TMS = morecantile.tms.get("WebMercatorQuad")
TILE_SIZE = 256
MINZOOM = 0
MAXZOOM = 9  # a tile pixel is 0.0027 deg at the equator: a 0.05 deg cell is about 18 px wide, so cells stay crisp
GEOGRAPHIC, MERCATOR = CRS.from_epsg(4326), CRS.from_epsg(3857)
PNG_LEVEL = 1  # zlib level: tiles are mostly flat colour, level 1 is within a few % of 6 in size and 3x faster


@dataclass(frozen=True)
class Window:
    """The cells of a cube under a tile (local rows and columns) and the period means of the daily variables read."""

    cube: OpenCube
    rows: slice
    cols: slice
    means: dict[str, np.ndarray]  # name -> (rows, cols)


@dataclass(frozen=True)
class Layer:
    """A tile layer: the daily variables it reads and how its values follow from their period means."""

    reads: tuple[str, ...]
    values: Callable[[Window], np.ndarray]
    daily: bool = True  # whether a tile needs a date or period


def _mean_of(name: str) -> Layer:
    return Layer((name,), lambda w: w.means[name])


def _bound(flux: str, which: int) -> Layer:
    def values(w: Window) -> np.ndarray:
        dims = ("lat", "lon")
        means = xr.Dataset({k: (dims, w.means[k]) for k in (flux, spread_of(flux))}, attrs=w.cube.attrs)
        return cube_bounds(means, flux)[which].values

    return Layer((flux, spread_of(flux)), values)


def _land(w: Window) -> np.ndarray:
    return np.where(w.cube.land[w.rows, w.cols], 1.0, np.nan)


LAYERS: dict[str, Layer] = {
    **{name: _mean_of(name) for name in DAILY},
    **{f"{flux}_{bound}": _bound(flux, k) for flux in FLUXES for k, bound in enumerate(("p05", "p95"))},
    "land_mask": Layer((), _land, daily=False),
}


def tile_of(z: int, x: int, y: int) -> morecantile.Tile:
    """The tile z/x/y; DataError unless z is a zoom level of the grid and x, y lie in 0 .. 2^z - 1."""
    if not TMS.minzoom <= z <= TMS.maxzoom:
        raise DataError(f"zoom {z} is outside {TMS.minzoom}..{TMS.maxzoom} (WebMercatorQuad)")
    if not (0 <= x < 2**z and 0 <= y < 2**z):
        raise DataError(f"tile {z}/{x}/{y} does not exist: at zoom {z}, x and y run 0..{2**z - 1}")
    return morecantile.Tile(x, y, z)


def tile_cells(tile: morecantile.Tile) -> tuple[slice, slice]:
    """Global rows and columns of the cells a tile touches, clipped to the grid."""
    west, south, east, north = TMS.bounds(tile)
    top, bottom = math.floor((90 - north) * grid.PER_DEG), math.ceil((90 - south) * grid.PER_DEG)
    left, right = math.floor((west + 180) * grid.PER_DEG), math.ceil((east + 180) * grid.PER_DEG)
    return slice(max(top, 0), min(bottom, grid.N_LAT)), slice(max(left, 0), min(right, grid.N_LON))


def cube_window(cube: OpenCube, rows: slice, cols: slice) -> tuple[slice, slice]:
    """Global ``rows`` and ``cols`` clipped to the cube's computed bbox (empty slices when they miss it)."""
    have_rows, have_cols = cube.requested
    return (slice(max(rows.start, have_rows.start), max(min(rows.stop, have_rows.stop), have_rows.start)),
            slice(max(cols.start, have_cols.start), max(min(cols.stop, have_cols.stop), have_cols.start)))  # fmt: skip


def tile_cost(cube: OpenCube, tile: morecantile.Tile, days: slice, layer: Layer) -> int:
    """Values a tile reads: its cells in the cube x days x daily variables."""
    rows, cols = cube_window(cube, *tile_cells(tile))
    return (rows.stop - rows.start) * (cols.stop - cols.start) * (days.stop - days.start) * len(layer.reads)


def render_tile(cube: OpenCube, tile: morecantile.Tile, days: slice, layer: Layer, colormap: str,
                rescale: tuple[float, float]) -> bytes:  # fmt: skip
    """The PNG of ``layer`` over ``days`` of ``cube`` on ``tile``."""
    rows, cols = cube_window(cube, *tile_cells(tile))
    local = grid.shift(rows, cube.origin[0]), grid.shift(cols, cube.origin[1])
    means = {name: cube.window(name, days, *local).mean(axis=0, dtype=np.float32) for name in layer.reads}
    values = layer.values(Window(cube, *local, means)).astype(np.float32)
    source = from_origin(cols.start / grid.PER_DEG - 180, 90 - rows.start / grid.PER_DEG, grid.RES, grid.RES)
    pixels = np.full((TILE_SIZE, TILE_SIZE), np.nan, np.float32)
    reproject(
        values, pixels, src_transform=source, src_crs=GEOGRAPHIC, src_nodata=np.nan,
        dst_transform=from_bounds(*TMS.xy_bounds(tile), TILE_SIZE, TILE_SIZE), dst_crs=MERCATOR, dst_nodata=np.nan,
        resampling=Resampling.nearest,
    )  # fmt: skip
    buffer = io.BytesIO()
    Image.fromarray(colour(pixels, colormap, rescale), "RGBA").save(buffer, "PNG", compress_level=PNG_LEVEL)
    return buffer.getvalue()
