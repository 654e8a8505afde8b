"""Totals over regions on a real engine cube, against hand computations: an aligned rectangle, a triangle, a farm,
a hole, a MultiPolygon, rows that add up, the members' spread, the calibrated range, water, and the CLI.

The cube is conftest's tiny job around Lake Garda from 2019-12-20 to 2020-02-10: three calendar months (two of
them partial) and two years, so every kind of row boundary is exercised.
"""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import GARDA, upscale_job

from jobs import grid
from jobs.regions import cell_weights, parse_regions
from jobs.reports import report
from jobs.totals import G_PER_TG, CubeSource, TotalsQuery, totals
from service.cli import main
from tamrl.calibration import sigma_factor
from tamrl.errors import DataError, TooLargeError

START, END = "2019-12-20", "2020-02-10"
DAYS = 53
LIMIT = 10**9
pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part:UserWarning")


@pytest.fixture(scope="module")
def cube_path(checkpoint, drivers, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("totals") / "garda.zarr"
    upscale_job(checkpoint, drivers, GARDA, START, END, out, workers=0, chunk=(None, 4, 4), progress=False)
    return out


@pytest.fixture(scope="module")
def cube(cube_path) -> tuple[CubeSource, xr.Dataset]:
    return CubeSource.open(str(cube_path)), xr.open_zarr(cube_path).load()


def box(west: float, south: float, east: float, north: float) -> list[list[float]]:
    return [[west, south], [east, south], [east, north], [west, north], [west, south]]


def polygon(*rings) -> dict:
    return {"type": "Polygon", "coordinates": list(rings)}


def run(source: CubeSource, geojson: dict, **query) -> list:
    regions = parse_regions(geojson)
    return totals(source, regions, [cell_weights(r) for r in regions], TotalsQuery(**query), LIMIT)


def by_hand(ds: xr.Dataset, weights: dict[tuple[int, int], float], name: str = "GPP", days=slice(None)) -> float:
    """Tg C: the sum over cells of coverage x cell area x the cell's daily flux summed over ``days`` (NaN: none)."""
    r0, c0 = grid.cell_index(float(ds.lat[0]), float(ds.lon[0]))
    total = 0.0
    for (row, col), coverage in weights.items():
        series = ds[name].values[days, row - r0, col - c0].astype(np.float64)
        area = float(grid.cell_area_m2(grid.lat_coords()[row]))
        total += coverage * area * np.nansum(series)
    return total / G_PER_TG


def cells_of(bbox) -> dict[tuple[int, int], float]:
    rows, cols = grid.bbox_slices(bbox)
    return {(r, c): 1.0 for r in range(rows.start, rows.stop) for c in range(cols.start, cols.stop)}


def at(lat_south: float, lon_west: float) -> tuple[int, int]:
    return grid.cell_index(lat_south + 0.025, lon_west + 0.025)


def test_a_rectangle_on_cell_edges_is_the_sum_of_its_cells(cube):
    source, ds = cube
    (result,) = run(source, polygon(box(10.5, 45.5, 10.8, 45.7)))
    row = result.values[0]
    for name in ("GPP", "RECO", "NEE"):
        assert row[name]["total"] == pytest.approx(by_hand(ds, cells_of((10.5, 45.5, 10.8, 45.7)), name), rel=1e-6)
    assert result.rows[0].start.isoformat() == START and result.rows[0].end.isoformat() == END
    computed = ~np.isnan(ds.GPP.sel(lat=slice(45.7, 45.5), lon=slice(10.5, 10.8)).values[0])
    area = grid.cell_area_m2(ds.lat.sel(lat=slice(45.7, 45.5)).values)[:, None] * np.ones_like(computed)
    assert result.computed_cells == int(computed.sum()) and result.cells == 24
    assert result.computed_area_km2 == pytest.approx(float(area[computed].sum()) / 1e6)
    assert result.area_km2 == pytest.approx(float(area.sum()) / 1e6)
    mean = row["GPP"]["total"] * G_PER_TG / (result.computed_area_km2 * 1e6) / DAYS
    assert row["GPP"]["mean"] == pytest.approx(mean)


def test_a_triangle_weighs_its_diagonal_cells_by_half(cube):
    source, ds = cube
    (result,) = run(source, polygon([[10.9, 45.5], [11.0, 45.5], [10.9, 45.6], [10.9, 45.5]]))
    weights = {at(45.5, 10.9): 1.0, at(45.5, 10.95): 0.5, at(45.55, 10.9): 0.5}
    assert result.values[0]["GPP"]["total"] == pytest.approx(by_hand(ds, weights), rel=1e-6)


def test_a_farm_gets_its_cell_s_flux_density_times_its_own_area(cube):
    source, ds = cube
    (result,) = run(source, polygon(box(10.91, 45.61, 10.92, 45.62)))  # inside the land cell at 45.6 N, 10.9 E
    r = 6_371_008.8
    farm_m2 = r**2 * math.radians(0.01) * (math.sin(math.radians(45.62)) - math.sin(math.radians(45.61)))
    density = float(ds.GPP.sel(lat=45.625, lon=10.925, method="nearest").sum())  # g C m-2 over the days
    # the covered fraction is planar in lon/lat, so a part of a cell is weighed at the cell's mean cos(lat): within
    # tan(lat) x 0.05 deg / 2 of its true area, 4.5e-4 here
    assert result.values[0]["GPP"]["total"] == pytest.approx(density * farm_m2 / G_PER_TG, rel=4.5e-4)
    assert result.area_km2 == pytest.approx(farm_m2 / 1e6, rel=4.5e-4)


def test_a_hole_removes_exactly_its_cells(cube):
    source, _ = cube
    outer, hole = box(10.5, 45.5, 11.0, 45.75), box(10.6, 45.55, 10.8, 45.65)
    (with_hole,) = run(source, polygon(outer, hole[::-1]))
    (whole,) = run(source, polygon(outer))
    (inner,) = run(source, polygon(hole))
    for name in ("GPP", "NEE"):
        expected = whole.values[0][name]["total"] - inner.values[0][name]["total"]
        assert with_hole.values[0][name]["total"] == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert with_hole.area_km2 == pytest.approx(whole.area_km2 - inner.area_km2)


def test_a_multipolygon_is_the_sum_of_its_parts(cube):
    source, _ = cube
    a, b = box(10.52, 45.41, 10.73, 45.57), box(10.81, 45.63, 11.13, 45.79)
    (both,) = run(source, {"type": "MultiPolygon", "coordinates": [[a], [b]]}, freq="month")
    parts = [run(source, polygon(p), freq="month")[0] for p in (a, b)]
    for r in range(3):
        for stat in ("total", "total_cal_p05"):
            expected = sum(p.values[r]["RECO"][stat] for p in parts)
            assert both.values[r]["RECO"][stat] == pytest.approx(expected, rel=1e-9)


def test_months_and_years_add_up_to_the_period_and_days_to_months(cube):
    source, _ = cube
    region = polygon(box(10.4, 45.4, 11.2, 45.8))
    (whole,) = run(source, region)
    (months,) = run(source, region, freq="month")
    (years,) = run(source, region, freq="year")
    (days,) = run(source, region, freq="day", start="2020-01-01", end="2020-01-31")
    assert [(r.start.isoformat(), r.end.isoformat()) for r in months.rows] == [
        ("2019-12-20", "2019-12-31"), ("2020-01-01", "2020-01-31"), ("2020-02-01", "2020-02-10")]  # fmt: skip
    assert [r.days.stop - r.days.start for r in years.rows] == [12, 41]
    for name in ("GPP", "RECO", "NEE"):
        total = whole.values[0][name]["total"]
        assert sum(v[name]["total"] for v in months.values) == pytest.approx(total, rel=1e-9)
        assert sum(v[name]["total"] for v in years.values) == pytest.approx(total, rel=1e-9)
        assert sum(v[name]["total"] for v in days.values) == pytest.approx(months.values[1][name]["total"], rel=1e-9)


def test_the_members_spread_is_the_spread_of_the_members_own_totals(cube):
    source, ds = cube
    bbox = (10.5, 45.5, 10.8, 45.7)
    (result,) = run(source, polygon(box(*bbox)), freq="month")
    rows, cols = grid.bbox_slices(bbox)
    r0, c0 = grid.cell_index(float(ds.lat[0]), float(ds.lon[0]))
    members = ds.GPP_members.values[:, :, rows.start - r0 : rows.stop - r0, cols.start - c0 : cols.stop - c0]
    area = grid.cell_area_m2(grid.lat_coords()[rows])[:, None]
    month_days = [12, 31, 10]
    for k, row in enumerate(result.values):
        own = np.nansum(members[k] * area, axis=(1, 2)) * month_days[k] / G_PER_TG  # each member's total
        assert row["GPP"]["total"] == pytest.approx(own.mean(), rel=1e-5)
        assert row["GPP"]["total_std"] == pytest.approx(own.std(), rel=1e-4)
        assert row["GPP"]["total_p05"] == pytest.approx(np.percentile(own, 5), rel=1e-5)
        assert row["GPP"]["total_p95"] == pytest.approx(np.percentile(own, 95), rel=1e-5)
        assert row["GPP"]["total_p05"] < row["GPP"]["total"] < row["GPP"]["total_p95"]


def test_the_calibrated_range_sums_the_calibrated_daily_bounds(cube):
    source, ds = cube
    bbox = (10.5, 45.5, 10.8, 45.7)
    (result,) = run(source, polygon(box(*bbox)))
    entry = json.loads(ds.attrs["tamrl_calibration"])["targets"]["NEE"]
    total, spread = by_hand(ds, cells_of(bbox), "NEE"), by_hand(ds, cells_of(bbox), "NEE_std")
    floor = entry["floor"] * result.computed_area_km2 * 1e6 * DAYS / G_PER_TG
    width = spread * sigma_factor(3) + floor
    row = result.values[0]["NEE"]
    assert row["total_cal_p05"] == pytest.approx(total + entry["quantiles"][0] * width, rel=1e-5)
    assert row["total_cal_p95"] == pytest.approx(total + entry["quantiles"][1] * width, rel=1e-5)


def test_water_is_area_not_computed_and_a_lake_has_no_total(cube):
    source, ds = cube
    (lake,) = run(source, polygon(box(10.65, 45.6, 10.7, 45.65)))  # Lake Garda
    assert lake.computed_area_km2 == 0 and lake.computed_cells == 0 and lake.area_km2 > 0
    assert lake.values[0]["GPP"]["total"] == 0 and lake.values[0]["GPP"]["mean"] is None
    (shore,) = run(source, polygon(box(10.4, 45.4, 11.2, 45.8)))
    water = np.isnan(ds.GPP.values[0])
    area = grid.cell_area_m2(ds.lat.values)[:, None] * np.ones_like(water)
    assert shore.not_computed_area_km2 == pytest.approx(float(area[water].sum()) / 1e6)
    assert shore.cells - shore.computed_cells == int(water.sum()) > 0


def test_requests_that_leave_the_cube_or_its_limits_are_refused(cube):
    source, _ = cube
    with pytest.raises(DataError, match="reaches outside cube garda"):
        run(source, polygon(box(11.1, 45.7, 11.3, 45.9)))
    with pytest.raises(DataError, match=r"leaves the cube, which covers 2019-12-20\.\.2020-02-10"):
        run(source, polygon(box(10.5, 45.5, 10.8, 45.7)), start="2019-12-01")
    regions = parse_regions(polygon(box(10.5, 45.5, 10.8, 45.7)))
    with pytest.raises(TooLargeError, match="over the limit of 1,000"):
        totals(source, regions, [cell_weights(regions[0])], TotalsQuery(), 1000)


def test_the_report_states_units_the_nee_rule_and_provenance(cube):
    source, _ = cube
    query = TotalsQuery(freq="year")
    document = report(source, query, run(source, polygon(box(10.5, 45.5, 10.8, 45.7)), freq="year"))
    assert document["units"] == {"total": "Tg C", "mean": "g C m-2 d-1", "area": "km2"}
    assert "RECO - GPP" in document["nee_rule"]
    provenance = document["provenance"]
    assert provenance["synthetic"] is True and "SYNTHETIC" in provenance["warning"]
    assert "FLUXNET2015" in provenance["attribution"] and len(provenance["checkpoint_sha256"]) == 64
    (feature,) = document["features"]
    assert [row["days"] for row in feature["rows"]] == [12, 41]


def test_cli_totals_writes_csv_and_json_with_the_same_numbers(cube_path, tmp_path, capsys):
    regions = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "east", "properties": {}, "geometry": polygon(box(10.81, 45.5, 11.13, 45.79))},
        {"type": "Feature", "id": "farm", "properties": {}, "geometry": polygon(box(10.91, 45.61, 10.92, 45.62))},
    ]}  # fmt: skip
    path = tmp_path / "regions.geojson"
    path.write_text(json.dumps(regions))
    base = ["totals", "--cube", str(cube_path), "--regions", str(path), "--freq", "month"]
    assert main([*base, "--out", str(tmp_path / "t.csv")]) == 0
    assert main([*base, "--variables", "GPP,NEE", "--out", str(tmp_path / "t.json")]) == 0
    assert "wrote 2 feature(s) x 3 row(s)" in capsys.readouterr().out
    text = (tmp_path / "t.csv").read_text()
    assert "# synthetic: True" in text and "# attribution: Trained on FLUXNET2015" in text
    table = pd.read_csv(tmp_path / "t.csv", comment="#")
    assert len(table) == 2 * 3 * 3
    document = json.loads((tmp_path / "t.json").read_text())
    farm = document["features"][1]
    csv_farm = table[(table.feature_id == "farm") & (table.variable == "NEE")]
    expected = [row["NEE"]["total"] for row in farm["rows"]]
    np.testing.assert_allclose(csv_farm["total_TgC"], expected, rtol=1e-7)
    assert main([*base[:-2], "--out", str(tmp_path / "t.txt")]) == 2
    path.write_text('{"type": "Polygon"')
    assert main([*base, "--out", str(tmp_path / "t.csv")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
