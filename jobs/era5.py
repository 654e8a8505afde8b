"""ERA5 and ERA5-Land drivers as the Copernicus Climate Data Store delivers them, normalised once at ingest.

`open_drivers` opens NetCDF files or Zarr stores (local paths or fsspec URLs) and fixes their layout: dims
``time, lat, lon``, longitudes in -180..180 ascending, latitudes north to south. `daily_drivers` turns hourly (or
already daily) t2m, d2m and ssrd into the daily drivers of `tamrl.features`: TA (degC), SW_IN (W m-2), VPD (hPa).
"""

from functools import reduce

import fsspec
import numpy as np
import pandas as pd
import xarray as xr
from fsspec.implementations.local import LocalFileSystem

from tamrl.errors import ConfigError, DataError
from tamrl.features import DRIVER_UNITS

DIMS = ("time", "lat", "lon")
HOUR = pd.Timedelta(hours=1)
DAY = pd.Timedelta(days=1)
SECONDS_PER_DAY = 86400.0
MEAN_FLUXES = ("avg_sdswrf", "msdwswrf")  # mean surface downward short-wave flux [W m-2]: new and old CDS names
ACCUMULATIONS = ("hourly", "since_00", "auto")
NOISE = 1000.0  # J m-2: GRIB packing noise in accumulated ssrd, negligible next to an hour of daylight
SINCE_00_SHARE = 0.95  # "auto" picks since_00 when at least this share of sunlit pixel-days never falls

LONG_NAMES = {
    "TA": "2 m air temperature, daily mean",
    "SW_IN": "incoming shortwave radiation, daily mean",
    "VPD": "vapour pressure deficit, daily mean",
}


def open_drivers(url: str | list[str], storage_options: dict | None = None) -> xr.Dataset:
    """Open ERA5 / ERA5-Land NetCDF or Zarr as one lazy (dask) Dataset on dims ``time, lat, lon``.

    ``url`` is a path or fsspec URL (``file://``, ``s3://``, ...), or a list of them: files split by time or by
    variable (the CDS splits instantaneous and accumulated fields) are combined by their coordinates. Each is
    normalised on opening, so nothing downstream has to know which CDS layout it came in: ``valid_time`` becomes
    ``time``; ``latitude``/``longitude`` become ``lat``/``lon``; longitudes 0..360 become -180..180, ascending;
    latitudes run north to south; singleton dimensions and auxiliary coordinates (``number``, ``expver``,
    ``step``, ...) are dropped, and a real ``expver`` dimension (ERA5 mixed with ERA5T) is collapsed to its first
    non-NaN value at each point.
    """
    urls = [url] if isinstance(url, str) else list(url)
    if not urls:
        raise DataError("no driver files given: pass the path or URL of a NetCDF file or Zarr store")
    parts = [_normalise(_open(u, storage_options), u) for u in urls]
    if len(parts) == 1:
        return parts[0]
    try:
        return xr.combine_by_coords(
            parts, data_vars="all", coords="different", compat="no_conflicts", join="exact",
            combine_attrs="drop_conflicts",
        )  # fmt: skip
    except ValueError as exc:
        raise DataError(
            f"cannot combine the driver files {urls}: {exc}; give files on one grid that split time or variables"
        ) from exc


def _open(url: str, storage_options: dict | None) -> xr.Dataset:
    """Open one NetCDF file or Zarr store lazily, chunked as stored."""
    try:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        if path.rstrip("/").endswith(".zarr") or fs.isdir(path):
            return xr.open_zarr(url, storage_options=storage_options, chunks={})
        # Local files go to the NetCDF engines by path; remote ones as fsspec file objects.
        return xr.open_dataset(path if isinstance(fs, LocalFileSystem) else fs.open(path, "rb"), chunks={})
    except ImportError as exc:
        raise DataError(f"cannot open {url}: {exc} (install the fsspec package for its protocol, e.g. s3fs)") from exc
    except (OSError, ValueError) as exc:
        raise DataError(
            f"cannot open driver file {url} ({type(exc).__name__}: {exc}). Give a NetCDF file (.nc) or a Zarr "
            "store (.zarr or a directory), as a local path or fsspec URL, with the storage_options it needs"
        ) from exc


