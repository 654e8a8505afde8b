"""The HTTP service on a tiny real cube: every endpoint, every bad input, jobs, a real uvicorn server, and a fuzz run.

The cube is the engine's tiny job (conftest's checkpoint and synthetic drivers around Lake Garda), written into the
served folder; jobs run in the service process (``workers=0``) so they finish in seconds.
"""

import io
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import schemathesis
import xarray as xr
from conftest import GARDA, job_outcome, served_cubes, upscale_job
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance, use_after_free
from schemathesis.generation.meta import ParameterLocation

from jobs import engine, grid
from jobs.records import JobStore
from service.api import create_app
from service.routes.flux import CUBE_HEADER
from service.schemas import UpscaleRequest
from service.settings import Settings

START, END = "2020-03-01", "2020-04-29"
POINT = {"lat": 45.62, "lon": 10.92}  # land east of the lake
WATER = {"lat": 45.62, "lon": 10.66}  # Lake Garda
pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part:UserWarning")


@pytest.fixture(scope="module")
def cubes(checkpoint, drivers, tmp_path_factory) -> Path:
    return served_cubes(tmp_path_factory.mktemp("cubes"), checkpoint, drivers, START, END)


def service(cubes: Path, checkpoint, drivers, **kw) -> Settings:
    return Settings(cubes=str(cubes), drivers=[drivers], workers=0, checkpoints={"tiny": str(checkpoint)}, **kw)


@pytest.fixture(scope="module")
def client(cubes, checkpoint, drivers):
    with TestClient(create_app(service(cubes, checkpoint, drivers))) as c:
        yield c


@pytest.fixture(scope="module")
def garda(cubes) -> xr.Dataset:
    return xr.open_zarr(cubes / "garda.zarr").load()


def cell(ds: xr.Dataset, lat: float, lon: float) -> xr.Dataset:
    row, col = grid.cell_index(lat, lon)
    r0, c0 = grid.cell_index(float(ds.lat[0]), float(ds.lon[0]))
    return ds.isel(lat=row - r0, lon=col - c0)


def test_cubes_lists_the_complete_cubes(client):
    (info,) = client.get("/cubes").json()
    assert info["name"] == "garda" and info["bbox"] == list(GARDA)
    assert (info["start"], info["end"]) == (START, END)
    assert info["variables"] == ["GPP", "RECO", "NEE", "GPP_std", "RECO_std", "NEE_std"]
    assert info["synthetic"] is True and info["ensemble_size"] == 3 and info["members_monthly"] is True
    assert client.get("/cubes/garda").json() == info
    assert client.get("/cubes/nope").status_code == 404


def test_point_query_returns_the_cell_series_with_spread_and_provenance(client, garda):
    body = client.get("/flux", params=POINT).json()
    expected = cell(garda, **POINT)
    assert body["cube"] == "garda" and body["units"] == "g C m-2 d-1"
    assert abs(body["cell_lat"] - POINT["lat"]) <= 0.025 and abs(body["cell_lon"] - POINT["lon"]) <= 0.025
    assert len(body["time"]) == 60 and body["time"][0] == START
    for name in ("GPP", "RECO", "NEE"):
        np.testing.assert_allclose(body["variables"][name]["values"], expected[name].values, atol=1e-5)
        np.testing.assert_allclose(body["variables"][name]["std"], expected[f"{name}_std"].values, atol=1e-5)
    assert min(body["variables"]["GPP"]["values"]) >= 0
    assert body["provenance"]["synthetic"] is True and "FLUXNET2015" in body["provenance"]["references"]


