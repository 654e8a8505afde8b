"""The forms a flux answer takes besides the JSON bodies: a point series as CSV or CoverageJSON, and a bbox's period
mean or total per cell as a Cloud-Optimized GeoTIFF.

Every form of a point series renders the one JSON document of ``GET /flux`` (`POINT_FORMATS`), so they all carry
the same numbers, units and provenance. A GeoTIFF band is a per-cell statistic over the days (`AGGREGATES`) of a
bbox subset (`service.queries.bbox_subset`), with the provenance in its tags.
"""

import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import orjson
import pandas as pd
import xarray as xr
from rasterio.io import MemoryFile
from rasterio.transform import Affine, from_bounds

from jobs import grid
from jobs.outputs import OUTPUTS, spread_of
from jobs.provenance import header_lines
from tamrl.features import TARGET_UNITS

GEOTIFF = "image/tiff; application=geotiff; profile=cloud-optimized"
COG_OPTIONS = {"BLOCKSIZE": 256, "COMPRESS": "DEFLATE", "PREDICTOR": "YES", "OVERVIEW_RESAMPLING": "AVERAGE"}
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"


@dataclass(frozen=True)
class Format:
    """A form of the point series: its media type, the file suffix of a download (None: an answer shown, not saved)
    and its renderer of the JSON document."""

    media_type: str
    suffix: str | None
    render: Callable[[dict[str, Any]], bytes]


@dataclass(frozen=True)
class Aggregate:
    """A per-cell statistic over a period's days: (days, lat, lon) -> (lat, lon), NaN where any day is NaN."""

    units: str
    reduce: Callable[[np.ndarray], np.ndarray]
    description: str
    name_suffix: str  # ends a GeoTIFF's file name, before ".tif"


AGGREGATES = {
    "mean": Aggregate(TARGET_UNITS, partial(np.mean, axis=0, dtype=np.float64),
                      "the mean of the cell's daily values over the period", ""),
    "total": Aggregate("g C m-2", partial(np.sum, axis=0, dtype=np.float64),
                       "the cell's total over the period: the sum of its daily values (g C per m2 of the cell)",
                       "_total"),
}  # fmt: skip
SERIES = {  # a flux's series in the JSON document -> what it is, for CoverageJSON
    "values": "{long_name}: daily mean of the ensemble members",
    "std": "{spread_long_name} (the spread, not the error)",
    "p05": "{long_name}: lower bound of the calibrated daily 90% interval",
    "p95": "{long_name}: upper bound of the calibrated daily 90% interval",
}


def to_json(document: dict[str, Any]) -> bytes:
    """JSON with numpy arrays as lists and NaN as null (orjson: about 10 times faster than json for these bodies)."""
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def column(name: str, series: str) -> str:
    """The column (CSV) or parameter (CoverageJSON) of a flux's series: ``GPP``, ``GPP_std``, ``GPP_p05``..."""
    return name if series == "values" else f"{name}_{series}"


def to_csv(document: dict[str, Any]) -> bytes:
    """The series as a table (date, then per flux its columns), below ``#`` lines with the provenance, the units and
    the cell, which ``pandas.read_csv(comment="#", index_col=0)`` skips. Values to 4 decimals, empty where null."""
    out = io.StringIO()
    header = {**document["provenance"], "units": document["units"],
              **{key: document[key] for key in ("lat", "lon", "cell_lat", "cell_lon", "igbp")}}  # fmt: skip
    out.write(header_lines(header))
    table = {column(name, key): values for name, series in document["variables"].items()
             for key, values in series.items()}  # fmt: skip
    pd.DataFrame(table, index=pd.Index(document["time"], name="date")).to_csv(out, float_format="%.4f")
    return out.getvalue().encode()


def to_covjson(document: dict[str, Any]) -> bytes:
    """The series as a CoverageJSON Coverage with a PointSeries domain (the cell's centre and edges, the days), a
    parameter and an NdArray range per column, and the provenance as the custom member ``tamrl:provenance``."""
    days, half = len(document["time"]), grid.RES / 2
    x, y = document["cell_lon"], document["cell_lat"]
    parameters, ranges = {}, {}
    for name, series in document["variables"].items():
        for key, values in series.items():
            parameters[column(name, key)] = _parameter(name, key, document["units"])
            ranges[column(name, key)] = {"type": "NdArray", "dataType": "float", "axisNames": ["t"],
                                         "shape": [days], "values": values}  # fmt: skip
    coverage = {
        "type": "Coverage",
        "domain": {
            "type": "Domain", "domainType": "PointSeries",
            "axes": {"x": {"values": [x], "bounds": [x - half, x + half]},
                     "y": {"values": [y], "bounds": [y - half, y + half]}, "t": {"values": document["time"]}},
            "referencing": [
                {"coordinates": ["x", "y"], "system": {"type": "GeographicCRS", "id": CRS84}},
                {"coordinates": ["t"], "system": {"type": "TemporalRS", "calendar": "Gregorian"}},
            ],
        },
        "parameters": parameters,
        "ranges": ranges,
        "tamrl:provenance": document["provenance"],
    }  # fmt: skip
    return to_json(coverage)


def _parameter(name: str, series: str, units: str) -> dict[str, Any]:
    label = SERIES[series].format(
        long_name=OUTPUTS[name].attrs["long_name"], spread_long_name=OUTPUTS[spread_of(name)].attrs["long_name"]
    )
    return {
        "type": "Parameter",
        "description": {"en": label},
        "observedProperty": {"id": column(name, series), "label": {"en": label}},
        "unit": {"label": {"en": units}, "symbol": units},
    }


POINT_FORMATS = {
    "json": Format("application/json", None, to_json),
    "csv": Format("text/csv", ".csv", to_csv),
    "covjson": Format("application/prs.coverage+json", None, to_covjson),
}


def geotiff(subset: xr.Dataset, variables: list[str], how: str, provenance: dict[str, Any]) -> bytes:
    """A Cloud-Optimized GeoTIFF of ``subset``'s period ``how`` (`AGGREGATES`) per cell: one float32 band per
    variable, described by its name, north up on the cells' edges in EPSG:4326, NaN (nodata) where a cell has no
    value on some day; the provenance, units and period in the tags."""
    aggregate = AGGREGATES[how]
    bands = np.stack([aggregate.reduce(subset[name].values) for name in variables]).astype(np.float32)
    start, end = subset.attrs["time_coverage_start"], subset.attrs["time_coverage_end"]
    about = {"units": aggregate.units, "aggregate": how, "description": aggregate.description,
             "start": start, "end": end, "days": subset.sizes["time"]}  # fmt: skip
    profile = {"driver": "COG", "count": len(variables), "height": bands.shape[1], "width": bands.shape[2],
               "dtype": "float32", "crs": "EPSG:4326", "transform": _transform(subset), "nodata": np.nan,
               **COG_OPTIONS}  # fmt: skip
    with MemoryFile() as memory:
        with memory.open(**profile) as tif:
            tif.write(bands)
            tif.update_tags(**provenance, **about)
            tif.units = [aggregate.units] * len(variables)
            for band, name in enumerate(variables, start=1):
                tif.set_band_description(band, name)
                tif.update_tags(band, variable=name, long_name=OUTPUTS[name].attrs["long_name"], **about)
        return memory.read()


def _transform(subset: xr.Dataset) -> Affine:
    """The cells' edges as a north-up geotransform (the grid's rows run north to south)."""
    lat, lon = subset["lat_bnds"].values, subset["lon_bnds"].values
    return from_bounds(lon.min(), lat.min(), lon.max(), lat.max(), width=len(lon), height=len(lat))