def _normalise(ds: xr.Dataset, url: str) -> xr.Dataset:
    """Bring one opened file to dims ``time, lat, lon``, lon -180..180 ascending, lat descending."""
    if "valid_time" in ds.dims:
        ds = ds.drop_vars("time", errors="ignore").rename(valid_time="time")
    ds = ds.rename({old: new for old, new in (("latitude", "lat"), ("longitude", "lon")) if old in ds.variables})
    missing = [d for d in DIMS if d not in ds.dims]
    if missing:
        raise DataError(
            f"{url} lacks the dimension(s) {', '.join(missing)} (it has {', '.join(map(str, ds.dims)) or 'none'}); "
            "ERA5 drivers need time (or valid_time), latitude and longitude"
        )
    if ds.sizes.get("expver", 1) > 1:
        ds = _first_valid(ds, "expver")
    ds = ds.squeeze([d for d in ds.dims if d not in DIMS and ds.sizes[d] == 1], drop=True)
    extra = [f"{d} ({ds.sizes[d]} values)" for d in ds.dims if d not in DIMS]
    if extra:
        raise DataError(
            f"{url} has extra dimension(s) {', '.join(extra)}; request a single value of each from the CDS "
            "(for example one ensemble member)"
        )
    ds = ds.reset_coords(drop=True).transpose(*DIMS)
    lon = ds.lon.values
    wrapped = np.where(lon >= 180, np.round(lon - 360, 6), lon)  # rounding drops the float error of the shift
    ds = ds.assign_coords(lon=("lon", wrapped, ds.lon.attrs))
    if not np.all(np.diff(ds.lon.values) > 0):
        ds = ds.isel(lon=np.unique(ds.lon.values, return_index=True)[1])  # sorted, and 180 == -180 kept once
    if not np.all(np.diff(ds.lat.values) < 0):
        ds = ds.isel(lat=np.unique(ds.lat.values, return_index=True)[1][::-1])
    return ds


def _first_valid(ds: xr.Dataset, dim: str) -> xr.Dataset:
    """Collapse ``dim`` to its first non-NaN value at each point (the ERA5 and ERA5T layers of ``expver``)."""
    layers = [ds.isel({dim: i}, drop=True) for i in range(ds.sizes[dim])]
    return reduce(xr.Dataset.combine_first, layers)


def daily_drivers(ds: xr.Dataset, accumulation: str = "auto") -> xr.Dataset:
    """Daily TA (degC), SW_IN (W m-2) and VPD (hPa) per UTC day, from an `open_drivers` Dataset.

    Each driver is made when its inputs are there: TA from t2m; VPD from t2m and d2m; SW_IN from ssrd, or else
    from a mean flux (``avg_sdswrf`` or ``msdwswrf``, W m-2). Every output carries ``units`` and a ``source`` attr
    saying how it was derived.

    Hourly input, for UTC day D (a day without complete coverage is NaN, never a biased partial mean or sum; but a
    first or last day that the record covers only in part, the end of a download, is dropped, and the Dataset's
    ``trimmed`` attr says which and why):
    - TA = mean of t2m - 273.15 at 00..23 UTC; VPD = mean of es(t2m) - es(d2m) at 00..23 UTC, with the Magnus
      formula es = 6.1094 exp(17.625 T / (T + 243.04)) hPa, T in degC. All 24 hours must be present.
    - SW_IN = (shortwave energy over D) / 86400. ``accumulation`` says how ssrd [J m-2] is accumulated:
      "hourly" (ERA5 single levels): the value at H covers the hour ending at H, so the energy over D is the sum
      of the 24 values stamped 01 UTC of D to 00 UTC of D+1, and all 24 must be present;
      "since_00" (ERA5-Land): the value at H is accumulated since 00 UTC, and the value at 00 UTC of D+1 holds
      all of D, so it is the energy over D (NaN where it is missing);
      "auto": since_00 if nearly all sunlit pixel-days rise monotonically from 01 to 23 UTC, else hourly. This
      reads ssrd once more; pass the convention outright for large inputs.
      A mean flux at H is the mean over the hour ending at H: its values stamped 01 UTC of D to 00 UTC of D+1
      are averaged.

    Already-daily input (one step per day, labelled by its UTC day) is only converted: t2m K -> degC, ssrd
    J m-2 per day -> W m-2, a mean flux as is; VPD then comes from the daily mean t2m and d2m.
    """
    if accumulation not in ACCUMULATIONS:
        raise ConfigError(f"unknown ssrd accumulation {accumulation!r}; choose one of {', '.join(ACCUMULATIONS)}")
    shortwave = _shortwave_name(ds)
    if "t2m" not in ds and shortwave is None:
        raise DataError(
            "the drivers can give none of TA, SW_IN, VPD: missing t2m (for TA and VPD) and ssrd or "
            f"{' or '.join(MEAN_FLUXES)} (for SW_IN); the dataset has {', '.join(map(str, ds.data_vars)) or 'none'}"
        )
    if _time_step(ds) == DAY:
        return xr.Dataset(_from_daily(ds.assign_coords(time=ds.indexes["time"].floor("D")), shortwave))
    return _whole_days(xr.Dataset(_from_hourly(ds, shortwave, accumulation)), ds.indexes["time"])