def test_point_query_subsets_days_and_variables_and_writes_csv(client, garda):
    params = POINT | {"start": "2020-04-01", "end": "2020-04-10", "variables": "NEE,GPP"}
    body = client.get("/flux", params=params).json()
    assert list(body["variables"]) == ["NEE", "GPP"] and len(body["time"]) == 10
    csv = client.get("/flux", params=params | {"format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    lines = [line for line in csv.text.strip().splitlines() if not line.startswith("#")]  # units, provenance
    assert lines[0] == "date,NEE,NEE_std,NEE_p05,NEE_p95,GPP,GPP_std,GPP_p05,GPP_p95" and len(lines) == 11
    expected = float(cell(garda, **POINT).NEE.sel(time="2020-04-01"))
    assert float(lines[1].split(",")[1]) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({"lat": 91, "lon": 0}, 422, "lat"),
        ({"lat": "north", "lon": 0}, 422, "lat"),
        ({"lat": 45, "lon": 181}, 422, "lon"),
        ({"lat": 45}, 422, "lon"),
        (WATER, 404, "not computed"),
        ({"lat": 0, "lon": 0}, 404, "outside every cube; cubes: garda bbox (W,S,E,N) (10.4, 45.4, 11.2, 45.8)"),
        ({"lat": 45.45, "lon": -179.99}, 404, "outside every cube"),  # the other side of the antimeridian
        (POINT | {"start": "2020-04-10", "end": "2020-04-01"}, 422, "before start"),
        (POINT | {"start": "2021-01-01"}, 404, "garda covers 2020-03-01..2020-04-29"),
        (POINT | {"start": "2020-13-01"}, 422, "start"),
        (POINT | {"variables": "GPP,FCH4"}, 422, "FCH4; choose from GPP, RECO, NEE"),
        (POINT | {"format": "xml"}, 422, "json"),
        (POINT | {"cube": "nope"}, 404, "available: garda"),
    ],
)
def test_bad_point_queries_get_a_4xx_that_says_what_is_wrong(client, params, status, words):
    response = client.get("/flux", params=params)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_bbox_subset_as_json_and_netcdf(client, garda):
    params = {"bbox": "10.8,45.5,11.0,45.7", "start": "2020-03-01", "end": "2020-03-05", "variables": "GPP"}
    body = client.get("/flux/bbox", params=params).json()
    assert len(body["lat"]) == 4 and len(body["lon"]) == 4 and len(body["time"]) == 5
    assert body["lat"][0] > body["lat"][-1]  # north to south
    expected = garda.GPP.sel(lat=body["lat"], lon=body["lon"], time=slice("2020-03-01", "2020-03-05")).values
    got = np.array(body["variables"]["GPP"], dtype=float)
    np.testing.assert_allclose(got, expected, atol=1e-5, equal_nan=True)
    assert set(body["variables"]) == {"GPP", "GPP_std"}
    nc = client.get("/flux/bbox", params=params | {"format": "netcdf"})
    assert nc.headers["content-type"] == "application/x-netcdf"
    ds = xr.open_dataset(io.BytesIO(nc.content), engine="h5netcdf")
    np.testing.assert_allclose(ds.GPP.values, expected, atol=1e-6, equal_nan=True)
    assert ds.attrs["synthetic"] == 1 and "FLUXNET2015" in ds.attrs["references"]


def test_bbox_total_and_mean_are_area_weighted_with_spread_and_areas(client, garda):
    params = {"bbox": ",".join(map(str, GARDA)), "aggregate": "total"}
    total = client.get("/flux/bbox", params=params).json()
    area = grid.cell_area_m2(garda.lat.values)[None, :, None]
    computed = np.isfinite(garda.GPP.values[0])
    for name in ("GPP", "RECO", "NEE"):
        expected = float(np.nansum(garda[name].values * area)) / 1e12
        answer = total["variables"][name]
        assert answer["value"] == pytest.approx(expected, rel=1e-5) and answer["units"] == "Tg C"
        assert answer["std"] > 0 and answer["p05"] < answer["value"] < answer["p95"]
        assert answer["cal_p05"] < answer["p05"] and answer["cal_p95"] > answer["p95"]
    assert total["days"] == 60 and total["cells"] == 128
    assert total["computed_cells"] == int(computed.sum()) and total["not_computed_cells"] == int((~computed).sum()) > 0
    cell_areas = np.broadcast_to(area[0], computed.shape)
    assert total["computed_area_km2"] == pytest.approx(float(cell_areas[computed].sum()) / 1e6)
    assert total["area_km2"] == pytest.approx(total["computed_area_km2"] + total["not_computed_area_km2"])
    assert "RECO - GPP" in total["nee_rule"] or "own NEE" in total["nee_rule"]
    mean = client.get("/flux/bbox", params=params | {"aggregate": "mean"}).json()
    gpp = mean["variables"]["GPP"]
    scale = 1e12 / (total["computed_area_km2"] * 1e6) / 60
    assert gpp["value"] == pytest.approx(total["variables"]["GPP"]["value"] * scale)
    assert gpp["std"] == pytest.approx(total["variables"]["GPP"]["std"] * scale)
    assert gpp["units"] == "g C m-2 d-1"
    assert float(np.nanmin(garda.GPP.values)) <= gpp["value"] <= float(np.nanmax(garda.GPP.values))


