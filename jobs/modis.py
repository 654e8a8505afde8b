"""MODIS surface reflectance for the engine: QA decoding and MOD09CMG on the 0.05 deg grid.

- `clear_from_state` decodes the MOD09GA / MOD09CMG QA bit fields into the clear-sky flag exactly as the tower
  data in ``shared/data/modis`` define ``clear`` (it reproduces that column on every row of the tower file).
- `mod09cmg_to_drivers` turns a MOD09CMG dataset (already on the 0.05 deg CMG grid) into the canonical daily
  drivers B01..B07 (0-1 reflectance) and CLEAR on `jobs.grid` coordinates, which `jobs.drivers` passes through.

Not yet supported: MOD09GA sinusoidal tiles (h/v tiles at 500 m / 1 km). Their reprojection to the 0.05 deg grid
(rioxarray, DESIGN.md section 4) belongs in this module, next to `mod09cmg_to_drivers`; until then use MOD09CMG.
"""

import re

import numpy as np
import pandas as pd
import xarray as xr

from jobs import grid
from tamrl.errors import DataError
from tamrl.features import BANDS, CLEAR, DRIVER_UNITS

# MOD09GA state_1km / MOD09CMG "Coarse Resolution State QA" bits (MOD09 user guide, Collection 6)
CLOUD_STATE = 0b11  # bits 0-1: 00 clear, 01 cloudy, 10 mixed, 11 not set (assumed clear)
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

# MOD09CMG layout: int16 reflectance, scale 1e-4, fill -28672
CMG_SCALE = 1e-4
CMG_FILL = -28672
CMG_SOURCE = "MOD09CMG daily surface reflectance, 0.05 deg CMG (Vermote and Wolfe, doi:10.5067/MODIS/MOD09CMG.006)"
_BAND_KEYS = {band: f"coarse_resolution_surface_reflectance_band_{i}" for i, band in enumerate(BANDS, start=1)}
_STATE_KEY = "coarse_resolution_state_qa"
_QA_KEY = "coarse_resolution_qa"
_LAT_NAMES = ("lat", "latitude", "y")
_LON_NAMES = ("lon", "longitude", "x")


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
    for name in (*BANDS, CLEAR):
        out[name].attrs = _attrs(name)
    out.attrs = {"source": CMG_SOURCE, "Conventions": "CF-1.8"}
    return out.transpose("time", "lat", "lon")


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
    raw = values.dtype.kind in "iu" or "scale_factor" in da.attrs
    if raw:
        scale = float(da.attrs.get("scale_factor", CMG_SCALE))
        fill = da.attrs.get("_FillValue", CMG_FILL)
        values = values.astype(np.float64)
        bad = (values == CMG_FILL) | (values == float(fill)) | ~np.isfinite(values)
        out = np.where(bad, np.nan, values * scale)
    else:
        out = np.where(values == CMG_FILL, np.nan, values.astype(np.float64))
    return da.copy(data=out)


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


def _attrs(name: str) -> dict[str, str]:
    if name == CLEAR:
        return {
            "units": DRIVER_UNITS[CLEAR],
            "long_name": "clear-sky MOD09CMG observation (state QA clear, no shadow/cirrus/snow/high aerosol/"
            "adjacent cloud, MODLAND QA ideal, B01 and B02 present)",
            "source": CMG_SOURCE,
        }
    i = BANDS.index(name) + 1
    return {"units": DRIVER_UNITS[name], "long_name": f"MOD09CMG surface reflectance band {i}", "source": CMG_SOURCE}
