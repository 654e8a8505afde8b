"""The MOD09GA adapter: one day's 500 m sinusoidal tiles as users receive them, averaged to the 0.05 deg cells.

Two deliveries are read:
- HDF4-EOS granules, one per tile and day, as LP DAAC and earthaccess deliver them
  (``MOD09GA.A2019182.h18v04.061.2020296001211.hdf``): the SDS ``sur_refl_b01_1`` .. ``sur_refl_b07_1``,
  ``state_1km_1`` and ``QC_500m_1`` on the grids of their ``StructMetadata.0`` (`jobs.hdfeos`);
- GeoTIFFs as AppEEARS delivers an area request, one per layer and day
  (``MOD09GA.061_sur_refl_b01_1_doy2019182_aid0001.tif``), in whatever projection was ordered.

Both go through `jobs.modis.mod09ga_tiles_to_drivers` (pixel binning, band means, the majority CLEAR flag). Its
option ``qc_500m`` says whether CLEAR also needs MODLAND QA "ideal" from ``QC_500m`` (as the tower flag does).
"""

import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import pandas as pd
import xarray as xr

from jobs.adapters.base import AdapterOptions
from jobs.grid import Bbox
from jobs.hdfeos import read_field
from jobs.modis import TileLayers, geotiff_layer, mod09ga_tiles_to_drivers

GRANULE = re.compile(r"MOD09GA\.A(?P<day>\d{7})\.h\d{2}v\d{2}\.\d{3}\.\d+\.hdf")
APPEEARS = re.compile(r"MOD09GA\.\d{3}_(?P<layer>sur_refl_b0[1-7]|state_1km|QC_500m)_1_doy(?P<day>\d{7})_aid\d+\.tif")


class Mod09gaOptions(AdapterOptions):
    """``qc_500m``: whether a clear pixel also needs MODLAND QA "ideal" in QC_500m (the tower flag's rule)."""

    qc_500m: bool = True


class Mod09gaAdapter:
    """MOD09GA granules (`GRANULE`) or AppEEARS GeoTIFFs (`APPEEARS`) to B01..B07 and CLEAR."""

    Options = Mod09gaOptions
    files = "MOD09GA.A2019182.h18v04.061.<production time>.hdf, or MOD09GA.061_<layer>_1_doy2019182_aid0001.tif"

    def day_of(self, path: str) -> pd.Timestamp | None:
        match = GRANULE.fullmatch(Path(path).name) or APPEEARS.fullmatch(Path(path).name)
        return pd.to_datetime(match["day"], format="%Y%j") if match else None

    def read(self, paths: Sequence[str], day: pd.Timestamp, bbox: Bbox, options: Mod09gaOptions) -> xr.Dataset:
        return mod09ga_tiles_to_drivers(_tiles(paths), day, bbox, options.qc_500m)


def _tiles(paths: Sequence[str]) -> dict[str, TileLayers]:
    """Each tile's name and layer reader: a granule per .hdf, an AppEEARS request per ``{layer}`` pattern."""
    tiles = {}
    for path in paths:
        name = Path(path).name
        if GRANULE.fullmatch(name):
            tiles[str(path)] = partial(_granule_layer, str(path))
        else:
            layer = APPEEARS.fullmatch(name).span("layer")
            pattern = str(Path(path).with_name(f"{name[: layer[0]]}{{layer}}{name[layer[1] :]}"))
            tiles[pattern] = partial(geotiff_layer, pattern)
    return tiles


def _granule_layer(path: str, layer: str) -> xr.DataArray:
    """MOD09GA ``layer`` of a granule: its first-layer SDS (``sur_refl_b01_1``, ``state_1km_1``, ``QC_500m_1``)."""
    return read_field(path, f"{layer}_1")


ADAPTER = Mod09gaAdapter()
