"""MODIS surface reflectance for the engine: QA decoding, and MOD09CMG or MOD09GA tiles on the 0.05 deg grid.

- `clear_from_state` decodes the MOD09GA / MOD09CMG QA bit fields into the clear-sky flag exactly as the tower
  data in ``shared/data/modis`` define ``clear`` (it reproduces that column on every row of the tower file).
- `mod09cmg_to_drivers` turns a MOD09CMG dataset (already on the 0.05 deg CMG grid) into the canonical daily
  drivers B01..B07 (0-1 reflectance) and CLEAR on `jobs.grid` coordinates, which `jobs.drivers` passes through.
- `mod09ga_to_drivers` turns one day's MOD09GA sinusoidal tiles (500 m reflectance, 1 km state QA) into the same
  drivers on the 0.05 deg cells they cover; `mod09ga_tiles_to_drivers` does it for tiles read by any `TileLayers`
  (the GeoTIFFs below, or the HDF4-EOS granules of `jobs.adapters.mod09ga`).

MOD09GA files: one single-band GeoTIFF per layer and tile (as ``gdal_translate`` writes each HDF subdataset, or
AppEEARS delivers them), holding the raw layer (int16 ``sur_refl_b01`` .. ``sur_refl_b07``, scale 1e-4,
fill -28672; uint16 ``state_1km``; uint32 ``QC_500m``) in its own CRS (the MODIS sinusoidal projection) with its
geotransform, so a window of a tile works as well as the whole 2400 x 2400 tile. A tile is named by a path or URL
(local or anything rasterio opens: s3://, gs://, https://) with ``{layer}`` standing for the layer name, e.g.
``MOD09GA.A2019182.h18v04.061.{layer}.tif``; the day comes from the ``.AYYYYDDD.`` in it unless ``date`` is given.
``QC_500m`` may be left out with ``qc_500m=False``, at the cost of the MODLAND QA test that the tower flag includes.

Aggregation: each 500 m pixel belongs to the 0.05 deg cell holding its centre (its lat/lon from the file's CRS), so
the tiles of a mosaic partition the pixels and a cell on a tile edge gets the pixels of both tiles. A band is the
mean of the cell's valid pixels, cloudy ones included as in MOD09CMG: CLEAR is the separate flag, and tamrl gap-fills
the non-clear days. CLEAR is 1 where at least half of the cell's pixels that have a state QA are clear
(`clear_from_state` of ``state_1km``, each 1 km QA pixel covering its 2 x 2 500 m pixels, and of ``QC_500m``, with
B01 and B02 present), else 0; reflectance is NaN where the cell has no valid pixel. GDAL's average resampling is not
used: it averages over the box spanned by a cell's two transformed corners, which for the sheared sinusoidal cells
away from lon 0 covers neighbouring cells too (a 0.05 deg checkerboard at 95 E came back about 0.5 off).
"""

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import rioxarray
import xarray as xr
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError

from jobs import grid
from tamrl.errors import DataError
from tamrl.features import BANDS, CLEAR, DRIVER_UNITS

# MOD09GA state_1km / MOD09CMG "Coarse Resolution State QA" bits (MOD09 user guide, Collection 6)
CLOUD_STATE = 0b11  # bits 0-1: 00 clear, 01 cloudy, 10 mixed, 11 not set; like the tower flag, only 00 is clear
CLOUD_SHADOW = 1 << 2
AEROSOL = 0b11 << 6  # bits 6-7: 00 climatology, 01 low, 10 average, 11 high
AEROSOL_HIGH = 0b11 << 6
CIRRUS = 0b11 << 8  # bits 8-9: 00 none
INTERNAL_CLOUD = 1 << 10
MOD35_SNOW = 1 << 12
ADJACENT_CLOUD = 1 << 13
INTERNAL_SNOW = 1 << 15
# qc_500m / "Coarse Resolution QA" bits 0-1 MODLAND QA: 00 = corrected product produced at ideal quality
MODLAND_QA = 0b11

