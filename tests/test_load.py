"""A load test on loopback, bounded in time: 64 concurrent clients of point and bbox queries for 60 s against the real
server while a job writes a cube. Zero errors, the p99 latencies printed, the server's memory flat.

The full-size version (demo cube, a 2.5 x 2.5 deg job) is bench/service_load.py; figures in docs/RELIABILITY.md.
"""

import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import xarray as xr
from conftest import GARDA, upscale_job

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
from load import run_load, start_server

CLIENTS, SECONDS = 64, 60
pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part:UserWarning")


def test_64_clients_for_60_s_while_a_job_writes(checkpoint, drivers, tmp_path):
    cubes = tmp_path / "cubes"
    upscale_job(checkpoint, drivers, GARDA, "2020-03-01", "2020-04-29", cubes / "garda.zarr", workers=0,
                   progress=False)  # fmt: skip
    cube = xr.open_zarr(cubes / "garda.zarr")
    west, south, east, north = GARDA
    inside = (cube.lat >= south) & (cube.lat <= north) & (cube.lon >= west) & (cube.lon <= east)
    i, j = np.nonzero((cube.land_mask == 1).where(inside, False).values)
    points = [("point", f"/flux?lat={float(cube.lat[a])}&lon={float(cube.lon[b])}") for a, b in zip(i, j, strict=True)]
    boxes = [("bbox", f"/flux/bbox?bbox={w:.2f},45.4,{w + 0.2:.2f},45.6&aggregate=total") for w in (10.4, 10.6, 10.8)]
    paths = [points[k % len(points)] if k % 8 else boxes[k // 8 % len(boxes)] for k in range(512)]
    # 8 tiles; the job's cube holds the same cells and days, so queries keep to the default cube
    env = {"TAMRL_JOB_CHUNKS": "[60, 2, 2]", "TAMRL_DEFAULT_CUBE": "garda"}
    # the job on a LocalCluster worker: the server's memory is then the service's alone
    server, port = start_server(["--cubes", str(cubes), "--drivers", drivers, "--workers", "1"], env)
    base = f"http://127.0.0.1:{port}"
    try:
        # the shipped 10-member checkpoint over 13 months: a job of some seconds, writing while the load starts
        job = {"bbox": list(GARDA), "start": "2019-04-01", "end": "2020-04-29", "output": "during_load",
               "support_years": [2019]}  # fmt: skip
        location = httpx.post(f"{base}/upscale", json=job).headers["location"]
        rss, until = [], time.perf_counter() + SECONDS
        process = psutil.Process(server.pid)

        def sample() -> None:
            while time.perf_counter() < until:
                rss.append(process.memory_info().rss)
                time.sleep(1)

        sampler = threading.Thread(target=sample)
        sampler.start()
        load = run_load(port, paths, CLIENTS, SECONDS)
        sampler.join()
        state = httpx.get(f"{base}{location}").json()
        for kind, values in load.latencies.items():
            ms = np.array(values) * 1000
            print(f"{kind}: {len(ms)} requests, p50 {np.percentile(ms, 50):.0f} ms, p99 {np.percentile(ms, 99):.0f} ms")
        first, last = np.mean(rss[:10]), np.mean(rss[-10:])
        print(f"{load.requests} requests, {len(load.errors)} errors; RSS {first / 1e6:.0f} -> {last / 1e6:.0f} MB; "
              f"job {state['state']} {state['progress']}")  # fmt: skip
        assert not load.errors, load.errors[:3]
        assert load.requests > 10 * CLIENTS and set(load.latencies) == {"point", "bbox"}
        assert last <= 1.10 * first
        assert state["started"] is not None  # the job ran during the load
    finally:
        server.terminate()
        server.wait(30)
