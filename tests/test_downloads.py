"""The flux answers users download: a bbox's period mean or total as a Cloud-Optimized GeoTIFF, a point series as
CoverageJSON and as CSV with its units and provenance, and the calibrated 90% interval of a point series.

On the tiny real cube of tests/test_service.py (the engine's job around Lake Garda, a calibrated checkpoint).
"""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
import zarr
from conftest import GARDA, served_cubes
from fastapi.testclient import TestClient
from rasterio.io import MemoryFile

from jobs import grid
from service.api import create_app
from service.downloads import GEOTIFF, POINT_FORMATS, to_covjson, to_csv
from service.routes.flux import BBOX_FORMATS
from service.settings import Settings
from tamrl.calibration import cube_bounds, sigma_factor

START, END = "2020-03-01", "2020-04-29"
POINT = {"lat": 45.62, "lon": 10.92}  # land east of the lake
WATER = {"lat": 45.62, "lon": 10.66}  # Lake Garda
BBOX = {"bbox": ",".join(map(str, GARDA)), "start": "2020-03-01", "end": "2020-03-31"}
pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part:UserWarning")


@pytest.fixture(scope="module")
def cubes(checkpoint, drivers, tmp_path_factory) -> Path:
    return served_cubes(tmp_path_factory.mktemp("cubes"), checkpoint, drivers, START, END)


def service(cubes: Path, **limits) -> Settings:
    return Settings(cubes=str(cubes), workers=0, **limits)


@pytest.fixture(scope="module")
def client(cubes):
    with TestClient(create_app(service(cubes))) as c:
        yield c


@pytest.fixture(scope="module")
def garda(cubes) -> xr.Dataset:
    return xr.open_zarr(cubes / "garda.zarr").load()


def at(ds: xr.Dataset, lat: float, lon: float) -> dict[str, int]:
    """The local indices of the cell holding (lat, lon)."""
    row, col = grid.cell_index(lat, lon)
    r0, c0 = grid.cell_index(float(ds.lat[0]), float(ds.lon[0]))
    return {"lat": row - r0, "lon": col - c0}


def opened(content: bytes) -> rasterio.DatasetReader:
    return MemoryFile(content).open()


