"""The canonical-store adapter: daily TA, SW_IN, VPD, B01..B07 and CLEAR already in a dataset pass through.

Their meteorological units are checked where a ``units`` attribute states them (a TA in K or a VPD in kPa is
refused), and each variable must have one step per UTC day (a time of day is floored to the day).
"""

from collections.abc import Sequence

import xarray as xr

from jobs.adapters.base import AdapterOptions, Canonical
from tamrl.errors import DataError
from tamrl.features import DRIVER_UNITS

NAMES = tuple(DRIVER_UNITS)  # TA, SW_IN, VPD, B01..B07, CLEAR
# accepted spellings of the canonical meteorology's units (compared without spaces, '**', '^' and case)
UNIT_SPELLINGS = {
    "TA": ("degC", "deg C", "°C", "celsius", "degree_Celsius", "degrees_Celsius"),
    "SW_IN": ("W m-2", "W/m2", "W m**-2", "W m^-2"),
    "VPD": ("hPa", "mbar", "millibar"),
}


class CanonicalOptions(AdapterOptions):
    """A canonical store has no options."""


class CanonicalAdapter:
    """Canonical daily variables (`NAMES`), checked and labelled by their UTC day."""

    Options = CanonicalOptions
    source = "canonical daily variables"
    variables = NAMES

    def canonical(self, ds: xr.Dataset, urls: Sequence[str], options: CanonicalOptions) -> Canonical:
        arrays = {}
        for name in NAMES:
            if name in ds:
                _check_units(ds[name], urls)
                arrays[name] = _daily(ds[name], urls)
        return Canonical(arrays, options)


def _check_units(da: xr.DataArray, urls: Sequence[str]) -> None:
    """DataError when a canonical meteorological variable states units other than the canonical ones."""
    units = da.attrs.get("units")
    spellings = UNIT_SPELLINGS.get(str(da.name))
    if units is None or spellings is None:
        return
    if _plain(units) not in {_plain(s) for s in spellings}:
        raise DataError(
            f"{da.name} in {', '.join(urls)} has units {units!r}; the canonical drivers need {DRIVER_UNITS[da.name]} "
            "(convert it, or give the ERA5 fields and let tamrl convert them)"
        )


def _plain(units: str) -> str:
    return units.replace("**", "").replace("^", "").replace(" ", "").lower()


def _daily(da: xr.DataArray, urls: Sequence[str]) -> xr.DataArray:
    """A canonical variable labelled by its UTC day, or DataError unless it has one step per day."""
    days = da.indexes["time"].floor("D")
    if days.has_duplicates or not days.is_monotonic_increasing:
        raise DataError(f"{da.name} in {', '.join(urls)} is not daily: give one value per day")
    return da.assign_coords(time=days)


ADAPTER = CanonicalAdapter()
