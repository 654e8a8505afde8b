"""What a driver adapter is: the two roles a source can play, and what a gridded one hands `jobs.drivers`.

A **gridded** adapter (`GridAdapter`) names the variables of its source and turns an opened NetCDF/Zarr dataset that
holds any of them, lazily, into canonical daily variables; `jobs.drivers.GridDrivers` tries them on every driver
grid. A **delivered** adapter (`FileAdapter`) reads its product's files as users receive them (HDF4-EOS granules,
AppEEARS GeoTIFFs), one day at a time, into canonical daily variables on the 0.05 deg cells of a bbox; `jobs.ingest`
writes those into a store.
Either way the adapter owns its options: a closed, frozen pydantic model (unknown keys are errors), collected into
`jobs.adapters.DriverOptions`.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import pandas as pd
import xarray as xr
from pydantic import BaseModel, ConfigDict

from jobs.grid import Bbox


class AdapterOptions(BaseModel):
    """Base of every adapter's options: closed (unknown keys are errors) and frozen (hashable, so cacheable)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Canonical:
    """The canonical daily variables a gridded adapter made of one dataset, with the options it used (defaults
    resolved, e.g. the detected ssrd accumulation) and a note on anything it dropped."""

    arrays: dict[str, xr.DataArray]  # canonical name -> lazy (time, lat, lon), one step per UTC day
    options: AdapterOptions
    note: str = ""


class GridAdapter(Protocol):
    """A source read in place from NetCDF/Zarr by `jobs.drivers.GridDrivers`."""

    Options: type[AdapterOptions]
    source: str  # what it reads, for messages: "ERA5 fields"
    variables: tuple[str, ...]  # the dataset variables it reads: a dataset holding any of them is of this source

    def canonical(self, ds: xr.Dataset, urls: Sequence[str], options: AdapterOptions) -> Canonical:
        """The canonical daily variables of ``ds`` (opened from ``urls``), or DataError saying what to fix."""
        ...


class FileAdapter(Protocol):
    """A product whose delivered files `jobs.ingest` turns into a canonical store, day by day."""

    Options: type[AdapterOptions]
    files: str  # what its file names look like, for messages

    def day_of(self, path: str) -> pd.Timestamp | None:
        """The UTC day of a file of this product, from its name; None for a file that is not of this product."""
        ...

    def read(self, paths: Sequence[str], day: pd.Timestamp, bbox: Bbox, options: AdapterOptions) -> xr.Dataset:
        """B01..B07 and CLEAR (time: ``day``, lat, lon) on the 0.05 deg cells of ``bbox`` from one day's files."""
        ...