def test_a_geotiff_of_the_period_mean_is_a_cog_on_the_cells_with_nodata_on_water(client, garda):
    response = client.get("/flux/bbox", params=BBOX | {"variables": "GPP,NEE", "format": "geotiff"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == GEOTIFF and response.headers["tamrl-cube"] == "garda"
    disposition = response.headers["content-disposition"]
    assert disposition == 'attachment; filename="garda_GPP-NEE_2020-03-01_2020-03-31.tif"'
    days = garda.sel(time=slice("2020-03-01", "2020-03-31"))
    with opened(response.content) as tif:
        assert tif.driver == "GTiff" and tif.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert tif.profile["tiled"] and tif.block_shapes == [(256, 256)] * 2
        assert tif.crs.to_epsg() == 4326 and tif.dtypes == ("float32", "float32") and np.isnan(tif.nodata)
        assert (tif.height, tif.width) == (garda.sizes["lat"], garda.sizes["lon"]) == (8, 16)
        assert tif.descriptions == ("GPP", "NEE") and tif.units == ("g C m-2 d-1", "g C m-2 d-1")
        west, north = tif.transform * (0, 0)
        assert (west, north) == pytest.approx((float(garda.lon_bnds.min()), float(garda.lat_bnds.max())), abs=1e-9)
        assert (tif.transform.a, tif.transform.e) == pytest.approx((0.05, -0.05), abs=1e-12)
        for r, c in [(0, 0), (3, 9), (7, 15)]:
            assert tif.xy(r, c) == pytest.approx((float(garda.lon[c]), float(garda.lat[r])), abs=1e-9)
        for band, name in enumerate(("GPP", "NEE"), start=1):
            expected = days[name].values.astype(np.float64).mean(axis=0)
            np.testing.assert_allclose(tif.read(band), expected, atol=1e-5, equal_nan=True)
            assert (np.isnan(tif.read(band)) == ~garda.land_mask.values.astype(bool)).all()
        water = at(garda, **WATER)
        assert np.isnan(tif.read(1)[water["lat"], water["lon"]])
        tags = tif.tags()
        assert tags["units"] == "g C m-2 d-1" and tags["aggregate"] == "mean" and tags["days"] == "31"
        assert (tags["start"], tags["end"], tags["cube"]) == ("2020-03-01", "2020-03-31", "garda")
        assert tags["synthetic"] == "True" and tags["warning"].startswith("SYNTHETIC")
        assert tags["checkpoint_sha256"] == client.get("/cubes/garda").json()["checkpoint_sha256"]
        assert "FLUXNET2015" in tags["attribution"]
        assert tif.tags(1)["variable"] == "GPP" and "mean" in tif.tags(1)["description"]


def test_a_geotiff_of_the_period_total_sums_the_days(client, garda):
    response = client.get("/flux/bbox", params=BBOX | {"variables": "RECO", "format": "geotiff", "aggregate": "total"})
    assert response.headers["content-disposition"].endswith('_RECO_2020-03-01_2020-03-31_total.tif"')
    expected = garda.RECO.sel(time=slice("2020-03-01", "2020-03-31")).values.astype(np.float64).sum(axis=0)
    with opened(response.content) as tif:
        np.testing.assert_allclose(tif.read(1), expected, rtol=1e-6, equal_nan=True)
        assert tif.tags()["units"] == tif.units[0] == "g C m-2" and tif.tags()["aggregate"] == "total"
        assert "sum of its daily values" in tif.tags(1)["description"]


def test_the_point_series_carries_the_calibrated_interval_of_cube_bounds(client, garda):
    body = client.get("/flux", params=POINT).json()
    cell = at(garda, **POINT)
    for name in ("GPP", "RECO", "NEE"):
        series = body["variables"][name]
        assert list(series) == ["values", "std", "p05", "p95"]
        lo, hi = (bound.isel(cell).values for bound in cube_bounds(garda, name))
        np.testing.assert_allclose(series["p05"], lo, atol=1e-5)
        np.testing.assert_allclose(series["p95"], hi, atol=1e-5)
        entry = json.loads(garda.attrs["tamrl_calibration"])["targets"][name]  # the formula, written out, on the
        width = np.array(series["std"]) * sigma_factor(3) + entry["floor"]  # answer's std rounded to 5 decimals,
        expected = series["values"] + entry["quantiles"][1] * width  # which q95 * sigma_factor (< 10) magnifies
        np.testing.assert_allclose(series["p95"], expected, atol=1e-4)
        assert (np.array(series["p05"]) < series["values"]).all() and (np.array(series["p95"]) > series["values"]).all()


def test_coverage_json_is_a_point_series_with_the_json_numbers(client):
    params = POINT | {"start": "2020-04-01", "end": "2020-04-10", "variables": "NEE,GPP"}
    body = client.get("/flux", params=params).json()
    response = client.get("/flux", params=params | {"format": "covjson"})
    assert response.headers["content-type"] == "application/prs.coverage+json"
    cov = response.json()
    assert cov["type"] == "Coverage"
    domain = cov["domain"]
    assert domain["type"] == "Domain" and domain["domainType"] == "PointSeries"
    assert set(domain["axes"]) == {"x", "y", "t"}
    assert domain["axes"]["x"]["values"] == [body["cell_lon"]] and domain["axes"]["y"]["values"] == [body["cell_lat"]]
    assert domain["axes"]["x"]["bounds"] == pytest.approx([body["cell_lon"] - 0.025, body["cell_lon"] + 0.025])
    assert domain["axes"]["t"]["values"] == body["time"] == [f"2020-04-{d:02d}" for d in range(1, 11)]
    systems = {tuple(r["coordinates"]): r["system"] for r in domain["referencing"]}
    assert systems[("x", "y")]["type"] == "GeographicCRS" and systems[("t",)]["type"] == "TemporalRS"
    columns = [f"{n}{s}" for n in ("NEE", "GPP") for s in ("", "_std", "_p05", "_p95")]
    assert list(cov["parameters"]) == list(cov["ranges"]) == columns
    for name, series in body["variables"].items():
        for key, values in series.items():
            column = name if key == "values" else f"{name}_{key}"
            parameter, range_ = cov["parameters"][column], cov["ranges"][column]
            assert parameter["type"] == "Parameter" and parameter["observedProperty"]["label"]["en"]
            assert parameter["unit"]["symbol"] == "g C m-2 d-1"
            assert range_ == {"type": "NdArray", "dataType": "float", "axisNames": ["t"], "shape": [10],
                              "values": values}  # fmt: skip
    assert "ensemble members" in cov["parameters"]["GPP"]["description"]["en"]
    assert "spread" in cov["parameters"]["GPP_std"]["description"]["en"]
    assert cov["tamrl:provenance"] == body["provenance"] and cov["tamrl:provenance"]["synthetic"] is True


def test_a_null_in_the_json_is_null_in_coverage_json_and_empty_in_csv(client):
    document = client.get("/flux", params=POINT | {"start": "2020-04-01", "end": "2020-04-03"}).json()
    gpp = document["variables"]["GPP"]
    gpp["values"] = np.array([gpp["values"][0], np.nan, gpp["values"][2]])  # as the route holds a missing day
    cov = json.loads(to_covjson(document))
    assert cov["ranges"]["GPP"]["values"] == [gpp["values"][0], None, gpp["values"][2]]
    table = pd.read_csv(io.BytesIO(to_csv(document)), comment="#", index_col=0)
    assert np.isnan(table.loc["2020-04-02", "GPP"]) and np.isfinite(table.loc["2020-04-02", "GPP_std"])


def test_the_point_csv_carries_units_provenance_and_the_json_numbers(client):
    params = POINT | {"start": "2020-04-01", "end": "2020-04-10", "variables": "NEE,GPP"}
    body = client.get("/flux", params=params).json()
    response = client.get("/flux", params=params | {"format": "csv"})
    assert response.headers["content-type"].startswith("text/csv")
    filename = f"garda_{body['cell_lat']:.3f}_{body['cell_lon']:.3f}_2020-04-01_2020-04-10.csv"
    assert response.headers["content-disposition"] == f'attachment; filename="{filename}"'
    header = dict(line[2:].split(": ", 1) for line in response.text.splitlines() if line.startswith("# "))
    assert header["units"] == "g C m-2 d-1" and header["cube"] == "garda"
    assert header["checkpoint_sha256"] == body["provenance"]["checkpoint_sha256"]
    assert header["synthetic"] == "True" and header["warning"].startswith("SYNTHETIC")
    assert "FLUXNET2015" in header["attribution"] and header["cell_lat"] == str(body["cell_lat"])
    table = pd.read_csv(io.StringIO(response.text), comment="#", index_col=0)
    assert list(table.columns) == [f"{n}{s}" for n in ("NEE", "GPP") for s in ("", "_std", "_p05", "_p95")]
    assert list(table.index) == body["time"]
    for name, series in body["variables"].items():
        for key, values in series.items():
            np.testing.assert_allclose(table[name if key == "values" else f"{name}_{key}"], values, atol=5.1e-5)


def test_a_cube_without_a_calibration_answers_without_an_interval(cubes, tmp_path):
    shutil.copytree(cubes / "garda.zarr", tmp_path / "plain.zarr")
    group = zarr.open_group(tmp_path / "plain.zarr", mode="r+")
    del group.attrs["tamrl_calibration"]
    with TestClient(create_app(service(tmp_path))) as plain:
        body = plain.get("/flux", params=POINT | {"variables": "GPP"}).json()
        assert list(body["variables"]["GPP"]) == ["values", "std"]
        csv = plain.get("/flux", params=POINT | {"variables": "GPP", "format": "csv"}).text
        assert list(pd.read_csv(io.StringIO(csv), comment="#", index_col=0).columns) == ["GPP", "GPP_std"]
        cov = plain.get("/flux", params=POINT | {"variables": "GPP", "format": "covjson"}).json()
        assert list(cov["parameters"]) == ["GPP", "GPP_std"]


@pytest.mark.parametrize(
    ("path", "params", "status", "words"),
    [
        ("/flux", POINT | {"format": "geojson"}, 422, "'json', 'csv' or 'covjson'"),
        ("/flux/bbox", BBOX | {"format": "png"}, 422, "'json', 'netcdf' or 'geotiff'"),
        ("/flux/bbox", BBOX | {"format": "netcdf", "aggregate": "total"}, 422, "format=netcdf has no aggregate"),
        ("/flux/bbox", BBOX | {"format": "geotiff", "aggregate": "median"}, 422, "'total' or 'mean'"),
        ("/flux/bbox", {"bbox": "0,0,1,1", "format": "geotiff"}, 404, "no cube holds the whole bbox"),
    ],
)
def test_bad_downloads_get_a_4xx_that_says_what_is_wrong(client, path, params, status, words):
    response = client.get(path, params=params)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_a_geotiff_over_the_limits_gets_413(cubes):
    with TestClient(create_app(service(cubes, max_aggregate_cells=1000, max_map_cells=100))) as small:
        values = small.get("/flux/bbox", params={"bbox": "10.4,45.4,10.8,45.6", "format": "geotiff"})
        assert values.status_code == 413 and "over the limit of 1,000" in values.json()["detail"]
        pixels = small.get("/flux/bbox", params=BBOX | {"format": "geotiff"})
        assert pixels.status_code == 413 and "the GeoTIFF would have over 100 pixels" in pixels.json()["detail"]


def test_the_format_parameters_offer_what_the_registries_hold(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path, registry in (("/flux", POINT_FORMATS), ("/flux/bbox", BBOX_FORMATS)):
        (param,) = [p for p in paths[path]["get"]["parameters"] if p["name"] == "format"]
        assert param["schema"]["enum"] == list(registry)
