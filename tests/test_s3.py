"""Object storage end to end against an S3-compatible server on loopback (moto in server mode).

Credentials and the endpoint come from the usual AWS environment variables, as on a real deployment: the drivers
are uploaded, a job reads them from ``s3://`` and writes its cube there, xarray opens the cube from ``s3://``, and
the service serves ``/flux`` from a cubes folder in the bucket and runs a job into it. The output lease works there
by conditional writes; and a flaky, slow store (`Moto` faults) is retried through, or fails the job cleanly with the
cube incomplete.
"""

import json
import socket
import threading
import time

import numpy as np
import pytest
import xarray as xr
from conftest import GARDA, job_outcome, leftover, race, upscale_job
from fastapi.testclient import TestClient
from werkzeug.serving import make_server

from jobs import compute
from jobs.lock import Lease
from jobs.outputs import VARIABLES
from service.api import create_app
from service.settings import Settings
from tamrl.errors import ConflictError, DataError

s3fs = pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

START, END = "2020-03-01", "2020-03-31"
BUCKET = "tamrl-test"
pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part:UserWarning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Moto:
    """WSGI middleware in front of moto's S3. Conditional writes (If-Match, If-None-Match) are evaluated one at a time,
    as S3 does (moto checks the condition, then writes, so two racing writes could both pass). Faults: every request
    waits ``delay`` s (a slow store), and the requests that ``fails(method, path, seen)`` selects (``seen``: how many
    requests came before) get ``status`` with an S3 error ``code``, as an overloaded store answers."""

    def __init__(self):
        self.app = moto_server.DomainDispatcherApplication(moto_server.create_backend_app)
        self.conditional, self.counting = threading.Lock(), threading.Lock()
        self.faults(lambda *_: False)

    def faults(self, fails, status: str = "503 Slow Down", code: str = "SlowDown", delay: float = 0.0) -> "Moto":
        """Set the faults (and count them afresh in ``seen`` and ``failed``)."""
        self.fails, self.status, self.code, self.delay = fails, status, code, delay
        self.seen, self.failed = 0, []
        return self

    def __call__(self, environ, start_response):
        time.sleep(self.delay)
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        with self.counting:
            fail = self.fails(method, path, self.seen)
            self.seen += 1
            if fail:
                self.failed.append(f"{method} {path}")
        if fail:
            start_response(self.status, [("Content-Type", "application/xml")])
            return [f"<Error><Code>{self.code}</Code><Message>injected fault</Message></Error>".encode()]
        if method != "GET" and {"HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH"} & environ.keys():
            with self.conditional:
                return list(self.app(environ, start_response))
        return self.app(environ, start_response)


