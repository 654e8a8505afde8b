"""Faults: a killed job or service resumes to the same cube; damaged inputs and outputs fail clearly and leave the
cube incomplete; one job at a time per output; every command's bad input is a one-line error."""

import errno
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import FLUXNET, GARDA, MODIS, job_outcome, upscale_job

from jobs.outputs import VARIABLES
from service.cli import main
from tamrl.errors import CheckpointError, DataError

START, END = "2020-03-01", "2020-04-29"
CHUNKS = "60,2,2"  # tiles of 2 x 2 chunks = 4 x 4 cells: 8 tiles
pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part:UserWarning")


def upscale_args(checkpoint, drivers, out) -> list[str]:
    bbox = ",".join(map(str, GARDA))
    return ["upscale", "--checkpoint", str(checkpoint), "--drivers", str(drivers), "--bbox", bbox, "--start", START,
            "--end", END, "--out", str(out), "--workers", "0", "--chunks", CHUNKS, "--quiet"]  # fmt: skip


def ledger(out: Path) -> set[str]:
    folder = out / "_ledger"
    return {p.name for p in folder.iterdir() if p.name != "zarr.json"} if folder.exists() else set()


def cli(*args: str) -> subprocess.CompletedProcess:
    """``tamrl ARGS`` in a fresh process, as a user runs it. (oneDNN picks its LSTM kernels per process, and a
    process that has run other shapes can round a few values differently in the last bit; fresh processes agree.)"""
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def uninterrupted(checkpoint, drivers, tmp_path_factory) -> xr.Dataset:
    out = tmp_path_factory.mktemp("ref") / "cube.zarr"
    assert cli(*upscale_args(checkpoint, drivers, out)).returncode == 0
    return xr.open_zarr(out).load()


def assert_same_cube(out: Path, reference: xr.Dataset) -> None:
    got = xr.open_zarr(out).load()
    assert got.attrs["tamrl_complete"] == 1
    for name in VARIABLES:
        np.testing.assert_array_equal(got[name].values, reference[name].values)


