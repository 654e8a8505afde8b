"""Gridded daily drivers for the engine: canonical variables read at the 0.05 deg cells of a tile.

`GridDrivers` opens one or more driver URLs (NetCDF files or Zarr stores, local or fsspec) through
`jobs.era5.open_drivers`, groups them by grid, and turns each group into the canonical daily variables of
`tamrl.features` (TA, SW_IN, VPD, B01..B07, CLEAR) with the gridded adapters of `jobs.adapters` that recognise it:

- ERA5 / ERA5-Land fields (t2m, d2m, ssrd or a mean short-wave flux), hourly or daily, go through
  `jobs.era5.daily_drivers` (which drops a partial first or last day of an hourly record: `GridDrivers.notes`);
- canonical daily variables already in a dataset (a pre-processed store, one `tamrl ingest` wrote, the synthetic
  reflectance) pass through.

A variable that several groups supply is taken from the first URL that has it. Everything stays lazy (dask) until
`GridDrivers.read` loads one tile's window. Meteorology on a coarser grid (ERA5 0.25 deg, ERA5-Land 0.1 deg) is
interpolated bilinearly to the cell centres, falling back to the nearest grid value where a corner is NaN (the
coast of ERA5-Land); reflectance and CLEAR are taken at the cell (nearest value), never interpolated. Drivers
already on the 0.05 deg grid are selected exactly.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr

from jobs import grid
from jobs.adapters import GRIDDED, driver_options
from jobs.adapters.base import AdapterOptions
from jobs.era5 import open_drivers
from tamrl.errors import DataError
from tamrl.features import DRIVER_UNITS, MET

CANONICAL = tuple(DRIVER_UNITS)  # TA, SW_IN, VPD, B01..B07, CLEAR
ON_GRID = 1e-6  # deg: coordinates this close to the 0.05 deg cell centres count as the grid itself


@dataclass(frozen=True)
class Source:
    """The canonical daily variables of one group of URLs that share a grid."""

    urls: tuple[str, ...]
    arrays: dict[str, xr.DataArray]  # lazy, dims (time, lat, lon), lat descending, lon ascending
    options: AdapterOptions  # `jobs.adapters.DriverOptions` as the adapters used them (e.g. the detected accumulation)
    synthetic: bool
    note: str = ""  # what the adapters dropped (the partial ends of an hourly record, `jobs.era5.daily_drivers`)

    @property
    def lat(self) -> np.ndarray:
        return next(iter(self.arrays.values())).lat.values

    @property
    def lon(self) -> np.ndarray:
        return next(iter(self.arrays.values())).lon.values

    @property
    def on_grid(self) -> bool:
        """Whether the coordinates are cell centres of the 0.05 deg grid (then cells are selected exactly)."""
        return _on_grid(self.lat) and _on_grid(self.lon)

    @property
    def step(self) -> float:
        """The largest coordinate spacing [deg]: how far the grid reaches beyond its outer centres."""
        return max(_spacing(self.lat), _spacing(self.lon))


class GridDrivers:
    """Canonical daily drivers from one or more URLs, read tile by tile on the 0.05 deg grid.

    ``options`` are the adapters' options (`jobs.adapters.DriverOptions`, or a mapping such as
    ``{"era5": {"accumulation": "hourly"}}``), for all groups or one per group; ``options`` holds them as used per
    group, so workers reopening the URLs skip what was detected.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        options: Mapping[str, Any] | AdapterOptions | Sequence[AdapterOptions] | None = None,
        storage_options: dict | None = None,
    ):
        self.urls = (urls,) if isinstance(urls, str) else tuple(urls)
        groups = _group_by_grid(self.urls, storage_options)
        per_group = list(options) if isinstance(options, list | tuple) else [options] * len(groups)
        if len(per_group) != len(groups):
            raise DataError(f"{len(per_group)} driver options given for {len(groups)} driver grids")
        self.sources = [_source(urls, ds, driver_options(o)) for (urls, ds), o in zip(groups, per_group, strict=True)]
        self._where = {}
        for i, source in enumerate(self.sources):
            for name in source.arrays:
                self._where.setdefault(name, i)

    @property
    def variables(self) -> tuple[str, ...]:
        """The canonical variables these drivers supply."""
        return tuple(name for name in CANONICAL if name in self._where)

    @property
    def options(self) -> tuple[AdapterOptions, ...]:
        """The adapters' options as used, one `jobs.adapters.DriverOptions` per driver grid."""
        return tuple(source.options for source in self.sources)

    @property
    def notes(self) -> tuple[str, ...]:
        """What was dropped from the drivers as they were read, one line per driver grid that lost days."""
        return tuple(source.note for source in self.sources if source.note)

    @property
    def synthetic(self) -> bool:
        """Whether any source is labelled synthetic (a ``synthetic`` attribute on the dataset or a variable)."""
        return any(source.synthetic for source in self.sources)

    def array(self, name: str) -> xr.DataArray:
        """The lazy daily values of variable ``name`` on its own grid (time, lat descending, lon ascending)."""
        return self._source(name).arrays[name]

    def days(self, name: str) -> pd.DatetimeIndex:
        """The days on which variable ``name`` has a time step."""
        return self._source(name).arrays[name].indexes["time"]

    def coverage(self, names: Sequence[str]) -> str:
        """What the drivers cover, per variable: e.g. ``TA 2019-01-01..2020-04-30 (486 days)``."""
        return "; ".join(f"{name} {_describe(self.days(name))}" for name in names)

    def check_dates(self, names: Sequence[str], dates: pd.DatetimeIndex, what: str) -> None:
        """DataError naming what the drivers cover unless every variable of ``names`` has all ``dates``."""
        short = [name for name in names if len(dates.difference(self.days(name)))]
        if short:
            raise DataError(f"the drivers do not cover {what}: they cover {self.coverage(short)}")

    def check_cells(self, names: Sequence[str], rows: slice, cols: slice) -> None:
        """DataError unless every variable of ``names`` reaches the cell centres of ``rows`` x ``cols``."""
        lat, lon = grid.lat_coords()[rows], grid.lon_coords()[cols]
        for name in names:
            source = self._source(name)
            interpolated = name in MET and not source.on_grid
            reach = 1e-9 if interpolated else source.step / 2 + ON_GRID
            if not (_reaches(source.lat, lat, interpolated, reach) and _reaches(source.lon, lon, interpolated, reach)):
                raise DataError(
                    f"the drivers' {name} ({', '.join(source.urls)}) covers {_extent(source.lat, source.lon)}, not the "
                    f"cells of {_extent(lat, lon)}; give drivers that cover the bbox"
                )

    def read(
        self, rows: slice, cols: slice, dates: pd.DatetimeIndex, names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """The daily values of ``names`` (default: all) on ``dates`` at the cells of global ``rows`` x ``cols``.

        Returns float32 arrays (time, lat, lon). Only the window around the cells is loaded, with dask's
        synchronous scheduler, so a read inside a Dask task never submits work back to the cluster.
        """
        lat, lon = grid.lat_coords()[rows], grid.lon_coords()[cols]
        names = list(names or self.variables)
        windows = [self._window(name, lat, lon, dates) for name in names]
        loaded = dask.compute(*windows, scheduler="synchronous")
        out = {}
        for name, window in zip(names, loaded, strict=True):
            source = self._source(name)
            values = _at_cells(window, lat, lon, interpolate=name in MET and not source.on_grid)
            out[name] = values.transpose("time", "lat", "lon").values.astype(np.float32)
        return out

    def _source(self, name: str) -> Source:
        if name not in self._where:
            raise DataError(f"the drivers supply no {name}; they have {', '.join(self.variables) or 'nothing usable'}")
        return self.sources[self._where[name]]

    def _window(self, name: str, lat: np.ndarray, lon: np.ndarray, dates: pd.DatetimeIndex) -> xr.DataArray:
        """The lazy values of ``name`` on ``dates`` around the cells, one grid step beyond them."""
        source = self._source(name)
        margin = source.step + ON_GRID
        da = source.arrays[name]
        try:
            da = da.sel(time=dates)
        except KeyError as exc:
            raise DataError(f"the drivers lack some of the days {_describe(dates)} of {name}") from exc
        return da.sel(
            lat=slice(lat.max() + margin, lat.min() - margin), lon=slice(lon.min() - margin, lon.max() + margin)
        )


def _group_by_grid(urls: tuple[str, ...], storage_options: dict | None) -> list[tuple[tuple[str, ...], xr.Dataset]]:
    """The URLs grouped by grid (identical lat and lon), each group opened as one combined dataset."""
    if not urls:
        raise DataError("no driver URLs given: pass NetCDF files or Zarr stores")
    opened = [open_drivers(url, storage_options) for url in urls]
    groups: dict[tuple[bytes, bytes], list[int]] = {}
    for i, ds in enumerate(opened):
        groups.setdefault((ds.lat.values.tobytes(), ds.lon.values.tobytes()), []).append(i)
    out = []
    for members in groups.values():
        group = tuple(urls[i] for i in members)
        out.append((group, opened[members[0]] if len(members) == 1 else open_drivers(list(group), storage_options)))
    return out


def _source(urls: tuple[str, ...], ds: xr.Dataset, options: AdapterOptions) -> Source:
    """The canonical daily variables of one opened group, from every gridded adapter whose variables it holds (a
    variable from the first of them, in `jobs.adapters.GRIDDED` order)."""
    arrays, used, notes = {}, {}, []
    for name, adapter in GRIDDED.items():
        if any(name in ds for name in adapter.variables):
            made = adapter.canonical(ds, urls, getattr(options, name))
            arrays |= {key: da for key, da in made.arrays.items() if key not in arrays}
            used[name] = made.options
            notes += [made.note] if made.note else []
    if not arrays:
        sources = " or ".join(f"{a.source} ({', '.join(a.variables)})" for a in GRIDDED.values())
        raise DataError(
            f"{', '.join(urls)} hold none of the drivers: give {sources}; "
            f"found {', '.join(map(str, ds.data_vars)) or 'none'}"
        )
    arrays = {name: _wrapped(da) for name, da in arrays.items()}
    return Source(urls, arrays, options.model_copy(update=used), _is_synthetic(ds), "; ".join(notes))


def _wrapped(da: xr.DataArray) -> xr.DataArray:
    """A global grid padded by one column beyond 180 W and 180 E, so cells near the antimeridian interpolate."""
    lon = da.lon.values
    step = _spacing(lon)
    if len(lon) < 2 or abs(len(lon) * step - 360) > ON_GRID:
        return da
    west = da.isel(lon=[-1]).assign_coords(lon=lon[-1:] - 360)
    east = da.isel(lon=[0]).assign_coords(lon=lon[:1] + 360)
    return xr.concat([west, da, east], dim="lon")


def _is_synthetic(ds: xr.Dataset) -> bool:
    labels = [ds.attrs.get("synthetic"), *(ds[name].attrs.get("synthetic") for name in ds.data_vars)]
    return any(str(label).strip().lower() in ("1", "true", "yes") for label in labels if label is not None)


def _at_cells(window: xr.DataArray, lat: np.ndarray, lon: np.ndarray, interpolate: bool) -> xr.DataArray:
    """``window`` at the cell centres: bilinear (NaN corners filled from the nearest value), or nearest."""
    nearest = window.sel(lat=lat, lon=lon, method="nearest")
    if not interpolate:
        return nearest
    return window.interp(lat=lat, lon=lon, method="linear").fillna(nearest.values)


def _on_grid(coords: np.ndarray) -> bool:
    """Whether every coordinate is a cell centre of the 0.05 deg grid: an odd multiple of 0.025 deg."""
    halves = coords / (grid.RES / 2)
    nearest = np.round(halves)
    return bool(np.all((np.abs(halves - nearest) * grid.RES / 2 <= ON_GRID) & (nearest % 2 == 1)))


def _spacing(coords: np.ndarray) -> float:
    return float(np.abs(np.diff(coords)).max()) if len(coords) > 1 else 0.0


def _reaches(source: np.ndarray, target: np.ndarray, interpolated: bool, reach: float) -> bool:
    """Whether the source coordinates serve every target: inside their range, or within ``reach`` of one."""
    if interpolated:
        return len(source) > 1 and source.min() - reach <= target.min() and target.max() <= source.max() + reach
    ordered = np.sort(source)
    at = np.searchsorted(ordered, target)
    below, above = ordered[np.clip(at - 1, 0, len(ordered) - 1)], ordered[np.clip(at, 0, len(ordered) - 1)]
    return bool(np.all(np.minimum(np.abs(target - below), np.abs(target - above)) <= reach))


def _extent(lat: np.ndarray, lon: np.ndarray) -> str:
    return f"lat {lat.min():g}..{lat.max():g}, lon {lon.min():g}..{lon.max():g}"


def _describe(days: pd.DatetimeIndex) -> str:
    """``first..last (N days)``, with the number of days missing in between."""
    if not len(days):
        return "no days"
    span = (days[-1] - days[0]).days + 1
    gaps = f", {span - len(days)} missing in between" if span > len(days) else ""
    return f"{days[0]:%Y-%m-%d}..{days[-1]:%Y-%m-%d} ({len(days)} days{gaps})"
