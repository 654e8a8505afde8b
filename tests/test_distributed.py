"""A real Dask cluster on loopback: a scheduler and two workers as separate processes (the ``dask`` commands).

The tiny job (conftest's checkpoint and drivers) is cut into tiles of 4 x 4 cells so both workers get work; the cube
made on the cluster must equal, bit for bit, the one a LocalCluster of single-threaded workers makes with the same
tiles, also when a worker is killed in the middle of the run.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import GARDA, job_outcome, upscale_job
from distributed import Client

from jobs.engine import JobHooks
from jobs.outputs import VARIABLES
from service.cli import main
from tamrl.errors import UnavailableError

START, END = "2020-03-01", "2020-04-29"
TILES = {"chunk": (60, 4, 4), "tile_chunks": 1}  # 8 tiles
LOST_SCHEDULER_SECONDS = 30  # a job whose scheduler died fails within this (measured: 0.3 s)
pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part:UserWarning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture()
def cluster():
    """``dask scheduler`` and two ``dask worker`` processes of one thread each; yields (address, worker processes,
    scheduler process)."""
    address = f"tcp://127.0.0.1:{free_port()}"
    scheduler = start("scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1], "--no-dashboard")
    workers = [start("worker", address, "--nthreads", "1", "--no-dashboard", "--name", f"w{i}") for i in range(2)]
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        yield address, workers, scheduler
    finally:
        for process in [*workers, scheduler]:
            process.terminate()
        for process in [*workers, scheduler]:
            process.wait(20)


@pytest.fixture(scope="module")
def local(checkpoint, drivers, tmp_path_factory):
    """Cubes made on a LocalCluster of 2 single-threaded workers, by tile layout (tiles of 1 or 2 x 2 chunks)."""
    made = {}

    def cube(tile_chunks: int) -> xr.Dataset:
        if tile_chunks not in made:
            out = tmp_path_factory.mktemp("local") / "cube.zarr"
            upscale_job(checkpoint, drivers, GARDA, START, END, out, workers=2, progress=False,
                           chunk=TILES["chunk"], tile_chunks=tile_chunks)  # fmt: skip
            made[tile_chunks] = xr.open_zarr(out).load()
        return made[tile_chunks]

    return cube


def test_the_cli_on_a_dask_cluster_gives_the_local_cluster_cube(cluster, local, checkpoint, drivers, tmp_path):
    address, _, _ = cluster
    out = tmp_path / "cluster.zarr"
    assert main(["upscale", "--checkpoint", str(checkpoint), "--drivers", drivers, "--bbox", ",".join(map(str, GARDA)),
                 "--start", START, "--end", END, "--out", str(out), "--scheduler", address, "--chunks", "60,4,4",
                 "--quiet"]) == 0  # fmt: skip
    got = xr.open_zarr(out).load()
    assert got.attrs["tamrl_complete"] == 1
    for name in VARIABLES:  # the CLI's tiles are 2 x 2 chunks
        np.testing.assert_array_equal(got[name].values, local(2)[name].values)


def test_a_worker_killed_mid_run_still_gives_the_complete_cube(cluster, local, checkpoint, drivers, tmp_path):
    address, workers, _ = cluster
    killed = []

    def kill_after_the_first_tile(done: int, total: int) -> None:
        if done >= 1 and not killed:
            os.kill(workers[1].pid, signal.SIGKILL)
            killed.append(time.monotonic())

    out = tmp_path / "killed.zarr"
    summary = upscale_job(checkpoint, drivers, GARDA, START, END, out, scheduler=address, progress=False,
                          hooks=JobHooks(on_progress=kill_after_the_first_tile), **TILES)  # fmt: skip
    assert killed and workers[1].wait(10) == -signal.SIGKILL
    assert summary.tiles_computed == summary.tiles == 8
    got = xr.open_zarr(out).load()
    assert got.attrs["tamrl_complete"] == 1
    for name in VARIABLES:
        np.testing.assert_array_equal(got[name].values, local(1)[name].values)


def test_a_job_whose_scheduler_is_killed_fails_at_once_and_resumes_on_another_cluster(
    cluster, local, checkpoint, drivers, tmp_path
):
    address, _, scheduler = cluster
    out, killed = tmp_path / "orphaned.zarr", []

    def kill_the_scheduler_after_the_first_tile(done: int, total: int) -> None:
        if done >= 1 and not killed:
            scheduler.send_signal(signal.SIGKILL)
            killed.append(time.monotonic())

    with pytest.raises(UnavailableError, match=r"the job lost its Dask scheduler \(\w+\); the tiles finished so far"):
        upscale_job(checkpoint, drivers, GARDA, START, END, out, scheduler=address, progress=False,
                    hooks=JobHooks(on_progress=kill_the_scheduler_after_the_first_tile), **TILES)  # fmt: skip
    waited = time.monotonic() - killed[0]
    assert waited < LOST_SCHEDULER_SECONDS, waited
    finished = {p.name for p in (out / "_ledger").iterdir()} - {"zarr.json"}
    assert 1 <= len(finished) < 8 and not Path(f"{out}.lock").exists()
    assert xr.open_zarr(out, consolidated=False).attrs["tamrl_complete"] == 0
    summary = upscale_job(checkpoint, drivers, GARDA, START, END, out, workers=2, progress=False, **TILES)
    assert summary.tiles_computed == 8 - len(finished)
    got = xr.open_zarr(out).load()
    for name in VARIABLES:
        np.testing.assert_array_equal(got[name].values, local(1)[name].values)


def test_the_service_runs_its_jobs_on_the_configured_cluster(cluster, local, checkpoint, drivers, tmp_path):
    from fastapi.testclient import TestClient

    from service.api import create_app
    from service.settings import Settings

    address, _, _ = cluster
    settings = Settings(cubes=str(tmp_path), drivers=[drivers], scheduler=address, job_chunks=TILES["chunk"],
                        checkpoints={"tiny": str(checkpoint)})  # fmt: skip
    job = {"bbox": list(GARDA), "start": START, "end": END, "checkpoint": "tiny", "output": "on_cluster"}
    with TestClient(create_app(settings)) as client, Client(address) as watcher:
        location = client.post("/upscale", json=job).headers["location"]
        state = job_outcome(client.get, location)
        assert state["state"] == "successful", state
        assert "compute_part" in watcher.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes))
    got = xr.open_zarr(tmp_path / "on_cluster.zarr").load()
    np.testing.assert_array_equal(got.GPP.values, local(2).GPP.values)
