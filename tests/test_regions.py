"""Regions: GeoJSON in, covered cells and their weights out, checked against coverage fractions and areas on the
sphere computed by hand; and every malformed region refused with a message that says what to fix."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs import grid
from jobs.regions import ANTIMERIDIAN_NOTE, RegionLimits, cell_weights, parse_regions
from tamrl.errors import DataError, TooLargeError

R = grid.EARTH_RADIUS_M


def band_area_km2(west: float, south: float, east: float, north: float) -> float:
    """Area of a lat/lon rectangle on the sphere: R^2 dlon (sin north - sin south)."""
    return R**2 * math.radians(east - west) * (math.sin(math.radians(north)) - math.sin(math.radians(south))) / 1e6


def box(west: float, south: float, east: float, north: float) -> list[list[float]]:
    return [[west, south], [east, south], [east, north], [west, north], [west, south]]


def polygon(*rings) -> dict:
    return {"type": "Polygon", "coordinates": list(rings)}


def weights_of(geometry: dict):
    return cell_weights(parse_regions(geometry)[0])


def cell(lat_south: float, lon_west: float) -> tuple[int, int]:
    """Global row and column of the cell whose south-west corner is given."""
    return grid.cell_index(lat_south + 0.025, lon_west + 0.025)


def test_a_rectangle_on_cell_edges_covers_its_cells_whole_and_has_its_area_on_the_sphere():
    w = weights_of(polygon(box(10, 45, 10.5, 45.5)))
    assert len(w.rows) == 100 and np.allclose(w.coverage, 1)
    rows, cols = grid.bbox_slices((10, 45, 10.5, 45.5))
    assert set(zip(w.rows, w.cols, strict=True)) == {(r, c) for r in range(rows.start, rows.stop)
                                                     for c in range(cols.start, cols.stop)}  # fmt: skip
    assert w.area_km2 == pytest.approx(band_area_km2(10, 45, 10.5, 45.5), rel=1e-12)


def test_a_triangle_covers_the_diagonal_cells_by_half():
    # legs of two cells: the south-west cell whole, the two on the diagonal half each, the north-east one not at all
    w = weights_of(polygon([[10, 45], [10.1, 45], [10, 45.1], [10, 45]]))
    got = dict(zip(zip(w.rows, w.cols, strict=True), w.coverage, strict=True))
    expected = {cell(45, 10): 1.0, cell(45, 10.05): 0.5, cell(45.05, 10): 0.5}
    assert got.keys() == expected.keys()
    assert all(got[k] == pytest.approx(v, abs=1e-9) for k, v in expected.items())
    south, north = band_area_km2(10, 45, 10.05, 45.05), band_area_km2(10, 45.05, 10.05, 45.1)
    assert w.area_km2 == pytest.approx(south * 1.5 + north * 0.5, rel=1e-9)


def test_a_farm_inside_one_cell_gets_its_share_of_that_cell():
    w = weights_of(polygon(box(10.01, 45.01, 10.02, 45.02)))  # 0.01 x 0.01 deg, about 0.87 km2
    assert len(w.rows) == 1 and (w.rows[0], w.cols[0]) == cell(45, 10)
    assert w.coverage[0] == pytest.approx(0.04, rel=1e-6)  # exactextract's fractions are float32
    assert w.area_km2 == pytest.approx(0.04 * band_area_km2(10, 45, 10.05, 45.05), rel=1e-6)
    assert w.area_km2 == pytest.approx(band_area_km2(10.01, 45.01, 10.02, 45.02), rel=1e-3)


def test_a_hole_is_left_out():
    w = weights_of(polygon(box(10, 45, 11, 46), box(10.25, 45.25, 10.75, 45.75)[::-1]))
    assert len(w.rows) == 400 - 100
    hole = cell(45.5, 10.5)
    assert hole not in set(zip(w.rows, w.cols, strict=True))
    assert w.area_km2 == pytest.approx(band_area_km2(10, 45, 11, 46) - band_area_km2(10.25, 45.25, 10.75, 45.75))


def test_a_multipolygon_is_the_sum_of_its_parts():
    a, b = box(10, 45, 10.33, 45.21), box(10.5, 45.02, 10.77, 45.4)
    whole = weights_of({"type": "MultiPolygon", "coordinates": [[a], [b]]})
    parts = [weights_of(polygon(a)), weights_of(polygon(b))]
    assert whole.area_km2 == pytest.approx(sum(p.area_km2 for p in parts), rel=1e-12)
    assert len(whole.rows) == sum(len(p.rows) for p in parts)


def test_a_ring_across_the_antimeridian_is_split_and_keeps_its_area():
    region = parse_regions(polygon([[179.5, 10], [-179.5, 10], [-179.5, 11], [179.5, 11], [179.5, 10]]))[0]
    assert region.notes == (ANTIMERIDIAN_NOTE,)
    w = cell_weights(region)
    assert w.area_km2 == pytest.approx(band_area_km2(0, 10, 1, 11), rel=1e-9)
    assert set(w.cols) == set(range(7190, 7200)) | set(range(0, 10))


def test_features_keep_their_ids_and_properties():
    collection = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "farm-7", "properties": {"owner": "x"}, "geometry": polygon(box(10, 45, 10.1, 45.1))},
        {"type": "Feature", "properties": None, "geometry": polygon(box(11, 45, 11.1, 45.1))},
    ]}  # fmt: skip
    regions = parse_regions(json.dumps(collection).encode())
    assert [(r.index, r.id, r.properties) for r in regions] == [(0, "farm-7", {"owner": "x"}), (1, None, {})]


BAD = {
    "invalid JSON": (b'{"type": "Polygon", ', DataError, "not valid JSON"),
    "a ring of 3 positions": (polygon([[0, 0], [1, 0], [0, 0]]), DataError, "at least 4"),
    "an open ring": (polygon([[0, 0], [1, 0], [1, 1], [0, 1]]), DataError, "same start and end"),
    "a longitude off the globe": (polygon(box(179, 0, 181, 1)), DataError, "off the globe"),
    "a latitude off the globe": (polygon(box(0, 89, 1, 91)), DataError, "off the globe"),
    "a bow tie": (polygon([[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]), DataError, "Self-intersection"),
    "a point": ({"type": "Point", "coordinates": [0, 0]}, DataError, "does not match"),
    "no feature": ({"type": "FeatureCollection", "features": []}, DataError, "holds no feature"),
    "not an object": (b"[1, 2]", DataError, "not GeoJSON polygons"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_regions_are_refused_with_what_to_fix(name):
    data, error, message = BAD[name]
    with pytest.raises(error, match=message):
        parse_regions(data)


def test_the_limits_on_features_and_vertices_are_named():
    square = {"type": "Feature", "properties": {}, "geometry": polygon(box(0, 0, 1, 1))}
    many = {"type": "FeatureCollection", "features": [square] * 3}
    with pytest.raises(TooLargeError, match="3 features, over the limit of 2"):
        parse_regions(many, RegionLimits(features=2))
    with pytest.raises(TooLargeError, match="15 vertices, over the limit of 10"):
        parse_regions(many, RegionLimits(vertices=10))


@pytest.mark.parametrize(
    "geometry",
    [
        {"type": "MultiPolygon", "coordinates": []},
        {"type": "Polygon", "coordinates": []},
        {"type": "MultiPolygon", "coordinates": [[]]},
        {"type": "Feature", "geometry": None, "properties": {}},
    ],
)
def test_empty_geometries_are_refused(geometry):
    with pytest.raises(DataError, match="has no polygon"):
        parse_regions(geometry)


def test_a_sliver_with_no_measurable_area_is_refused():
    with pytest.raises(DataError, match="no area to total"):
        weights_of(polygon([[10.01, 45.01], [10.01 + 1e-7, 45.01], [10.01, 45.01 + 1e-7], [10.01, 45.01]]))


def test_a_band_round_the_globe_is_not_taken_for_an_antimeridian_crossing():
    region = parse_regions(polygon(box(-180, 89, 180, 90)))[0]  # edges from -180 to 180 run along the globe's edge
    w = cell_weights(region)
    assert region.notes == () and len(w.rows) == 20 * grid.N_LON
    assert w.area_km2 == pytest.approx(band_area_km2(-180, 89, 180, 90), rel=1e-9)


coordinate = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-400, 400), st.floats(-2, 2))
ring = st.lists(st.lists(coordinate, min_size=1, max_size=3), min_size=0, max_size=8)
geometry = st.fixed_dictionaries({
    "type": st.sampled_from(["Polygon", "MultiPolygon", "Point", "Feature"]),
    "coordinates": st.one_of(st.lists(ring, max_size=3), st.lists(st.lists(ring, max_size=2), max_size=2)),
})  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(geometry)
def test_any_json_gets_regions_or_a_domain_error_never_a_crash(document):
    closed = json.loads(json.dumps(document))  # JSON round trip, as a body arrives (NaN and Infinity included)
    try:
        for region in parse_regions(closed):
            cell_weights(region)
    except (DataError, TooLargeError):
        pass