# MOD09CMG and MOD09GA layout: int16 reflectance, scale 1e-4, fill -28672
MOD09_SCALE = 1e-4
MOD09_FILL = -28672
CMG_SOURCE = "MOD09CMG daily surface reflectance, 0.05 deg CMG (Vermote and Wolfe, doi:10.5067/MODIS/MOD09CMG.006)"
GA_SOURCE = (
    "MOD09GA daily surface reflectance, 500 m sinusoidal tiles averaged to 0.05 deg "
    "(Vermote and Wolfe, doi:10.5067/MODIS/MOD09GA.006)"
)
_BAND_KEYS = {band: f"coarse_resolution_surface_reflectance_band_{i}" for i, band in enumerate(BANDS, start=1)}
_STATE_KEY = "coarse_resolution_state_qa"
_QA_KEY = "coarse_resolution_qa"
_LAT_NAMES = ("lat", "latitude", "y")
_LON_NAMES = ("lon", "longitude", "x")
_GA_LAYERS = {band: f"sur_refl_b{i:02d}" for i, band in enumerate(BANDS, start=1)}
_GA_STATE = "state_1km"
_GA_QC = "QC_500m"
_GA_DAY = re.compile(r"\.A(\d{7})\.")  # MOD09GA.A2019182.h18v04...: year and day of year
_CLEAR_TESTS = "state QA clear, no shadow/cirrus/snow/high aerosol/adjacent cloud"
_WGS84 = "EPSG:4326"
# a MOD09GA tile's layer by name (sur_refl_b01 .. sur_refl_b07, state_1km, QC_500m): raw integers on dims (y, x)
# with the tile's CRS, coordinates and nodata, named by where it came from; a `scale_factor` attr overrides 1e-4
TileLayers = Callable[[str], xr.DataArray]


def clear_from_state(state_1km: np.ndarray, qc_500m: np.ndarray | None = None) -> np.ndarray:
    """Whether each observation is clear sky, from the MOD09GA ``state_1km`` (and ``qc_500m``) QA integers.

    Clear means: cloud state 00 (clear), no cloud shadow, aerosol quantity not high, no cirrus, no internal cloud,
    neither snow flag (MOD35 bit 12, internal bit 15), not adjacent to cloud, and, where ``qc_500m`` is given,
    MODLAND QA 00 (ideal quality). A missing value (NaN in a float array) is not clear. The tower ``clear`` also
    requires b01 and b02 to be present; callers holding reflectance add that (as `mod09cmg_to_drivers` does).
    """
    state, valid = _as_bits(state_1km, "state_1km")
    clear = valid & ((state & CLOUD_STATE) == 0) & ((state & AEROSOL) != AEROSOL_HIGH)
    clear &= (state & (CLOUD_SHADOW | CIRRUS | INTERNAL_CLOUD | MOD35_SNOW | ADJACENT_CLOUD | INTERNAL_SNOW)) == 0
    if qc_500m is not None:
        qc, qc_valid = _as_bits(qc_500m, "qc_500m")
        if qc.shape != state.shape:
            raise DataError(f"qc_500m has shape {qc.shape}, state_1km {state.shape}: give them for the same pixels")
        clear &= qc_valid & ((qc & MODLAND_QA) == 0)
    return clear


def _as_bits(values: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Integer bit fields of ``values`` (0 where missing) and where they are valid (finite, whole, non-negative)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64), arr >= 0
    if arr.dtype.kind != "f":
        raise DataError(f"{name} must hold integer QA bit fields, not {arr.dtype}")
    valid = np.isfinite(arr) & (arr >= 0) & (arr == np.floor(np.where(np.isfinite(arr), arr, 0)))
    return np.where(valid, arr, 0).astype(np.int64), valid