def test_a_job_killed_with_sigkill_resumes_bit_identically_and_computes_no_tile_twice(
    uninterrupted, checkpoint, drivers, tmp_path
):
    out = tmp_path / "killed.zarr"
    at = random.Random(6).randint(1, 6)  # finished tiles when the kill comes
    job = subprocess.Popen([sys.executable, "-m", "service.cli", *upscale_args(checkpoint, drivers, out)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while len(ledger(out)) < at and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    job.send_signal(signal.SIGKILL)
    assert job.wait(10) == -signal.SIGKILL
    finished = ledger(out)
    assert at <= len(finished) < 8
    assert Path(f"{out}.lock").exists()  # left by the killed process; taken over below
    resumed = cli(*upscale_args(checkpoint, drivers, out))
    assert resumed.returncode == 0, resumed.stderr
    assert f"computed {8 - len(finished)} of 8 tiles" in resumed.stdout  # finished tiles were skipped
    assert_same_cube(out, uninterrupted)
    assert not Path(f"{out}.lock").exists()


def test_one_job_at_a_time_per_output(uninterrupted, checkpoint, drivers, tmp_path, capsys):
    out = tmp_path / "shared.zarr"
    first = subprocess.Popen([sys.executable, "-m", "service.cli", *upscale_args(checkpoint, drivers, out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while not Path(f"{out}.lock").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert main(upscale_args(checkpoint, drivers, out)) == 2
    err = capsys.readouterr().err
    assert f"another tamrl job (pid {first.pid}" in err and "is writing" in err and err.count("\n") == 1
    assert first.wait(120) == 0
    assert_same_cube(out, uninterrupted)


def damaged_copy(drivers: str, tmp_path: Path) -> Path:
    """The drivers with two days of t2m missing at a few land cells: a gap, as a damaged file would leave."""
    copy = tmp_path / "gappy.zarr"
    ds = xr.open_zarr(drivers).load()
    ds["t2m"][dict(time=slice(400, 402), lat=slice(2, 4), lon=slice(10, 12))] = np.nan
    ds.to_zarr(copy, zarr_format=3, consolidated=True)
    return copy


def test_meteorology_with_gaps_fails_the_job_and_leaves_the_cube_incomplete(checkpoint, drivers, tmp_path, capsys):
    out = tmp_path / "gappy_cube.zarr"
    assert main(upscale_args(checkpoint, damaged_copy(drivers, tmp_path), out)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "the drivers' TA has gaps (NaN) at" in err and "first on 2020-02-05" in err
    assert zarr.open_group(str(out), mode="r").attrs["tamrl_complete"] == 0


def test_a_truncated_driver_file_is_a_clear_error(checkpoint, tmp_path, capsys):
    source = Path(__file__).parent / "data" / "era5" / "era5_t2m_uk_2019-03_hourly_0p25deg_52.75-51N_1W-0.75E.nc"
    broken = tmp_path / "truncated.nc"
    broken.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    assert main(upscale_args(checkpoint, broken, tmp_path / "c.zarr")) == 2
    err = capsys.readouterr().err
    assert f"cannot open driver file {broken}" in err and err.count("\n") == 1
    assert not (tmp_path / "c.zarr").exists()


def test_a_damaged_checkpoint_is_a_clear_error(checkpoint, drivers, tmp_path):
    broken = tmp_path / "damaged.pt"
    broken.write_bytes(Path(checkpoint).read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="is not a readable tamrl checkpoint"):
        upscale_job(broken, drivers, GARDA, START, END, tmp_path / "c.zarr", workers=0, progress=False)
    assert not (tmp_path / "c.zarr").exists()


@pytest.mark.parametrize(
    ("code", "words"), [(errno.EROFS, "Read-only file system"), (errno.ENOSPC, "No space left on device")]
)
def test_a_read_only_or_full_output_fails_clearly_and_leaves_the_cube_incomplete(
    code, words, checkpoint, drivers, tmp_path, monkeypatch
):
    real, calls = zarr.storage.LocalStore.set, []

    async def failing(self, key, value):
        if key.startswith("GPP/c/"):
            calls.append(key)
            if len(calls) > 1:  # the second tile's first chunk: after the cube was made and one tile written
                raise OSError(code, os.strerror(code))
        return await real(self, key, value)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", failing)
    out = tmp_path / "cube.zarr"
    with pytest.raises(DataError, match=rf"cannot write the cube at {out} \(OSError: .*{words}.*\); check that"):
        upscale_job(checkpoint, drivers, GARDA, START, END, out, workers=0, chunk=(60, 4, 4), tile_chunks=1,
                       progress=False)  # fmt: skip
    assert zarr.open_group(str(out), mode="r").attrs["tamrl_complete"] == 0
    assert len(ledger(out)) == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(cubes: Path, checkpoint, drivers, port: int) -> subprocess.Popen:
    env = os.environ | {"TAMRL_CHECKPOINTS": json.dumps({"tiny": str(checkpoint)}), "TAMRL_JOB_CHUNKS": "[60, 2, 2]"}
    command = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--cubes", str(cubes), "--drivers",
               str(drivers), "--workers", "0"]  # fmt: skip
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(150):
        try:
            httpx.get(f"http://127.0.0.1:{port}/cubes", timeout=1)
            return server
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the server did not start")


def test_a_service_killed_during_a_job_resumes_it_on_restart(uninterrupted, checkpoint, drivers, tmp_path):
    port, cubes = free_port(), tmp_path / "cubes"
    base = f"http://127.0.0.1:{port}"
    job = {"bbox": list(GARDA), "start": START, "end": END, "checkpoint": "tiny", "output": "resumed"}
    server = serve(cubes, checkpoint, drivers, port)
    location = httpx.post(f"{base}/upscale", json=job).headers["location"]
    deadline = time.monotonic() + 120
    while len(ledger(cubes / "resumed.zarr")) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.send_signal(signal.SIGKILL)
    server.wait(10)
    server = serve(cubes, checkpoint, drivers, port)
    try:
        states = []
        for _ in range(1200):
            # the record never contradicts the cube: served implies successful, and successful implies served
            served = "resumed" in [c["name"] for c in httpx.get(f"{base}/cubes").json()]
            record = httpx.get(f"{base}{location}").json()
            assert record["state"] == "successful" or not served, record
            if record["state"] == "successful":
                assert "resumed" in [c["name"] for c in httpx.get(f"{base}/cubes").json()]
            states.append(record["state"])
            if record["state"] not in ("accepted", "running"):
                break
            time.sleep(0.05)
        assert record["state"] == "successful", record
        assert record["progress"] == {"tiles_done": 8, "tiles_total": 8}
        np.testing.assert_allclose(xr.open_zarr(cubes / "resumed.zarr").GPP.values, uninterrupted.GPP.values,
                                   rtol=0, atol=1e-6)  # fmt: skip
    finally:
        server.terminate()
        server.wait(10)


def test_a_job_whose_drivers_have_gaps_fails_and_its_record_says_why(checkpoint, drivers, tmp_path):
    from fastapi.testclient import TestClient

    from service.api import create_app
    from service.settings import Settings

    settings = Settings(cubes=str(tmp_path / "cubes"), drivers=[str(damaged_copy(drivers, tmp_path))], workers=0,
                        checkpoints={"tiny": str(checkpoint)})  # fmt: skip
    job = {"bbox": list(GARDA), "start": START, "end": END, "checkpoint": "tiny", "output": "gappy"}
    with TestClient(create_app(settings)) as client:
        location = client.post("/upscale", json=job).headers["location"]
        record = job_outcome(client.get, location)
        assert record["state"] == "failed" and "the drivers' TA has gaps (NaN)" in record["error"]
        assert client.get("/cubes/gappy").status_code == 404


BAD_INPUT = [
    (["train", "--data", "/no/such/folder", "--out", "x.pt"], "/no/such/folder"),
    (["predict", "--drivers", "/no/such.csv", "--lat", "1", "--lon", "1", "--igbp", "ENF", "--koppen", "C"],
     "/no/such.csv"),
    (["evaluate", "--checkpoint", "default", "--data", "/no/such/folder", "--out", "r"], "/no/such/folder"),
    (["evaluate", "--checkpoint", "/no/such.pt", "--data", str(FLUXNET), "--modis", str(MODIS), "--out", "r"],
     "/no/such.pt"),
    (["upscale", "--drivers", "/no/such.nc", "--bbox", "10,45,11,46", "--start", START, "--end", END, "--out", "o"],
     "/no/such.nc"),
    (["upscale", "--drivers", "s3:/bucket//x.zarr", "--bbox", "10,45,11,46", "--start", START, "--end", END,
      "--out", "o"], "s3:/bucket//x.zarr"),
    (["upscale", "--drivers", "DRIVERS", "--bbox", "11,45,10,46", "--start", START, "--end", END, "--out", "o"],
     "west"),
    (["upscale", "--drivers", "DRIVERS", "--bbox", "10,45,11,46", "--start", END, "--end", START, "--out", "o"],
     "before start"),
    (["predict", "--drivers", "DRIVERS", "--lat", "1", "--lon", "1", "--igbp", "ENF", "--koppen", "C"], "DRIVERS"),
    (["serve", "--cubes", "/dev/null/cubes", "--port", "1"], "/dev/null/cubes"),
]


@pytest.mark.parametrize(("argv", "words"), BAD_INPUT, ids=[" ".join(a[:2]) + f"-{i}" for i, (a, _) in
                                                              enumerate(BAD_INPUT)])  # fmt: skip
def test_every_command_refuses_bad_input_with_one_line(argv, words, drivers, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [drivers if a == "DRIVERS" else a for a in argv]
    words = drivers if words == "DRIVERS" else words
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"tamrl {argv[0]}: error: ") and "\n" not in err and "Traceback" not in err, err
    assert words in err, err