@pytest.fixture(scope="module")
def moto():
    """A `Moto` server on loopback; the AWS variables point fsspec (s3fs) at it."""
    port, middleware = free_port(), Moto()
    server = make_server("127.0.0.1", port, middleware, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
           "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        s3fs.S3FileSystem.clear_instance_cache()
        yield middleware
        s3fs.S3FileSystem.clear_instance_cache()
    server.shutdown()


@pytest.fixture(scope="module")
def s3(moto, drivers):
    """The `moto` server with a bucket holding the drivers; an s3fs filesystem on it."""
    fs = s3fs.S3FileSystem()
    fs.mkdir(BUCKET)
    fs.put(drivers, f"{BUCKET}/drivers.zarr", recursive=True)
    return fs


@pytest.fixture()
def flaky(moto, s3):
    """`Moto.faults` of the server, cleared after the test."""
    yield moto.faults
    moto.faults(lambda *_: False)
    s3fs.S3FileSystem.clear_instance_cache()  # none made under the test's settings


@pytest.fixture(scope="module")
def reference(checkpoint, drivers, tmp_path_factory) -> xr.Dataset:
    out = tmp_path_factory.mktemp("ref") / "cube.zarr"
    upscale_job(checkpoint, drivers, GARDA, START, END, out, workers=0, chunk=(None, 4, 4), progress=False)
    return xr.open_zarr(out).load()


def test_a_job_reads_drivers_from_s3_and_writes_its_cube_there(s3, checkpoint, reference):
    url = f"s3://{BUCKET}/cubes/garda.zarr"
    summary = upscale_job(checkpoint, [f"s3://{BUCKET}/drivers.zarr"], GARDA, START, END, url, workers=0,
                             chunk=(None, 4, 4), progress=False)  # fmt: skip
    assert summary.quicklook == f"{url}/quicklook.png" and s3.exists(f"{BUCKET}/cubes/garda.zarr/quicklook.png")
    cube = xr.open_zarr(url).load()
    assert cube.attrs["tamrl_complete"] == 1
    for name in VARIABLES:
        np.testing.assert_array_equal(cube[name].values, reference[name].values)


def test_the_service_serves_cubes_from_s3_and_runs_jobs_into_it(s3, checkpoint, reference, tmp_path):
    settings = Settings(cubes=f"s3://{BUCKET}/cubes", drivers=[f"s3://{BUCKET}/drivers.zarr"], workers=0,
                        database=tmp_path / "jobs.sqlite", checkpoints={"tiny": str(checkpoint)})  # fmt: skip
    with TestClient(create_app(settings)) as client:
        assert "garda" in [c["name"] for c in client.get("/cubes").json()]
        body = client.get("/flux", params={"lat": 45.62, "lon": 10.92, "cube": "garda"}).json()
        row = int(np.argmin(np.abs(reference.lat.values - body["cell_lat"])))
        col = int(np.argmin(np.abs(reference.lon.values - body["cell_lon"])))
        np.testing.assert_allclose(body["variables"]["GPP"]["values"], reference.GPP.values[:, row, col], atol=1e-5)
        job = {"bbox": [10.4, 45.4, 10.8, 45.8], "start": "2020-03-10", "end": "2020-03-20", "checkpoint": "tiny",
               "output": "west", "support_years": [2019]}  # fmt: skip
        location = client.post("/upscale", json=job).headers["location"]
        state = job_outcome(client.get, location)
        assert state["state"] == "successful", state
        assert s3.exists(f"{BUCKET}/cubes/west.zarr/zarr.json")
        west = client.get("/flux", params={"lat": 45.5, "lon": 10.52, "cube": "west"}).json()
        assert len(west["time"]) == 11


def test_the_output_lease_on_s3_is_taken_by_one_racing_job_and_refused_while_live(s3):
    url = f"s3://{BUCKET}/cubes/leased.zarr"
    winners = race(url)
    assert len(winners) == 1 and json.loads(s3.cat_file(f"{BUCKET}/cubes/leased.zarr.lock"))["owner"] == winners[0]
    with pytest.raises(ConflictError, match=f"frees {url}.lock when its lease ends"):
        Lease(url, "job-x").acquire()
    again = Lease(url, winners[0])  # the same job resumed elsewhere takes it at once
    again.acquire()
    again.release()
    s3.invalidate_cache()
    assert not s3.exists(f"{BUCKET}/cubes/leased.zarr.lock")
    leftover(url, "job-dead", "other-host", 4242, expires_in=-1)
    winners = race(url)  # an expired lease: again exactly one job takes it
    assert len(winners) == 1 and json.loads(s3.cat_file(f"{BUCKET}/cubes/leased.zarr.lock"))["owner"] == winners[0]


def test_a_flaky_slow_store_is_retried_through_to_the_same_cube(flaky, checkpoint, reference):
    store = flaky(lambda method, path, seen: seen % 10 == 9, delay=0.01)  # every 10th request: 503 SlowDown
    compute.cached_drivers.cache_clear()  # the drivers are opened, and their metadata read, through the faults too
    url = f"s3://{BUCKET}/cubes/flaky.zarr"
    summary = upscale_job(checkpoint, [f"s3://{BUCKET}/drivers.zarr"], GARDA, START, END, url, workers=0,
                          chunk=(None, 4, 4), progress=False)  # fmt: skip
    assert summary.tiles_computed == summary.tiles
    assert len(store.failed) >= 20 and any(f.startswith("GET /tamrl-test/drivers.zarr/") for f in store.failed)
    assert any(f.startswith("PUT") for f in store.failed)
    cube = xr.open_zarr(url).load()
    assert cube.attrs["tamrl_complete"] == 1
    for name in VARIABLES:
        np.testing.assert_array_equal(cube[name].values, reference[name].values)


def test_a_store_that_keeps_failing_fails_the_job_cleanly_and_the_job_resumes(
    flaky, s3, checkpoint, reference, monkeypatch
):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")  # botocore's retries: 3 attempts, not 5, to keep the test short
    s3fs.S3FileSystem.clear_instance_cache()  # filesystems made from here on read it
    url, key = f"s3://{BUCKET}/cubes/broken.zarr", f"/{BUCKET}/cubes/broken.zarr"
    written = []

    def after_the_first_tile(method: str, path: str, seen: int) -> bool:  # the first tile's 4 GPP chunks succeed
        if method != "PUT" or not path.startswith(f"{key}/GPP/c/"):
            return False
        written.append(path)
        return len(set(written)) > 4

    store = flaky(after_the_first_tile, status="500 Internal Server Error", code="InternalError")
    run = lambda: upscale_job(checkpoint, [f"s3://{BUCKET}/drivers.zarr"], GARDA, START, END, url, workers=0,  # noqa: E731
                              chunk=(None, 4, 4), progress=False)  # fmt: skip
    with pytest.raises(DataError, match=rf"cannot write the cube at {url} \(OSError: .*\); check that the location"):
        run()
    failed = [f for f in store.failed if f.startswith("PUT")]
    assert len(failed) >= 3 and len(failed) > len(set(failed))  # each failing write was retried
    s3.invalidate_cache()
    assert json.loads(s3.cat_file(f"{BUCKET}/cubes/broken.zarr/zarr.json"))["attributes"]["tamrl_complete"] == 0
    assert len(s3.find(f"{BUCKET}/cubes/broken.zarr/_ledger")) == 2  # the group's zarr.json and one tile
    assert not s3.exists(f"{BUCKET}/cubes/broken.zarr.lock")
    flaky(lambda *_: False)  # the store recovers: the job resumes from its finished tile
    assert run().tiles_computed == 1
    cube = xr.open_zarr(url).load()
    assert cube.attrs["tamrl_complete"] == 1
    for name in VARIABLES:
        np.testing.assert_array_equal(cube[name].values, reference[name].values)