def mod09cmg_to_drivers(ds: xr.Dataset, date: str | pd.Timestamp | None = None) -> xr.Dataset:
    """Canonical daily B01..B07 (0-1 reflectance) and CLEAR (1/0) from a MOD09CMG dataset, on `jobs.grid` coords.

    ``ds`` holds ``Coarse Resolution Surface Reflectance Band 1`` .. ``Band 7``, ``Coarse Resolution State QA``
    and ``Coarse Resolution QA``, named with spaces or underscores (case ignored). Reflectance that is still raw
    (integers, or floats carrying a ``scale_factor`` attribute) is scaled by 1e-4 with -28672 as fill; floats
    without one are taken as already decoded. The spatial grid is either the full 3600 x 7200 CMG grid without
    coordinates (rows north to south from lat 90, columns east from lon -180) or lat/lon (or y/x) cell-centre
    coordinates on the 0.05 deg grid (0-360 longitudes are wrapped, the order is fixed). A dataset without a
    ``time`` dimension needs ``date``. CLEAR is `clear_from_state` of the two QA fields with B01 and B02 present,
    as the tower data define it. Raises DataError naming whatever is missing or off the grid.
    """
    names = _resolve(ds)
    ref = ds[names[BANDS[0]]]
    ydim, xdim = _spatial_dims(ref)
    bands = {band: _reflectance(ds[names[band]]) for band in BANDS}
    clear = clear_from_state(ds[names[_STATE_KEY]].values, ds[names[_QA_KEY]].values)
    clear = clear & np.isfinite(bands["B01"].values) & np.isfinite(bands["B02"].values)
    dims = ref.dims
    data = {band: (dims, da.values.astype(np.float32)) for band, da in bands.items()}
    data[CLEAR] = (dims, clear.astype(np.float32))
    out = xr.Dataset(data, coords={k: v for k, v in ref.coords.items() if k == "time"})
    out = out.rename({ydim: "lat", xdim: "lon"}) if (ydim, xdim) != ("lat", "lon") else out
    out = _on_cmg_grid(out, ds, ref, ydim, xdim)
    out = _with_time(out, date)
    return _described(out, "MOD09CMG", CMG_SOURCE, f"{_CLEAR_TESTS}, MODLAND QA ideal, B01 and B02 present")


def mod09ga_to_drivers(
    urls: str | Sequence[str],
    bbox: tuple[float, float, float, float] | None = None,
    date: str | pd.Timestamp | None = None,
    qc_500m: bool = True,
) -> xr.Dataset:
    """Canonical daily B01..B07 (0-1 reflectance) and CLEAR (1/0) from one day's MOD09GA tiles, on `jobs.grid` cells.

    ``urls`` names each tile (or window of one) by a path or URL with ``{layer}`` for the layer name, as the module
    docstring describes. The day is ``date``, or else the ``.AYYYYDDD.`` that all the names share. The rest is
    `mod09ga_tiles_to_drivers`. Raises DataError naming a missing or malformed layer or a day it cannot tell.
    """
    patterns = _tile_patterns(urls)
    tiles = {pattern: partial(geotiff_layer, pattern) for pattern in patterns}
    return mod09ga_tiles_to_drivers(tiles, _ga_day(patterns, date), bbox, qc_500m)


def mod09ga_tiles_to_drivers(
    tiles: Mapping[str, TileLayers],
    day: pd.Timestamp,
    bbox: tuple[float, float, float, float] | None = None,
    qc_500m: bool = True,
) -> xr.Dataset:
    """Canonical B01..B07 and CLEAR on ``day`` from MOD09GA tiles, each named and read by its `TileLayers`.

    Adjacent tiles mosaic without a seam. The cells are those of ``bbox`` (W, S, E, N, as `jobs.grid.bbox_slices`
    selects them), or else every cell holding a pixel centre of the tiles. A band is the mean of the cell's valid
    500 m pixels; CLEAR is 1 where at least half of the cell's pixels with a state QA are clear (`clear_from_state`,
    with ``QC_500m`` unless ``qc_500m`` is False, and B01 and B02 present). Raises DataError naming a malformed layer
    or a bbox that holds no pixel of the tiles.
    """
    sums = [_tile_sums(read, name, qc_500m) for name, read in tiles.items()]
    rows, cols = grid.bbox_slices(bbox) if bbox is not None else _covered(sums)
    total = _mosaic(sums, rows, cols)
    if not total[_QA_PIXELS].any():
        raise DataError(f"the MOD09GA tiles {', '.join(tiles)} hold no pixel in bbox {bbox}; give tiles that cover it")
    modland = ", MODLAND QA ideal" if qc_500m else ""
    rule = f"at least half of the 500 m pixels clear: {_CLEAR_TESTS}{modland}, B01 and B02 present"
    return _described(_ga_cells(total, rows, cols).expand_dims(time=[day]), "MOD09GA", GA_SOURCE, rule)


