"""jobs.grid: the global 0.05 deg grid. Expected values are worked out by hand or with exact decimal arithmetic."""

import math
from decimal import Decimal

import numpy as np
import pytest

from jobs import grid
from tamrl.errors import DataError


def test_coordinates_are_the_nearest_floats_to_the_decimal_centres():
    lat, lon = grid.lat_coords(), grid.lon_coords()
    assert lat.shape == (3600,) and lon.shape == (7200,)
    assert lat[0] == 89.975 and lat[-1] == -89.975 and lon[0] == -179.975 and lon[-1] == 179.975
    expected_lat = [float(Decimal("89.975") - Decimal("0.05") * i) for i in range(3600)]
    expected_lon = [float(Decimal("-179.975") + Decimal("0.05") * j) for j in range(7200)]
    np.testing.assert_array_equal(lat, expected_lat)
    np.testing.assert_array_equal(lon, expected_lon)


def test_bounds_are_contiguous_and_enclose_the_centres():
    lat_b, lon_b = grid.lat_bounds(), grid.lon_bounds()
    assert lat_b.shape == (3600, 2) and lon_b.shape == (7200, 2)
    assert (lat_b[0, 0], lat_b[-1, 1], lon_b[0, 0], lon_b[-1, 1]) == (90, -90, -180, 180)
    # CF: the shared edge of neighbouring cells is the very same number
    np.testing.assert_array_equal(lat_b[1:, 0], lat_b[:-1, 1])
    np.testing.assert_array_equal(lon_b[1:, 0], lon_b[:-1, 1])
    np.testing.assert_allclose(lat_b.mean(axis=1), grid.lat_coords(), atol=1e-12)
    np.testing.assert_allclose(lon_b.mean(axis=1), grid.lon_coords(), atol=1e-12)


@pytest.mark.parametrize(
    ("bbox", "rows", "cols"),
    [
        ((-180, -90, 180, 90), (0, 3600), (0, 7200)),  # the globe
        ((0, 0, 10, 10), (1600, 1800), (3600, 3800)),  # edges on cell boundaries: lat 9.975..0.025, lon 0.025..9.975
        ((-180, 80, -179.9, 90), (0, 200), (0, 2)),  # the north-west corner
        ((179.95, -90, 180, -89.95), (3599, 3600), (7199, 7200)),  # the south-east corner cell alone
        ((0.025, 0.025, 0.075, 0.075), (1798, 1800), (3600, 3602)),  # edges on centres: those cells are in
        ((10.01, 50.01, 10.04, 50.04), (799, 800), (3800, 3801)),  # inside one cell, around its centre
        ((-0.06, -0.06, 0.06, 0.06), (1799, 1801), (3599, 3601)),  # centres +-0.025 in, +-0.075 out
    ],
)
def test_bbox_slices_by_hand(bbox, rows, cols):
    assert grid.bbox_slices(bbox) == (slice(*rows), slice(*cols))


def test_bbox_slices_select_exactly_the_centres_inside():
    lat, lon = grid.lat_coords(), grid.lon_coords()
    rng = np.random.default_rng(0)
    for _ in range(200):
        west, east = np.sort(rng.uniform(-180, 180, 2))
        south, north = np.sort(rng.uniform(-90, 90, 2))
        rows, cols = grid.bbox_slices((west, south, east, north))
        assert rows == slice(*np.flatnonzero((lat >= south) & (lat <= north))[[0, -1]] + [0, 1])
        assert cols == slice(*np.flatnonzero((lon >= west) & (lon <= east))[[0, -1]] + [0, 1])


@pytest.mark.parametrize(
    ("bbox", "problem"),
    [
        ((10, 0, 5, 10), "west < east"),
        ((170, 0, -170, 10), "antimeridian"),
        ((0, 10, 10, 10), "south < north"),
        ((-181, 0, 0, 10), "-180 <= west"),
        ((0, 0, 10, 91), "north <= 90"),
        ((0, -90.5, 10, 0), "-90 <= south"),
        ((10.01, 50.01, 10.02, 50.02), "no 0.05 deg cell centre"),
        ((0, 0, float("nan"), 10), "west < east"),
        ((0, 0, 10), "not four numbers"),
    ],
)
def test_bad_bboxes_raise(bbox, problem):
    with pytest.raises(DataError, match=problem):
        grid.bbox_slices(bbox)


def test_cell_index():
    assert grid.cell_index(89.99, -179.99) == (0, 0)
    assert grid.cell_index(0, 0) == (1800, 3600)  # on a shared edge: the cell to the south and east
    assert grid.cell_index(-90, 180) == (3599, 7199)  # the last edges belong to the last cells
    assert grid.cell_index(50.024, 10.026) == (799, 3800)
    with pytest.raises(DataError, match="outside the globe"):
        grid.cell_index(91, 0)


def test_cell_areas_sum_to_the_sphere():
    areas = grid.cell_area_m2(grid.lat_coords())
    total = grid.N_LON * math.fsum(areas)
    assert total == pytest.approx(4 * math.pi * grid.EARTH_RADIUS_M**2, rel=1e-9)
    np.testing.assert_allclose(areas, areas[::-1], rtol=1e-9)  # north-south symmetric
    side = grid.EARTH_RADIUS_M * math.radians(grid.RES)
    assert grid.cell_area_m2(0.025) == pytest.approx(side**2, rel=1e-6)  # near the equator: a square of 5.56 km
