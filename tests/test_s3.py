"""Object storage end to end against an S3-compatible server on loopback (moto in server mode).

Credentials and the endpoint come from the usual AWS environment variables, as on a real deployment: the drivers
are uploaded, a job reads them from ``s3://`` and writes its cube there, xarray opens the cube from ``s3://``, and
the service serves ``/flux`` from a cubes folder in the bucket and runs a job into it.
"""

import socket

import numpy as np
import pytest
import xarray as xr
from conftest import GARDA, job_outcome, upscale_job
from fastapi.testclient import TestClient

from jobs.outputs import VARIABLES
from service.api import create_app
from service.settings import Settings

s3fs = pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

START, END = "2020-03-01", "2020-03-31"
BUCKET = "tamrl-test"
pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part:UserWarning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(drivers):
    """A moto S3 server with a bucket holding the drivers; the AWS variables point fsspec (s3fs) at it."""
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
           "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem()
        fs.mkdir(BUCKET)
        fs.put(drivers, f"{BUCKET}/drivers.zarr", recursive=True)
        yield fs
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


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