def _shortwave_name(ds: xr.Dataset) -> str | None:
    """The variable SW_IN is made from: ssrd if present, else a mean-flux variable, else None."""
    return next((name for name in ("ssrd", *MEAN_FLUXES) if name in ds), None)


def _time_step(ds: xr.Dataset) -> pd.Timedelta:
    """The data's time step, which must be one hour or one day."""
    times = ds.indexes["time"]
    if len(times) < 2:
        raise DataError("the drivers have fewer than two time steps; give hourly or daily data covering whole days")
    steps = np.diff(times.values)
    if (steps <= np.timedelta64(0)).any():
        raise DataError("the drivers' times are not strictly increasing; remove duplicated or overlapping files")
    step = pd.Timedelta(steps.min())
    if step == DAY or (step == HOUR and (times.floor("h") == times).all()):
        return step
    raise DataError(f"the drivers' time step is {step} (first at {times[0]}); give hourly data on the hour, or daily")


def _from_hourly(ds: xr.Dataset, shortwave: str | None, accumulation: str) -> dict[str, xr.DataArray]:
    """Daily drivers from hourly fields (rules in `daily_drivers`)."""
    times = ds.indexes["time"]
    days = pd.date_range(times[0].floor("D"), times[-1].floor("D"), freq="D", name="time")
    complete = "; NaN unless all 24 are present"
    out = {}
    if "t2m" in ds:
        ta = _celsius(ds.t2m)
        out["TA"] = _driver(_daily(ta, days, "mean"), "TA", f"mean of t2m - 273.15 at 00..23 UTC{complete}")
        if "d2m" in ds:
            vpd = _magnus(ta) - _magnus(_celsius(ds.d2m))
            source = f"mean of es(t2m) - es(d2m) at 00..23 UTC, Magnus formula{complete}"
            out["VPD"] = _driver(_daily(vpd, days, "mean"), "VPD", source)
    if shortwave == "ssrd":
        out["SW_IN"] = _shortwave_from_ssrd(ds.ssrd, days, accumulation)
    elif shortwave is not None:
        _check_units(ds[shortwave], "W m-2")
        source = (
            f"mean of {shortwave} [W m-2, mean over the hour ending at each stamp] stamped 01 UTC to 00 UTC of "
            f"the next day{complete}"
        )
        out["SW_IN"] = _driver(_daily(_preceding_hour(ds[shortwave]), days, "mean"), "SW_IN", source)
    return out