def geotiff_layer(pattern: str, layer: str) -> xr.DataArray:
    """Raw MOD09GA ``layer`` of the tile ``pattern`` names (``{layer}`` replaced), from a GeoTIFF: a `TileLayers`."""
    url = pattern.replace("{layer}", layer)
    try:
        with rioxarray.open_rasterio(url) as src:
            da = src.load()
    except RasterioIOError as exc:
        raise DataError(f"MOD09GA layer {layer} is missing: cannot open {url} ({exc})") from exc
    if da.sizes["band"] != 1:
        raise DataError(f"MOD09GA {url} has {da.sizes['band']} bands; give the {layer} layer as a single-band GeoTIFF")
    da = da.squeeze("band", drop=True).rename(url)
    da.attrs.pop("scale_factor", None)  # rioxarray says 1.0 where the GeoTIFF states none: MOD09_SCALE applies
    return da


def _key(name: str) -> str:
    return re.sub(r"[\s_]+", "_", str(name).strip().lower())


def _resolve(ds: xr.Dataset) -> dict[str, str]:
    """The dataset's variable name for each canonical band key and QA field, or DataError naming what is missing."""
    by_key = {_key(name): name for name in ds.data_vars}
    wanted = {**_BAND_KEYS, _STATE_KEY: _STATE_KEY, _QA_KEY: _QA_KEY}
    missing = [key for key in wanted.values() if key not in by_key]
    if missing:
        pretty = ", ".join(_display(key) for key in missing)
        raise DataError(
            f"the MOD09CMG dataset lacks {pretty} (spaces or underscores both work); "
            f"found {', '.join(map(str, ds.data_vars)) or 'no variables'}"
        )
    return {name: by_key[key] for name, key in wanted.items()}


def _display(key: str) -> str:
    """The documented MOD09CMG name of a normalised key: ``Coarse Resolution State QA``."""
    words = [w.upper() if w in ("qa",) else w.capitalize() for w in key.split("_")]
    return " ".join(words)


def _spatial_dims(da: xr.DataArray) -> tuple[str, str]:
    """The (row, column) dimensions: named lat/lon-like, or else the last two."""
    dims = [d for d in da.dims if d != "time"]
    if len(dims) != 2:
        raise DataError(f"MOD09CMG {da.name} has dims {da.dims}; give (time,) rows, columns")
    ydim = next((d for d in dims if str(d).lower() in _LAT_NAMES), dims[0])
    xdim = next((d for d in dims if str(d).lower() in _LON_NAMES), dims[1])
    return ydim, xdim


def _reflectance(da: xr.DataArray) -> xr.DataArray:
    """Reflectance 0-1 with NaN for fill: raw values scaled, decoded values kept."""
    values = np.asarray(da.values)
    if values.dtype.kind in "iu" or "scale_factor" in da.attrs:
        scale = float(da.attrs.get("scale_factor", MOD09_SCALE))
        return da.copy(data=_scaled(values, scale, da.attrs.get("_FillValue", MOD09_FILL)))
    return da.copy(data=np.where(values == MOD09_FILL, np.nan, values.astype(np.float64)))


def _scaled(values: np.ndarray, scale: float, fill: float) -> np.ndarray:
    """Raw reflectance integers times ``scale`` (float64), NaN for the MOD09 fill, the file's ``fill`` or non-finite."""
    values = values.astype(np.float64)
    bad = (values == MOD09_FILL) | (values == float(fill)) | ~np.isfinite(values)
    return np.where(bad, np.nan, values * scale)


def _coord(ds: xr.Dataset, ref: xr.DataArray, dim: str, names: tuple[str, ...]) -> np.ndarray | None:
    """1-D coordinate values along ``dim``: the dimension coordinate, or a named 1-D coordinate on it."""
    if dim in ref.coords and ref[dim].ndim == 1 and np.issubdtype(ref[dim].dtype, np.number):
        return np.asarray(ref[dim].values, dtype=np.float64)
    for name in names:
        if name in ds.coords and ds[name].dims == (dim,):
            return np.asarray(ds[name].values, dtype=np.float64)
    return None


