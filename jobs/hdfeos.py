"""HDF4-EOS grid granules (MODIS level-3 files as LP DAAC and earthaccess deliver them), read with pyhdf.

`read_field` returns one scientific data set (SDS) of a granule as raw integers on its grid. The grid comes from
the granule's ``StructMetadata.0`` attribute (ODL text): the grid whose ``DataField`` list names the SDS gives its
size (``XDim``, ``YDim``), corners (``UpperLeftPointMtrs``, ``LowerRightMtrs``) and ``Projection``:

- ``GCTP_SNSOID`` (MOD09GA tiles): x/y pixel-centre coordinates in metres and the sinusoidal CRS on the sphere of
  ``ProjParams[0]`` (6371007.181 m), written with rioxarray, so the pixels can be placed on the globe;
- ``GCTP_GEO`` (MOD09CMG): lat/lon cell-centre coordinates, the corners being packed degrees (DDDMMMSSS.SS).

Values outside the SDS's ``valid_range`` are set to its ``_FillValue``, so readers need only the fill to tell a
missing value; ``scale_factor`` and ``_FillValue`` are kept as attributes (the sinusoidal fields also carry the
fill as their rioxarray nodata).
"""

import re
from dataclasses import dataclass

import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from pyhdf.error import HDF4Error
from pyhdf.SD import SD, SDC

from tamrl.errors import DataError

STRUCT_METADATA = "StructMetadata.0"
_GRID = re.compile(r"GROUP=(GRID_\d+)\s(.*?)END_GROUP=\1\s", re.S)
_VALUE = re.compile(r"^\s*(\w+)=(.*?)\s*$", re.M)
_FIELD = re.compile(r'DataFieldName="([^"]+)"')


@dataclass(frozen=True)
class Grid:
    """One grid of ``StructMetadata.0``: its name, size, corners (metres or packed degrees) and projection."""

    name: str
    shape: tuple[int, int]  # YDim, XDim
    upper_left: tuple[float, float]
    lower_right: tuple[float, float]
    projection: str
    radius: float  # ProjParams[0]: the sphere of the sinusoidal projection [m]

    def centres(self, dms: bool) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre y (rows) and x (columns) coordinates; in degrees from packed DMS corners if ``dms``."""
        (x0, y0), (x1, y1) = self.upper_left, self.lower_right
        if dms:
            x0, y0, x1, y1 = map(_degrees, (x0, y0, x1, y1))
        rows, cols = self.shape
        return y0 + (np.arange(rows) + 0.5) * (y1 - y0) / rows, x0 + (np.arange(cols) + 0.5) * (x1 - x0) / cols


def field_grid(path: str, name: str) -> Grid:
    """The grid of SDS ``name`` in granule ``path`` (from its ``StructMetadata.0``), without reading its values."""
    sd = _open(path)
    try:
        return _grid_of(sd, path, name)
    finally:
        sd.end()


def read_field(path: str, name: str, window: tuple[slice, slice] = (slice(None), slice(None))) -> xr.DataArray:
    """SDS ``name`` of granule ``path`` (rows and columns of ``window`` only) on its grid, as the module describes.

    Returns raw integers with dims (y, x) on a sinusoidal grid, (lat, lon) on a geographic one. Raises DataError
    naming the file when it is no HDF4 file, lacks the SDS or its grid, or has a projection tamrl does not read.
    """
    sd = _open(path)
    try:
        grid = _grid_of(sd, path, name)
        sds = sd.select(name)
        values, attrs = np.asarray(sds[window[0], window[1]]), sds.attributes()
    finally:
        sd.end()
    return _field(values, attrs, grid, window, name)


def _open(path: str) -> SD:
    try:
        return SD(str(path), SDC.READ)
    except HDF4Error as exc:
        raise DataError(f"cannot read {path} as HDF4 ({exc}); give the .hdf granule as LP DAAC delivers it") from exc


def _grid_of(sd: SD, path: str, name: str) -> Grid:
    """The grid of ``StructMetadata.0`` that lists SDS ``name``, or DataError."""
    if name not in sd.datasets():
        found = ", ".join(sorted(sd.datasets())) or "none"
        raise DataError(f"{path} has no SDS {name!r} (it has {found}); give the product's original granule")
    text = sd.attributes().get(STRUCT_METADATA)
    if text is None:
        raise DataError(f"{path} has no {STRUCT_METADATA} attribute: it is not an HDF-EOS grid granule")
    for match in _GRID.finditer(text):
        if name in _FIELD.findall(match[2]):
            return _parse_grid(match[2], path)
    raise DataError(f"{path}: no grid of its {STRUCT_METADATA} lists {name!r}; give the product's original granule")


def _parse_grid(body: str, path: str) -> Grid:
    """A `Grid` from the ODL text of one ``GROUP=GRID_n``."""
    values = dict(_VALUE.findall(body))
    try:
        return Grid(
            name=values["GridName"].strip('"'),
            shape=(int(values["YDim"]), int(values["XDim"])),
            upper_left=_pair(values["UpperLeftPointMtrs"]),
            lower_right=_pair(values["LowerRightMtrs"]),
            projection=values["Projection"],
            radius=float(values.get("ProjParams", "(0)").strip("()").split(",")[0]),
        )
    except (KeyError, ValueError) as exc:
        raise DataError(f"{path}: cannot read a grid of its {STRUCT_METADATA} ({exc!r})") from exc


def _pair(text: str) -> tuple[float, float]:
    x, y = text.strip("()").split(",")
    return float(x), float(y)


def _degrees(dms: float) -> float:
    """Degrees from the packed DDDMMMSSS.SS of HDF-EOS geographic grids: -180000000.0 is -180 deg."""
    value = abs(dms)
    whole, minutes = value // 1e6, (value % 1e6) // 1e3
    return float(np.copysign(whole + minutes / 60 + (value % 1e3) / 3600, dms))


def _field(values: np.ndarray, attrs: dict, grid: Grid, window: tuple[slice, slice], name: str) -> xr.DataArray:
    """The raw values on their grid's coordinates, outside valid_range set to the fill, with CRS where projected."""
    fill = attrs.get("_FillValue")
    if "valid_range" in attrs and fill is not None:
        low, high = attrs["valid_range"]
        values = np.where((values < low) | (values > high), np.asarray(fill, values.dtype), values)
    keep = {key: attrs[key] for key in ("scale_factor", "_FillValue") if key in attrs}
    if grid.projection == "GCTP_GEO":
        lat, lon = grid.centres(dms=True)
        return xr.DataArray(values, {"lat": lat[window[0]], "lon": lon[window[1]]}, ("lat", "lon"), name, keep)
    if grid.projection != "GCTP_SNSOID":
        raise DataError(f"{name} lies on a {grid.projection} grid; tamrl reads GCTP_SNSOID and GCTP_GEO grids")
    y, x = grid.centres(dms=False)
    da = xr.DataArray(values, {"y": y[window[0]], "x": x[window[1]]}, ("y", "x"), name, keep)
    crs = f"+proj=sinu +lon_0=0 +x_0=0 +y_0=0 +R={grid.radius} +units=m +no_defs"
    da = da.rio.write_crs(crs)
    return da.rio.write_nodata(fill) if fill is not None else da