def _whole_days(daily: xr.Dataset, times: pd.DatetimeIndex) -> xr.Dataset:
    """``daily`` without a first or last day that the hourly record ``times`` covers only in part.

    The ends of a download are not gaps: a record of whole UTC days (00 to 23 UTC, as the CDS delivers a year)
    lacks 00 UTC of the day after its last, which that day's SW_IN needs. Such a day is dropped, and the ``trimmed``
    attr says which and why, so that no NaN at the ends reaches the engine and support years hold complete days
    only. Days inside the record with missing hours stay NaN (a damaged download must not pass unnoticed).
    """
    days = daily.indexes["time"]
    needs = {name: _hours_needed(name, da) for name, da in daily.items()}
    inside = {
        name: (days + first * HOUR >= times[0]) & (days + last * HOUR <= times[-1])
        for name, (first, last) in needs.items()
    }
    keep = np.logical_and.reduce(list(inside.values()))
    record = _span(times[0], times[-1])
    if not keep.any():
        raise DataError(
            f"the hourly drivers ({record}) hold no whole UTC day; give hourly data from 00 UTC of the first day to "
            "23 UTC of the last (and 00 UTC of the day after for ssrd)"
        )
    notes = []
    for i in np.flatnonzero(~keep):
        day = days[i]
        short = [
            f"{name} needs {_span(day + first * HOUR, day + last * HOUR)}"
            for name, (first, last) in needs.items() if not inside[name][i]
        ]  # fmt: skip
        end = "first" if i == 0 else "last"
        notes.append(f"dropped {day:%Y-%m-%d}, the partial {end} day of the hourly record {record}: {', '.join(short)}")
    trimmed = daily.isel(time=keep)
    if notes:
        trimmed.attrs["trimmed"] = "; ".join(notes)
    return trimmed


def _hours_needed(name: str, da: xr.DataArray) -> tuple[int, int]:
    """The first and last hourly stamp, in hours after 00 UTC of day D, that driver ``name`` of day D is made from
    (rules in `daily_drivers`)."""
    if name != "SW_IN":
        return 0, 23
    return (24, 24) if da.attrs.get("accumulation") == "since_00" else (1, 24)


def _span(first: pd.Timestamp, last: pd.Timestamp) -> str:
    """``2020-12-31 01:00..2021-01-01 00:00 UTC``, or one time where ``first`` is ``last``."""
    return f"{first:%Y-%m-%d %H:%M}" + (f"..{last:%Y-%m-%d %H:%M}" if last > first else "") + " UTC"


def _shortwave_from_ssrd(ssrd: xr.DataArray, days: pd.DatetimeIndex, accumulation: str) -> xr.DataArray:
    """Daily mean shortwave flux [W m-2] from accumulated ssrd [J m-2], in either CDS convention."""
    _check_units(ssrd, "J m-2")
    decision = "set by the caller"
    if accumulation == "auto":
        accumulation, decision = _detect_accumulation(ssrd, days)
    if accumulation == "hourly":
        flux = _daily(_preceding_hour(ssrd), days, "sum") / SECONDS_PER_DAY
        source = (
            "ssrd [J m-2, accumulated over the hour ending at each stamp: ERA5] summed over the 24 stamps 01 UTC "
            "to 00 UTC of the next day, / 86400; NaN unless all 24 are present"
        )
    else:
        at_00 = ssrd.isel(time=ssrd.indexes["time"].hour == 0)
        flux = at_00.assign_coords(time=at_00.indexes["time"] - DAY).reindex(time=days) / SECONDS_PER_DAY
        source = (
            "ssrd [J m-2, accumulated since 00 UTC: ERA5-Land] at 00 UTC of the next day, which holds the whole "
            "day, / 86400; NaN where that value is missing"
        )
    return _driver(flux, "SW_IN", source, accumulation=accumulation, accumulation_decision=decision)