def test_a_rectangle_on_cell_edges_posted_as_a_region_equals_the_bbox_total(client):
    bbox = (10.5, 45.5, 10.8, 45.7)
    ring = [[10.5, 45.5], [10.8, 45.5], [10.8, 45.7], [10.5, 45.7], [10.5, 45.5]]
    region = client.post("/flux/region", json={"type": "Polygon", "coordinates": [ring]}).json()
    total = client.get("/flux/bbox", params={"bbox": ",".join(map(str, bbox)), "aggregate": "total"}).json()
    (feature,) = region["features"]
    (row,) = feature["rows"]
    assert (row["start"], row["end"], row["days"]) == (START, END, 60)
    for name in ("GPP", "RECO", "NEE"):
        assert row[name]["total"] == pytest.approx(total["variables"][name]["value"], rel=1e-9)
        assert row[name]["total_std"] == pytest.approx(total["variables"][name]["std"], rel=1e-9)
    assert feature["computed_area_km2"] == pytest.approx(total["computed_area_km2"], rel=1e-9)
    assert feature["area_km2"] == pytest.approx(total["area_km2"], rel=1e-9)


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({"bbox": "11,45.5,10.8,45.7"}, 422, "west < east"),
        ({"bbox": "10.8,45.7,11.0,45.5"}, 422, "south < north"),
        ({"bbox": "10.8,45.5,11.0"}, 422, "four"),
        ({"bbox": "a,b,c,d"}, 422, "numbers"),
        ({"bbox": "10.8,45.5,10.81,45.51"}, 422, "holds no 0.05 deg cell centre"),
        ({"bbox": "0,0,1,1"}, 404, "no cube holds the whole bbox"),
        ({"bbox": "10,45,11,46"}, 404, "no cube holds the whole bbox"),
        ({"bbox": "10.8,45.5,11.0,45.7", "aggregate": "median"}, 422, "total"),
        ({"bbox": "10.8,45.5,11.0,45.7", "format": "zarr"}, 422, "netcdf"),
    ],
)
def test_bad_bbox_queries_get_a_4xx_that_says_what_is_wrong(client, params, status, words):
    response = client.get("/flux/bbox", params=params)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_oversized_requests_get_413(cubes, checkpoint, drivers):
    with TestClient(create_app(service(cubes, checkpoint, drivers, max_cells=1000, max_map_cells=10))) as small:
        response = small.get("/flux/bbox", params={"bbox": ",".join(map(str, GARDA))})
        assert response.status_code == 413 and "over the limit of 1,000" in response.json()["detail"]
        assert small.get("/flux/map.png", params={"bbox": ",".join(map(str, GARDA))}).status_code == 413
        body, headers = b"{" + b" " * 20_000 + b"}", {"content-type": "application/json"}
        too_big = small.post("/upscale", content=body, headers=headers)
        assert too_big.status_code == 413


