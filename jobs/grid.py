"""The global 0.05 deg grid of every engine input and output (MCD12C1's and FLUXCOM-X-BASE's grid).

Rows run north to south, lat 89.975 .. -89.975; columns run west to east, lon -179.975 .. 179.975. Cell (i, j)
spans lat 90 - 0.05 (i + 1) .. 90 - 0.05 i and lon -180 + 0.05 j .. -180 + 0.05 (j + 1). Coordinates are the float64
values nearest to those decimals, so every layer built on them aligns exactly and ``.sel`` finds them.
"""

import math

import numpy as np
from numpy.typing import ArrayLike

from tamrl.errors import DataError

RES = 0.05  # deg
PER_DEG = 20  # cells per degree; multiplying by it keeps edges on whole degrees exact, dividing by RES may not
N_LAT = 3600
N_LON = 7200
EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG), for cell areas on a sphere
_MILLI = 1000  # coordinates are multiples of 0.025 deg, so integers in thousandths of a degree are exact
_EPS = 1e-9  # in cells: absorbs float error where a bbox edge lies exactly on a cell centre

Bbox = tuple[float, float, float, float]  # (W, S, E, N) in degrees


def shift(cells: slice, origin: int) -> slice:
    """``cells`` (global indices) relative to index ``origin``, e.g. the first row of a tile or window."""
    return slice(cells.start - origin, cells.stop - origin)


def lat_coords() -> np.ndarray:
    """Cell-centre latitudes, 89.975 .. -89.975 (north to south), float64."""
    return (89_975 - 50 * np.arange(N_LAT)) / _MILLI


def lon_coords() -> np.ndarray:
    """Cell-centre longitudes, -179.975 .. 179.975 (west to east), float64."""
    return (-179_975 + 50 * np.arange(N_LON)) / _MILLI


def lat_bounds() -> np.ndarray:
    """CF ``lat_bnds`` (3600, 2): each row (north edge, south edge), so row i's south edge is row i+1's north edge."""
    edges = (90_000 - 50 * np.arange(N_LAT + 1)) / _MILLI
    return np.column_stack([edges[:-1], edges[1:]])


def lon_bounds() -> np.ndarray:
    """CF ``lon_bnds`` (7200, 2): each row (west edge, east edge)."""
    edges = (-180_000 + 50 * np.arange(N_LON + 1)) / _MILLI
    return np.column_stack([edges[:-1], edges[1:]])


def bbox_slices(bbox: tuple[float, float, float, float]) -> tuple[slice, slice]:
    """Row and column index ranges of the cells whose centres lie inside ``bbox`` = (W, S, E, N), edges included.

    A bbox whose edges lie on cell boundaries (multiples of 0.05 deg) selects exactly the cells it covers.
    Raises DataError for a bbox that is inverted, leaves -180..180 / -90..90, or holds no cell centre.
    """
    west, south, east, north = _checked(bbox)
    rows = _centre_range((90 - north) * PER_DEG, (90 - south) * PER_DEG)
    cols = _centre_range((west + 180) * PER_DEG, (east + 180) * PER_DEG)
    if rows.start >= rows.stop or cols.start >= cols.stop:
        raise DataError(
            f"bbox {bbox} holds no 0.05 deg cell centre (centres lie at odd multiples of 0.025 deg); widen it"
        )
    return rows, cols


def _checked(bbox: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """``bbox`` as four floats, or DataError naming what is wrong with it."""
    try:
        west, south, east, north = (float(v) for v in bbox)
    except (TypeError, ValueError) as exc:
        raise DataError(f"bbox {bbox!r} is not four numbers; give (west, south, east, north) in degrees") from exc
    if not (-180 <= west < east <= 180):
        raise DataError(
            f"bbox west {west} / east {east} must satisfy -180 <= west < east <= 180; "
            "split a bbox that crosses the antimeridian in two"
        )
    if not (-90 <= south < north <= 90):
        raise DataError(f"bbox south {south} / north {north} must satisfy -90 <= south < north <= 90")
    return west, south, east, north


def _centre_range(start: float, stop: float) -> slice:
    """Indices k with centre k + 0.5 in [start, stop], positions counted in cells from the grid's first edge."""
    first = math.ceil(start - 0.5 - _EPS)
    last = math.floor(stop - 0.5 + _EPS)
    return slice(first, last + 1)


def cell_index(lat: float, lon: float) -> tuple[int, int]:
    """Row and column of the cell holding the point (lat, lon); a point on a shared edge goes south and east."""
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise DataError(f"point lat={lat}, lon={lon} is outside the globe; give lat -90..90, lon -180..180")
    row = min(math.floor((90 - lat) * PER_DEG), N_LAT - 1)
    col = min(math.floor((lon + 180) * PER_DEG), N_LON - 1)
    return row, col


def cell_area_m2(lat: ArrayLike) -> np.ndarray:
    """Area [m2] of a 0.05 deg cell centred at ``lat`` [deg], on a sphere of radius EARTH_RADIUS_M.

    R^2 * dlon * (sin(lat_north) - sin(lat_south)), with dlon in radians: exact on the sphere, so the cells'
    areas sum to 4 pi R^2.
    """
    half = np.radians(RES / 2)
    phi = np.radians(np.asarray(lat, dtype=np.float64))
    return EARTH_RADIUS_M**2 * np.radians(RES) * (np.sin(phi + half) - np.sin(phi - half))