def _on_cmg_grid(out: xr.Dataset, ds: xr.Dataset, ref: xr.DataArray, ydim: str, xdim: str) -> xr.Dataset:
    """``out`` with exact `jobs.grid` coordinates, lat descending and lon ascending in -180..180."""
    lat, lon = _coord(ds, ref, ydim, _LAT_NAMES), _coord(ds, ref, xdim, _LON_NAMES)
    shape = (ref.sizes[ydim], ref.sizes[xdim])
    if lat is None and lon is None:
        if shape != (grid.N_LAT, grid.N_LON):
            raise DataError(
                f"MOD09CMG without lat/lon coordinates must be the full {grid.N_LAT} x {grid.N_LON} CMG grid, "
                f"not {shape[0]} x {shape[1]}; give lat/lon cell-centre coordinates for a subset"
            )
        return out.assign_coords(lat=grid.lat_coords(), lon=grid.lon_coords())
    if lat is None or lon is None:
        raise DataError(f"MOD09CMG has a coordinate for only one of {ydim}, {xdim}; give both lat and lon")
    lon = np.where(lon > 180, lon - 360, lon)
    rows, cols = _grid_index(lat, grid.lat_coords(), "lat"), _grid_index(lon, grid.lon_coords(), "lon")
    out = out.assign_coords(lat=grid.lat_coords()[rows], lon=grid.lon_coords()[cols])
    if len(set(rows)) != len(rows) or len(set(cols)) != len(cols):
        raise DataError("MOD09CMG coordinates repeat a 0.05 deg cell; give each cell once")
    return out.isel(lat=np.argsort(rows), lon=np.argsort(cols))


def _grid_index(values: np.ndarray, centres: np.ndarray, name: str) -> np.ndarray:
    """Index of each value in the grid's centres, or DataError unless each is a 0.05 deg cell centre."""
    ordered = centres if centres[0] < centres[-1] else centres[::-1]
    at = np.clip(np.searchsorted(ordered, values), 1, len(ordered) - 1)
    nearer = np.where(np.abs(values - ordered[at - 1]) <= np.abs(values - ordered[at]), at - 1, at)
    off = np.abs(ordered[nearer] - values) > 1e-6
    if off.any():
        raise DataError(
            f"MOD09CMG {name} {values[off][0]:g} is not a 0.05 deg cell centre (odd multiples of 0.025 deg); "
            "give data on the CMG grid"
        )
    return nearer if centres[0] < centres[-1] else len(centres) - 1 - nearer


def _with_time(out: xr.Dataset, date: str | pd.Timestamp | None) -> xr.Dataset:
    """``out`` with a daily ``time`` dimension: its own, floored to the day, or ``date``."""
    if "time" in out.dims:
        return out.assign_coords(time=out.indexes["time"].floor("D"))
    if date is None:
        raise DataError("the MOD09CMG dataset has no time dimension; pass date= (the file's day, e.g. from A2019001)")
    return out.expand_dims(time=[pd.Timestamp(date).floor("D")])


def _described(out: xr.Dataset, product: str, source: str, clear_rule: str) -> xr.Dataset:
    """``out`` (time, lat, lon) with the CF attributes of the canonical drivers, citing ``source``."""
    for i, band in enumerate(BANDS, start=1):
        out[band].attrs = {
            "units": DRIVER_UNITS[band],
            "long_name": f"{product} surface reflectance band {i}",
            "source": source,
        }
    out[CLEAR].attrs = {
        "units": DRIVER_UNITS[CLEAR],
        "long_name": f"clear-sky {product} observation ({clear_rule})",
        "source": source,
    }
    out.attrs = {"source": source, "Conventions": "CF-1.8"}
    return out.transpose("time", "lat", "lon")


@dataclass(frozen=True)
class _CellBins:
    """The 0.05 deg cell holding each pixel's centre, as a flat index into a window of cells, for per-cell sums."""

    row0: int  # the window's first global row and column
    col0: int
    shape: tuple[int, int]
    index: np.ndarray  # flat window index of each pixel on the globe
    on_globe: np.ndarray  # per pixel (rows, columns): whether its centre is a point of the globe

    def sum(self, values: np.ndarray) -> np.ndarray:
        """Per-cell sums (window rows, columns) of per-pixel ``values`` (bool counts)."""
        weights = np.asarray(values, dtype=np.float64)[self.on_globe]
        return np.bincount(self.index, weights, minlength=self.shape[0] * self.shape[1]).reshape(self.shape)


@dataclass(frozen=True)
class _TileSums:
    """One tile's per-cell sums (layout `_SUMS` .. `_QA_PIXELS`) on the window of cells from (row0, col0)."""

    row0: int
    col0: int
    sums: np.ndarray

    @property
    def rows(self) -> slice:
        return slice(self.row0, self.row0 + self.sums.shape[1])

    @property
    def cols(self) -> slice:
        return slice(self.col0, self.col0 + self.sums.shape[2])