def test_map_png(client):
    response = client.get("/flux/map.png", params={"bbox": ",".join(map(str, GARDA)), "variable": "NEE"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content[:8] == b"\x89PNG\r\n\x1a\n" and len(response.content) > 10_000


JOB = {"bbox": [10.4, 45.4, 10.8, 45.8], "start": "2020-04-01", "end": "2020-04-10", "checkpoint": "tiny",
       "output": "west_garda", "support_years": [2019]}  # fmt: skip


def test_a_job_runs_to_success_and_its_cube_is_served_at_once(client):
    response = client.post("/upscale", json=JOB)
    assert response.status_code == 202
    job_id = response.json()["id"]
    assert response.headers["location"] == f"/jobs/{job_id}"
    assert response.json()["state"] in ("accepted", "running", "successful")
    again = client.post("/upscale", json=JOB)
    assert again.status_code == 202 and again.json()["id"] == job_id  # the same request is the same job
    job = job_outcome(client.get, f"/jobs/{job_id}")
    assert job["state"] == "successful", job
    assert job["progress"]["tiles_done"] == job["progress"]["tiles_total"] == 1
    assert job["links"]["cube"] == "/cubes/west_garda" and job["finished"] and job["error"] is None
    assert client.get("/cubes/west_garda").json()["bbox"] == JOB["bbox"]
    body = client.get("/flux", params=POINT | {"cube": "west_garda"})
    assert body.status_code == 404  # POINT lies east of this cube's bbox
    west = client.get("/flux", params={"lat": 45.5, "lon": 10.52, "cube": "west_garda"}).json()
    assert len(west["time"]) == 10 and west["time"][0] == "2020-04-01"
    assert job_id in [j["id"] for j in client.get("/jobs").json()]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"output": "../escape"}, "plain name"),
        ({"output": "/tmp/abs"}, "plain name"),
        ({"output": "s3://bucket/x"}, "plain name"),
        ({"output": "a/b"}, "plain name"),
        ({"checkpoint": "../../etc/passwd"}, "checkpoint"),
        ({"checkpoint": "nope"}, "no checkpoint 'nope'; choose from default"),
        ({"bbox": [10.8, 45.4, 10.4, 45.8]}, "west"),
        ({"end": "2020-03-01"}, "before start"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_job_requests_are_refused(client, change, words):
    response = client.post("/upscale", json=JOB | change)
    assert response.status_code == 422, response.text
    assert words in response.json()["detail"]


def test_a_job_whose_drivers_fall_short_is_refused_with_the_reason(client, cubes):
    late = JOB | {"output": "late", "start": "2021-01-01", "end": "2021-01-02"}
    refused = client.post("/upscale", json=late)
    assert refused.status_code == 422 and "do not cover" in refused.json()["detail"]
    assert str(cubes) not in refused.json()["detail"]
    assert "late" not in [job["output"] for job in client.get("/jobs").json()]


def test_another_request_onto_an_output_being_written_is_a_conflict(client):
    store: JobStore = client.app.state.store
    held = UpscaleRequest(**JOB | {"output": "busy", "end": "2020-04-02"}).job_request()
    record, _ = store.submit(held, "busy")  # a live job that the runner never saw
    response = client.post("/upscale", json=JOB | {"output": "busy"})
    assert response.status_code == 409 and record.id in response.json()["detail"]
    store.dismiss(record.id)
    assert client.delete(f"/jobs/{record.id}").json()["state"] == "dismissed"  # deleting twice is harmless
    assert client.get("/jobs/nope").status_code == 404


def test_delete_stops_a_running_job_between_tiles(client, monkeypatch):
    entered, gate, real = threading.Event(), threading.Event(), engine.compute_part

    def held(part, job):
        entered.set()
        gate.wait(30)
        return real(part, job)

    monkeypatch.setattr(engine, "compute_part", held)
    job_id = client.post("/upscale", json=JOB | {"bbox": list(GARDA), "output": "stopped"}).json()["id"]
    assert entered.wait(30)  # the job is inside its first tile
    assert client.delete(f"/jobs/{job_id}").json()["state"] == "dismissed"
    gate.set()
    deadline = time.monotonic() + 30
    while client.get(f"/jobs/{job_id}").json()["progress"]["tiles_done"] < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    job = client.get(f"/jobs/{job_id}").json()
    assert job["state"] == "dismissed" and job["progress"] == {"tiles_done": 1, "tiles_total": 1}, job
    assert client.get("/cubes/stopped").status_code == 404  # stopped after the tile, so never finalized
    assert client.delete(f"/jobs/{job_id}").status_code == 200


def test_jobs_need_the_token_when_one_is_configured(cubes, checkpoint, drivers):
    with TestClient(create_app(service(cubes, checkpoint, drivers, token="s3cret"))) as locked:
        assert locked.post("/upscale", json=JOB | {"output": "t"}).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert locked.post("/upscale", json=JOB | {"output": "t"}, headers=wrong).status_code == 401
        right = {"Authorization": "Bearer s3cret"}
        job_id = locked.post("/upscale", json=JOB | {"output": "t"}, headers=right).json()["id"]
        for path in ("/jobs", f"/jobs/{job_id}"):  # records show what clients asked for: token holders only
            assert locked.get(path).status_code == 401 and locked.get(path, headers=wrong).status_code == 401
            assert locked.get(path, headers=right).status_code == 200
        assert locked.delete(f"/jobs/{job_id}").status_code == 401
        assert locked.delete(f"/jobs/{job_id}", headers=right).status_code in (200, 409)
        assert locked.get("/flux", params=POINT).status_code == 200  # queries stay open


def test_a_job_left_running_by_a_killed_service_resumes_on_restart(cubes, checkpoint, drivers, tmp_path):
    settings = service(tmp_path / "cubes", checkpoint, drivers)
    store = JobStore(settings.job_database)
    record, _ = store.submit(UpscaleRequest(**JOB).job_request(), "resumed")
    store.start(record.id)  # the service died while this job ran
    with TestClient(create_app(settings)) as restarted:
        job = job_outcome(restarted.get, f"/jobs/{record.id}")
        assert job["state"] == "successful"
        assert restarted.get("/cubes/resumed").status_code == 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_real_server_runs_a_job_and_serves_its_cube(checkpoint, drivers, tmp_path):
    port = free_port()
    env = os.environ | {"TAMRL_CHECKPOINTS": f'{{"tiny": "{checkpoint}"}}'}
    command = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--cubes", str(tmp_path),
               "--drivers", drivers, "--workers", "0"]  # fmt: skip
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(f"{base}/cubes", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        response = httpx.post(f"{base}/upscale", json=JOB)
        assert response.status_code == 202
        location = response.headers["location"]
        for _ in range(300):
            job = httpx.get(f"{base}{location}").json()
            if job["state"] not in ("accepted", "running"):
                break
            time.sleep(0.2)
        assert job["state"] == "successful", job
        point = httpx.get(f"{base}/flux", params={"lat": 45.5, "lon": 10.52}).json()
        assert point["cube"] == "west_garda" and len(point["variables"]["GPP"]["values"]) == 10
        assert httpx.get(f"{base}/docs").status_code == 200
    finally:
        server.terminate()
        server.wait(10)


FUZZ_EXAMPLES = 25  # per operation: bounded so CI stays quick
TOKEN = "s3cret"


def with_token(case) -> dict[str, str]:
    """The job token as a header, unless the case's headers are deliberately invalid (a missing Authorization
    header must then stay missing, and get 401)."""
    negative = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
    return {} if negative else {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def locked(cubes, checkpoint, drivers):
    """The service with a job token, so the fuzzer also checks that invalid tokens are refused."""
    with TestClient(create_app(service(cubes, checkpoint, drivers, token=TOKEN))) as c:
        yield c


def test_fuzzed_requests_never_get_a_5xx_and_match_the_schema(locked):
    schema = schemathesis.openapi.from_asgi("/openapi.json", locked.app)
    calls = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call(headers=with_token(case))
            calls.append(response.status_code)
            assert response.status_code < 500, f"{case.method} {case.formatted_path} {case.query}: {response.text}"
            # every default check but positive_data_acceptance: reversed dates, a point on water or a bbox off the
            # grid are schema-valid and rightly refused
            case.validate_response(response, excluded_checks=[positive_data_acceptance])

        check()
    print(f"stateless run: {len(calls)} calls")
    assert len(calls) >= 100 and not [c for c in calls if c >= 500]


def test_a_cube_rewritten_by_a_job_is_reopened(checkpoint, drivers, tmp_path):
    root = tmp_path / "cubes"
    run = dict(workers=0, chunk=(None, 4, 4), progress=False)
    upscale_job(checkpoint, drivers, GARDA, START, "2020-03-10", root / "again.zarr", **run)
    with TestClient(create_app(service(root, checkpoint, drivers))) as c:
        assert len(c.get("/flux", params=POINT).json()["time"]) == 10
        upscale_job(checkpoint, drivers, GARDA, START, "2020-03-20", root / "again.zarr", overwrite=True, **run)
        assert c.get("/cubes/again").json()["end"] == "2020-03-20"
        assert len(c.get("/flux", params=POINT).json()["time"]) == 20


def test_the_mean_over_water_is_null_not_an_error(client, garda):
    c = cell(garda, **WATER)
    lat, lon = float(c.lat), float(c.lon)
    box = f"{lon - 0.025:.3f},{lat - 0.025:.3f},{lon + 0.025:.3f},{lat + 0.025:.3f}"  # exactly that cell
    params = {"bbox": box, "cube": "garda"}  # west_garda, written by a job above, holds the cell too
    body = client.get("/flux/bbox", params=params | {"aggregate": "mean"}).json()
    assert body["computed_cells"] == 0 and body["not_computed_cells"] == 1 and body["variables"]["GPP"]["value"] is None
    assert body["variables"]["GPP"]["std"] is None and body["computed_area_km2"] == 0 < body["area_km2"]
    total = client.get("/flux/bbox", params=params | {"aggregate": "total"}).json()
    assert total["variables"]["GPP"]["value"] == 0


def test_subsets_describe_themselves_and_hide_server_paths(client, cubes):
    params = {"bbox": "10.8,45.5,11.0,45.7", "start": "2020-03-02", "end": "2020-03-04", "format": "netcdf"}
    ds = xr.open_dataset(io.BytesIO(client.get("/flux/bbox", params=params).content), engine="h5netcdf")
    assert (ds.attrs["time_coverage_start"], ds.attrs["time_coverage_end"]) == ("2020-03-02", "2020-03-04")
    assert "drivers" not in ds.attrs and str(cubes) not in str(ds.attrs)
    refused = client.get("/flux/bbox", params=params | {"aggregate": "total"})
    assert refused.status_code == 422 and "format=netcdf has no aggregate" in refused.json()["detail"]


def test_every_error_body_is_a_problem(client):
    for response, status in [(client.get("/nowhere"), 404), (client.put("/cubes"), 405)]:
        assert response.status_code == status and response.json()["status"] == status and response.json()["detail"]
    reversed_dates = client.post("/upscale", json=JOB | {"start": "2020-04-10", "end": "2020-04-01"})
    assert reversed_dates.json()["detail"] == "request: end 2020-04-01 is before start 2020-04-10"
    chunks = (b" " * 4096 for _ in range(8))  # 32 KiB without a Content-Length: sent chunked
    chunked = client.post("/upscale", content=chunks, headers={"content-type": "application/json"})
    assert chunked.status_code == 413


def test_jobs_are_checked_before_they_are_accepted(client, cubes):
    too_many = client.post("/upscale", json=JOB | {"output": "many", "members": 4})
    assert too_many.status_code == 422 and "tiny has 3; give 1 to 3" in too_many.json()["detail"]
    taken = client.post("/upscale", json=JOB | {"output": "garda"})  # the served cube, made by another request
    assert taken.status_code == 409 and "holds a cube made by another request" in taken.json()["detail"]
    years = client.post("/upscale", json=JOB | {"output": "late2", "support_years": [2020]})  # 2020 is not whole
    assert years.status_code == 422 and "support years 2020" in years.json()["detail"]


STATEFUL_EXAMPLES = 30  # sequences of at most 10 calls: bounded so CI stays quick


def test_stateful_fuzzing_of_jobs_never_gets_a_5xx(cubes, checkpoint, drivers, tmp_path, monkeypatch):
    """Sequences of POST /upscale, then GET and DELETE /jobs/{id} with the id it returned (OpenAPI links).

    Hypothesis replays sequences, so every sequence starts from an empty job table and jobs are queued but never
    run (their states then depend on the calls alone, not on timing): what is fuzzed is the HTTP layer and the job
    records, not the engine (the other tests run jobs).
    """
    settings_ = service(cubes, checkpoint, drivers, token=TOKEN, database=tmp_path / "jobs.sqlite")
    app = create_app(settings_)
    monkeypatch.setattr(app.state.runner, "submit", lambda record: None)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    store, calls = app.state.store, []

    class Jobs(schema.as_state_machine()):
        def setup(self):
            with sqlite3.connect(store.path) as db:
                db.execute("DELETE FROM jobs")
            store._refresh_live()

        def get_call_kwargs(self, case):
            return {"headers": with_token(case)}

        def after_call(self, response, case):
            super().after_call(response, case)
            calls.append((case.operation.label, response.status_code))
            assert response.status_code < 500, f"{case.operation.label}: {response.text}"

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            # as in the stateless run, schema-valid but refused requests (a bbox off the globe) are not failures; and a
            # dismissed job stays readable (GET /jobs/{id} answers state "dismissed"), by design, not a use after free
            case.validate_response(response, additional_checks=additional_checks, transport_kwargs=kwargs or None,
                                   excluded_checks=[positive_data_acceptance, use_after_free],
                                   recorder=self.recorder)  # fmt: skip

    Jobs.run(settings=settings(max_examples=STATEFUL_EXAMPLES, stateful_step_count=10, deadline=None, database=None,
                               suppress_health_check=list(HealthCheck)))  # fmt: skip
    print(f"stateful run: {len(calls)} calls in {STATEFUL_EXAMPLES} sequences")
    operations = {label for label, _ in calls}
    assert {"POST /upscale", "GET /jobs/{job_id}", "DELETE /jobs/{job_id}"} <= operations, operations
    assert not [c for c in calls if c[1] >= 500]
    linked = [status for label, status in calls if label != "POST /upscale"]
    assert 200 in linked  # the links reached real jobs


SHORE = [[10.81, 45.5], [11.13, 45.5], [11.13, 45.79], [10.81, 45.5]]
FARM = [[10.91, 45.61], [10.92, 45.61], [10.92, 45.62], [10.91, 45.62], [10.91, 45.61]]
FARMS = {
    "type": "FeatureCollection",
    "features": [
        {"type": "Feature", "id": "east-shore", "properties": {"owner": "a"},
         "geometry": {"type": "Polygon", "coordinates": [SHORE]}},
        {"type": "Feature", "id": 7, "properties": None, "geometry": {"type": "Polygon", "coordinates": [FARM]}},
    ],
}  # fmt: skip


def test_region_totals_answer_json_per_feature_and_month_with_provenance(client):
    params = {"freq": "month", "variables": "GPP,NEE", "cube": "garda"}
    response = client.post("/flux/region", json=FARMS, params=params)
    assert response.status_code == 200, response.text
    assert response.headers[CUBE_HEADER] == "garda"
    body = response.json()
    assert body["units"] == {"total": "Tg C", "mean": "g C m-2 d-1", "area": "km2"}
    assert body["provenance"]["synthetic"] is True and "FLUXNET2015" in body["provenance"]["attribution"]
    assert len(body["provenance"]["checkpoint_sha256"]) == 64 and body["nee_rule"]
    shore, farm = body["features"]
    assert (shore["id"], shore["properties"], farm["id"], farm["properties"]) == ("east-shore", {"owner": "a"}, 7, {})
    assert 0 < farm["area_km2"] < 1 and farm["computed_area_km2"] == pytest.approx(farm["area_km2"])
    months = [(r["start"], r["end"], r["days"]) for r in shore["rows"]]
    assert months == [("2020-03-01", "2020-03-31", 31), ("2020-04-01", "2020-04-29", 29)]
    for row in shore["rows"]:
        assert set(row) == {"start", "end", "days", "GPP", "NEE"}
        gpp = row["GPP"]
        assert set(gpp) >= {"total", "total_std", "total_p05", "total_p95", "mean"}
        assert gpp["total_p05"] <= gpp["total"] <= gpp["total_p95"] and gpp["total_std"] > 0
        mean = gpp["total"] * 1e12 / (shore["computed_area_km2"] * 1e6) / row["days"]
        assert gpp["mean"] == pytest.approx(mean)


def test_region_totals_as_csv_carry_provenance_and_a_file_name(client):
    response = client.post("/flux/region", json=FARMS, params={"format": "csv", "cube": "garda"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == 'attachment; filename="garda_totals.csv"'
    assert "# synthetic: True" in response.text and "# checkpoint_sha256: " in response.text
    table = pd.read_csv(io.StringIO(response.text), comment="#")
    assert len(table) == 2 * 3 and set(table.variable) == {"GPP", "RECO", "NEE"}
    assert (table.days == 60).all() and (table["mean_gC_m-2_d-1"].notna()).all()


def test_a_lake_has_area_but_no_computed_area(client):
    lake = [[10.65, 45.6], [10.7, 45.6], [10.7, 45.65], [10.65, 45.65], [10.65, 45.6]]
    body = {"type": "Polygon", "coordinates": [lake]}
    (feature,) = client.post("/flux/region", json=body, params={"cube": "garda"}).json()["features"]
    assert feature["area_km2"] > 20 and feature["computed_area_km2"] == 0 and feature["not_computed_cells"] == 1
    assert feature["rows"][0]["GPP"]["total"] == 0 and feature["rows"][0]["GPP"]["mean"] is None


RING = [[10.5, 45.5], [10.8, 45.5], [10.8, 45.7], [10.5, 45.7], [10.5, 45.5]]
BOW_TIE = [[10.5, 45.5], [10.8, 45.7], [10.8, 45.5], [10.5, 45.7], [10.5, 45.5]]


@pytest.mark.parametrize(
    ("body", "params", "status", "words"),
    [
        (b'{"type": "Polygon", "coordinates": [[[10.5, 45.5]', {}, 422, "not valid JSON"),
        ({"type": "Polygon", "coordinates": [RING[:2] + RING[:1]]}, {}, 422, "at least 4"),
        ({"type": "Polygon", "coordinates": [RING[:4]]}, {}, 422, "same start and end"),
        ({"type": "Polygon", "coordinates": [[[10.5, 45.5], [190, 45.5], [10.8, 45.7], [10.5, 45.5]]]}, {}, 422,
         "off the globe"),
        ({"type": "Polygon", "coordinates": [BOW_TIE]}, {}, 422, "Self-intersection"),
        ({"type": "Point", "coordinates": [10.5, 45.5]}, {}, 422, "does not match"),
        ({"type": "FeatureCollection", "features": []}, {}, 422, "holds no feature"),
        ({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}, {}, 404, "no cube holds the whole"),
        ({"type": "Polygon", "coordinates": [RING]}, {"start": "2020-02-01"}, 422, "leaves the cube"),
        ({"type": "Polygon", "coordinates": [RING]}, {"variables": "GPP,CO2"}, 422, "unknown variable"),
        ({"type": "Polygon", "coordinates": [RING]}, {"freq": "week"}, 422, "freq"),
        ({"type": "Polygon", "coordinates": [RING]}, {"format": "xlsx"}, 422, "format"),
    ],
)  # fmt: skip
def test_bad_regions_get_a_4xx_that_says_what_is_wrong(client, body, params, status, words):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = client.post("/flux/region", content=content, params={"cube": "garda"} | params)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_region_limits_get_413_naming_the_limit(cubes, checkpoint, drivers):
    limits = {"max_region_bytes": 2_000, "max_region_features": 1, "max_region_vertices": 6, "max_aggregate_cells": 999}
    with TestClient(create_app(service(cubes, checkpoint, drivers, **limits))) as small:
        checks = [
            ({"type": "Polygon", "coordinates": [RING * 60 + RING[:1]]}, "limited to 2,000 bytes"),
            (FARMS, "2 features, over the limit of 1"),
            ({"type": "Polygon", "coordinates": [RING, RING[::-1]]}, "10 vertices, over the limit of 6"),
            ({"type": "Polygon", "coordinates": [RING]}, "over the limit of 999"),
        ]
        for body, words in checks:
            response = small.post("/flux/region", json=body, params={"cube": "garda"})
            assert response.status_code == 413 and words in response.json()["detail"], response.text