def _detect_accumulation(ssrd: xr.DataArray, days: pd.DatetimeIndex) -> tuple[str, str]:
    """Tell ERA5-Land since-00 ssrd from ERA5 hourly ssrd, and say why.

    Accumulated since 00 UTC, ssrd never falls from 01 to 23 UTC; hourly ssrd falls every afternoon. Only
    complete pixel-days whose values change (there is daylight) count; NOISE absorbs GRIB packing error.
    """
    by_day = _by_day(ssrd, days)
    steps = by_day.isel(hour=slice(1, None)).diff("hour")  # 01 -> 02 ... 22 -> 23 UTC
    sunlit = (abs(steps) > NOISE).any("hour") & steps.notnull().all("hour")
    counts = xr.Dataset({"sunlit": sunlit.sum(), "rising": (sunlit & (steps >= -NOISE).all("hour")).sum()}).compute()
    sunlit_days, rising_days = int(counts.sunlit), int(counts.rising)
    if sunlit_days == 0:
        raise DataError(
            "cannot tell how ssrd is accumulated: it never changes within a complete day (polar night?); pass "
            "accumulation='hourly' for ERA5 or 'since_00' for ERA5-Land"
        )
    since_00 = rising_days >= SINCE_00_SHARE * sunlit_days
    reason = f"auto: {rising_days} of {sunlit_days} sunlit pixel-days never fall from 01 to 23 UTC"
    return ("since_00" if since_00 else "hourly"), reason


def _from_daily(ds: xr.Dataset, shortwave: str | None) -> dict[str, xr.DataArray]:
    """Daily drivers from daily fields: unit conversions only."""
    out = {}
    if "t2m" in ds:
        ta = _celsius(ds.t2m)
        out["TA"] = _driver(ta, "TA", "daily t2m - 273.15")
        if "d2m" in ds:
            vpd = _magnus(ta) - _magnus(_celsius(ds.d2m))
            out["VPD"] = _driver(vpd, "VPD", "es(daily t2m) - es(daily d2m), Magnus formula")
    if shortwave == "ssrd":
        _check_units(ds.ssrd, "J m-2")
        out["SW_IN"] = _driver(ds.ssrd / SECONDS_PER_DAY, "SW_IN", "daily ssrd [J m-2] / 86400")
    elif shortwave is not None:
        _check_units(ds[shortwave], "W m-2")
        out["SW_IN"] = _driver(ds[shortwave], "SW_IN", f"daily {shortwave} [W m-2]")
    return out


def _driver(da: xr.DataArray, name: str, source: str, **extra: str) -> xr.DataArray:
    """``da`` named as driver ``name``, its attrs only the canonical units, a long name and how it was made."""
    da = da.copy(deep=False).rename(name)
    da.attrs = {"units": DRIVER_UNITS[name], "long_name": LONG_NAMES[name], "source": source, **extra}
    return da


def _by_day(da: xr.DataArray, days: pd.DatetimeIndex) -> xr.DataArray:
    """Hourly ``da`` as blocks (time = day, hour = 00..23 UTC, ...); hours it lacks are NaN."""
    hours = pd.date_range(days[0], periods=24 * len(days), freq="h", name="time")
    blocks = da.reindex(time=hours).drop_vars("time").coarsen(time=24).construct(time=("time", "hour"))
    return blocks.assign_coords(time=days)


def _daily(da: xr.DataArray, days: pd.DatetimeIndex, how: str) -> xr.DataArray:
    """Mean or sum of the 24 hourly values of each day; NaN where any is missing."""
    return getattr(_by_day(da, days), how)("hour", skipna=False)


def _preceding_hour(da: xr.DataArray) -> xr.DataArray:
    """Stamp values that cover the hour ending at H with H - 1 h, so each lands on the day it belongs to."""
    return da.assign_coords(time=da.indexes["time"] - HOUR)


def _celsius(da: xr.DataArray) -> xr.DataArray:
    """Kelvin to degC."""
    _check_units(da, "K")
    return da - 273.15


def _magnus(t: xr.DataArray) -> xr.DataArray:
    """Saturation vapour pressure [hPa] over water at ``t`` [degC] (Magnus formula, Alduchov and Eskridge 1996)."""
    return 6.1094 * np.exp(17.625 * t / (t + 243.04))


def _check_units(da: xr.DataArray, expected: str) -> None:
    """Refuse a variable whose ``units`` attr says it is not in the units the CDS delivers it in."""
    units = da.attrs.get("units")
    if units is not None and units.replace("**", "").replace(" ", "") != expected.replace(" ", ""):
        raise DataError(f"{da.name} has units {units!r}, not {expected} as the CDS delivers it; give the CDS values")