# _TileSums.sums layout: per band the sum of its valid pixels, then their count; clear pixels; pixels with state QA
_SUMS = slice(0, len(BANDS))
_COUNTS = slice(len(BANDS), 2 * len(BANDS))
_CLEAR_PIXELS = 2 * len(BANDS)
_QA_PIXELS = _CLEAR_PIXELS + 1


def _tile_patterns(urls: str | Sequence[str]) -> list[str]:
    """The tiles' path patterns, or DataError unless there is at least one and each has ``{layer}``."""
    patterns = [urls] if isinstance(urls, str) else list(urls)
    if not patterns:
        raise DataError("give at least one MOD09GA tile")
    for pattern in patterns:
        if "{layer}" not in pattern:
            raise DataError(
                f"MOD09GA tile {pattern!r} has no {{layer}} for the layer name; name the files of a tile like "
                "MOD09GA.A2019182.h18v04.061.{layer}.tif (layers sur_refl_b01..b07, state_1km, QC_500m)"
            )
    return patterns


def _ga_day(patterns: list[str], date: str | pd.Timestamp | None) -> pd.Timestamp:
    """The tiles' day: ``date``, or else the one ``.AYYYYDDD.`` (year, day of year) that all ``patterns`` hold."""
    if date is not None:
        return pd.Timestamp(date).floor("D")
    found = [_GA_DAY.search(pattern) for pattern in patterns]
    if not all(found):
        unnamed = patterns[found.index(None)]
        raise DataError(f"cannot tell the day of MOD09GA tile {unnamed!r} (no .AYYYYDDD. in it); pass date=")
    days = sorted({pd.to_datetime(match[1], format="%Y%j") for match in found})
    if len(days) > 1:
        raise DataError(f"the MOD09GA tiles are of {len(days)} days ({days[0]:%Y-%m-%d} ..); give one day's tiles")
    return days[0]


def _tile_sums(read: TileLayers, name: str, qc_500m: bool) -> _TileSums:
    """Per-cell sums of one tile: each band's valid pixels and their count, clear pixels, pixels with state QA."""
    b01 = _ga_layer(read, _GA_LAYERS["B01"])
    bins = _cell_bins(b01, name)
    state = _ga_layer(read, _GA_STATE, like=b01).values
    clear = clear_from_state(state, _ga_layer(read, _GA_QC, like=b01).values if qc_500m else None)
    sums, counts = [], []
    for band, layer in _GA_LAYERS.items():
        values = b01.values if band == "B01" else _ga_layer(read, layer, like=b01).values
        valid = np.isfinite(values)
        if band in ("B01", "B02"):  # as the tower flag: clear needs both present
            clear &= valid
        sums.append(bins.sum(np.where(valid, values, 0.0)))
        counts.append(bins.sum(valid))
    layers = [*sums, *counts, bins.sum(clear), bins.sum(np.isfinite(state))]
    return _TileSums(bins.row0, bins.col0, np.stack(layers))


def _ga_layer(read: TileLayers, layer: str, like: xr.DataArray | None = None) -> xr.DataArray:
    """One MOD09GA layer, decoded (reflectance 0-1 float32, QA float64), NaN where missing, on ``like``'s pixels.

    A layer on another pixel grid than ``like`` (the 1 km ``state_1km``) takes, for each of ``like``'s pixels, the
    value of the pixel holding its centre: each 1 km QA pixel covers its 2 x 2 500 m pixels.
    """
    da = read(layer)
    if da.rio.crs is None or da.dtype.kind not in "iu":
        raise DataError(
            f"MOD09GA {da.name} has CRS {da.rio.crs}, {da.dtype}; give the raw integer {layer} layer with its CRS"
        )
    reflectance = layer in _GA_LAYERS.values()
    scale = float(da.attrs.get("scale_factor", MOD09_SCALE))
    decoded = _ga_decoded(da.values, da.rio.nodata, reflectance, scale)
    out = da.copy(data=decoded).rio.write_nodata(np.nan)
    if like is None or _same_pixels(out, like):
        return out
    return out.rio.reproject_match(like, resampling=Resampling.nearest)


