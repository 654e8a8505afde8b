"""The MOD09CMG adapter: the daily 0.05 deg climate-modelling-grid granule as LP DAAC and earthaccess deliver it
(``MOD09CMG.A2019182.061.2020296001211.hdf``, HDF4-EOS), cut to a bbox.

The SDS ``Coarse Resolution Surface Reflectance Band 1`` .. ``Band 7``, ``Coarse Resolution State QA`` and
``Coarse Resolution QA`` are read over the bbox's cells only (`jobs.hdfeos`, lat/lon from ``StructMetadata.0``) and
decoded by `jobs.modis.mod09cmg_to_drivers`. Cells of the bbox the granule does not cover are NaN (CLEAR 0). It has
no options.
"""

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from jobs import grid
from jobs.adapters.base import AdapterOptions
from jobs.grid import Bbox
from jobs.hdfeos import field_grid, read_field
from jobs.modis import mod09cmg_to_drivers
from tamrl.errors import DataError
from tamrl.features import BANDS, CLEAR

GRANULE = re.compile(r"MOD09CMG\.A(?P<day>\d{7})\.\d{3}\.\d+\.hdf")
FIELDS = (
    *(f"Coarse Resolution Surface Reflectance Band {i}" for i in range(1, len(BANDS) + 1)),
    "Coarse Resolution State QA",
    "Coarse Resolution QA",
)


class Mod09cmgOptions(AdapterOptions):
    """MOD09CMG has no options."""


class Mod09cmgAdapter:
    """MOD09CMG granules (`GRANULE`) to B01..B07 and CLEAR on the cells of a bbox."""

    Options = Mod09cmgOptions
    files = "MOD09CMG.A2019182.061.<production time>.hdf"

    def day_of(self, path: str) -> pd.Timestamp | None:
        match = GRANULE.fullmatch(Path(path).name)
        return pd.to_datetime(match["day"], format="%Y%j") if match else None

    def read(self, paths: Sequence[str], day: pd.Timestamp, bbox: Bbox, options: Mod09cmgOptions) -> xr.Dataset:
        if len(paths) != 1:
            raise DataError(f"{len(paths)} MOD09CMG granules of {day:%Y-%m-%d}: {', '.join(paths)}; give one a day")
        path = str(paths[0])
        rows, cols = grid.bbox_slices(bbox)
        lat, lon = grid.lat_coords()[rows], grid.lon_coords()[cols]
        window = _window(path, lat, lon)
        ds = xr.Dataset({name: read_field(path, name, window) for name in FIELDS})
        return mod09cmg_to_drivers(ds, day).reindex(lat=lat, lon=lon, fill_value={CLEAR: 0.0})


def _window(path: str, lat: np.ndarray, lon: np.ndarray) -> tuple[slice, slice]:
    """The granule's rows and columns whose cell centres are among ``lat`` x ``lon``, or DataError if none are."""
    rows_lat, cols_lon = field_grid(path, FIELDS[0]).centres(dms=True)
    rows = np.flatnonzero(np.isin(np.round(rows_lat, 3), np.round(lat, 3)))
    cols = np.flatnonzero(np.isin(np.round(cols_lon, 3), np.round(lon, 3)))
    if not len(rows) or not len(cols):
        raise DataError(f"the MOD09CMG granule {path} holds no cell of the bbox; give a bbox it covers")
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


ADAPTER = Mod09cmgAdapter()