def _ga_decoded(values: np.ndarray, nodata: float | None, reflectance: bool, scale: float) -> np.ndarray:
    """Reflectance times ``scale`` (float32) with NaN for fill, or QA integers as float64 with NaN for ``nodata``."""
    if reflectance:
        return _scaled(values, scale, MOD09_FILL if nodata is None else nodata).astype(np.float32)
    qa = values.astype(np.float64)  # exact for uint16 and uint32 bit fields
    return np.where(qa == nodata, np.nan, qa) if nodata is not None else qa


def _same_pixels(da: xr.DataArray, like: xr.DataArray) -> bool:
    return da.shape == like.shape and da.rio.crs == like.rio.crs and da.rio.transform() == like.rio.transform()


def _cell_bins(da: xr.DataArray, name: str) -> _CellBins:
    """The 0.05 deg cell of each pixel centre of ``da``, from its CRS; pixels beyond the projection's edge are off."""
    x, y = np.meshgrid(da["x"].values, da["y"].values)
    to_lonlat = Transformer.from_crs(da.rio.crs.to_wkt(), _WGS84, always_xy=True)
    lon, lat = to_lonlat.transform(x, y)
    back_x, back_y = to_lonlat.transform(lon, lat, direction="INVERSE")
    # PROJ wraps longitudes past 180 deg, so a pixel beyond the sinusoidal edge would land on the far side of the globe
    tolerance = 1e-3 * min(abs(r) for r in da.rio.resolution())
    on_globe = np.isfinite(lon) & np.isfinite(lat) & (np.hypot(back_x - x, back_y - y) < tolerance)
    if not on_globe.any():
        raise DataError(f"MOD09GA tile {name} has no pixel on the globe; check its CRS and geotransform")
    row = np.minimum(np.floor((90 - lat[on_globe]) * grid.PER_DEG), grid.N_LAT - 1).astype(np.int64)
    col = np.minimum(np.floor((lon[on_globe] + 180) * grid.PER_DEG), grid.N_LON - 1).astype(np.int64)
    row0, col0 = int(row.min()), int(col.min())
    shape = (int(row.max()) - row0 + 1, int(col.max()) - col0 + 1)
    return _CellBins(row0, col0, shape, (row - row0) * shape[1] + (col - col0), on_globe)


def _covered(tiles: list[_TileSums]) -> tuple[slice, slice]:
    """Global row and column ranges of the cells holding any of the tiles' pixels."""
    rows = slice(min(t.rows.start for t in tiles), max(t.rows.stop for t in tiles))
    return rows, slice(min(t.cols.start for t in tiles), max(t.cols.stop for t in tiles))


def _mosaic(tiles: list[_TileSums], rows: slice, cols: slice) -> np.ndarray:
    """The tiles' sums added up on the cells of global ``rows`` x ``cols`` (tiles partition the pixels)."""
    total = np.zeros((_QA_PIXELS + 1, rows.stop - rows.start, cols.stop - cols.start))
    for tile in tiles:
        r = slice(max(tile.rows.start, rows.start), min(tile.rows.stop, rows.stop))
        c = slice(max(tile.cols.start, cols.start), min(tile.cols.stop, cols.stop))
        if r.start < r.stop and c.start < c.stop:
            part = tile.sums[:, grid.shift(r, tile.row0), grid.shift(c, tile.col0)]
            total[:, grid.shift(r, rows.start), grid.shift(c, cols.start)] += part
    return total


def _ga_cells(total: np.ndarray, rows: slice, cols: slice) -> xr.Dataset:
    """Band means (NaN without a valid pixel) and the majority CLEAR flag from the summed pixels, on lat/lon."""
    with np.errstate(invalid="ignore"):
        means = total[_SUMS] / total[_COUNTS]  # 0 / 0 = NaN where the cell has no valid pixel
    qa_pixels = total[_QA_PIXELS]
    clear = (qa_pixels > 0) & (2 * total[_CLEAR_PIXELS] >= qa_pixels)
    data = {band: (("lat", "lon"), means[i].astype(np.float32)) for i, band in enumerate(BANDS)}
    data[CLEAR] = (("lat", "lon"), clear.astype(np.float32))
    return xr.Dataset(data, coords={"lat": grid.lat_coords()[rows], "lon": grid.lon_coords()[cols]})
