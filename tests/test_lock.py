"""The output lease (`jobs.lock`) after restarts: a lock left by a dead job never blocks that job's resume (a new
container, PID 1), another host's live lease is refused with the right file named, an expired lease is taken, a lease
taken over stops the job before it completes the cube, and of many jobs racing for one lock exactly one gets it."""

import json
import os
import socket
import time
from pathlib import Path

import pytest
import xarray as xr
from conftest import job_outcome, leftover, race, upscale_job
from fastapi.testclient import TestClient

from jobs import lock
from jobs.engine import JobHooks
from jobs.lock import Lease, held
from service.api import create_app
from service.settings import Settings
from tamrl.errors import ConflictError, DataError

BBOX, START, END = (10.4, 45.4, 10.8, 45.8), "2020-04-01", "2020-04-10"  # 8 x 8 cells
pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part:UserWarning")


def job(checkpoint, drivers, out: Path, **options):
    """The small job (one tile of 8 x 8 cells, 10 days), in this process."""
    return upscale_job(checkpoint, drivers, BBOX, START, END, out, workers=0, chunk=(None, 4, 4), progress=False,
                       support_years=[2019], **options)  # fmt: skip


@pytest.mark.parametrize(
    ("host", "pid"), [("old-container-3f2a", 1), (socket.gethostname(), 1)], ids=["new-container", "pid-1"]
)
def test_a_job_resumes_at_once_over_the_lock_it_left_in_another_container_or_as_pid_1(
    host, pid, checkpoint, drivers, tmp_path
):
    out = tmp_path / "cube.zarr"
    leftover(str(out), "job-7", host, pid, expires_in=55)  # died 5 s ago: its lease runs for 55 s more
    summary = job(checkpoint, drivers, out, owner="job-7")
    assert summary.tiles_computed == 1 and xr.open_zarr(out).attrs["tamrl_complete"] == 1
    assert not Path(f"{out}.lock").exists()


def test_a_restarted_process_under_pid_1_takes_the_lock_its_predecessor_left(tmp_path, monkeypatch):
    url = str(tmp_path / "cube.zarr")
    leftover(url, "cli-run-a", socket.gethostname(), 1, expires_in=55)
    with pytest.raises(ConflictError, match="pid 1 on"):  # PID 1 is another live process here: honoured
        Lease(url, "cli-run-b").acquire()
    monkeypatch.setattr(os, "getpid", lambda: 1)  # this process is PID 1, and holds no lease: the lock is a past one's
    lease = Lease(url, "cli-run-b")
    lease.acquire()
    assert json.loads(Path(f"{url}.lock").read_text())["owner"] == "cli-run-b"
    lease.release()
    assert not Path(f"{url}.lock").exists()


def test_another_host_s_live_lease_is_refused_naming_the_lock_file(checkpoint, drivers, tmp_path):
    out = tmp_path / "cube.zarr"
    leftover(str(out), "job-9", "other-host", 4242, expires_in=50)
    with pytest.raises(ConflictError) as refused:
        job(checkpoint, drivers, out, owner="job-10")
    message = str(refused.value)
    assert message.startswith("another tamrl job (pid 4242 on other-host, job job-9, since ")
    assert f"frees {out}.lock when its lease ends" in message and "is writing" in message
    assert not out.exists()  # refused before anything was written


def test_an_expired_lease_is_taken_by_any_job(checkpoint, drivers, tmp_path):
    out = tmp_path / "cube.zarr"
    leftover(str(out), "job-9", "other-host", 4242, expires_in=-1)
    assert job(checkpoint, drivers, out, owner="job-10").tiles_computed == 1
    assert xr.open_zarr(out).attrs["tamrl_complete"] == 1 and not Path(f"{out}.lock").exists()


def renewed(holder: dict, timeout: float = 10) -> dict:
    """The lock file's holder once its lease is renewed past ``holder``'s (the heartbeat is a thread, which a busy
    machine may run late: a fixed wait made this test fail under load)."""
    deadline = time.monotonic() + timeout
    while True:
        now = json.loads(Path(holder["path"]).read_text()) | {"path": holder["path"]}
        if now["expires"] > holder["expires"] or time.monotonic() > deadline:
            return now
        time.sleep(0.05)


def test_the_lease_is_renewed_and_a_job_whose_lease_was_taken_over_stops_without_completing(
    checkpoint, drivers, tmp_path, monkeypatch
):
    monkeypatch.setattr(lock, "LEASE_SECONDS", 0.8)
    monkeypatch.setattr(lock, "HEARTBEAT_SECONDS", 0.1)
    out, seen = tmp_path / "cube.zarr", []

    def intrude(done: int, total: int) -> None:
        seen.append(json.loads(Path(f"{out}.lock").read_text()) | {"path": f"{out}.lock"})
        if done == 1:
            seen.append(renewed(seen[-1]))
            leftover(str(out), "intruder", "other-host", 99, expires_in=50)  # the job stalled; another took over
            time.sleep(0.3)

    with pytest.raises(ConflictError, match=rf"lost its lease \({out}.lock was taken over by job intruder"):
        job(checkpoint, drivers, out, owner="job-1", tile_chunks=1, hooks=JobHooks(on_progress=intrude))
    assert seen[1]["token"] == seen[2]["token"] and seen[2]["expires"] > seen[1]["expires"]  # renewed
    assert xr.open_zarr(out, consolidated=False).attrs["tamrl_complete"] == 0
    assert json.loads(Path(f"{out}.lock").read_text())["owner"] == "intruder"  # not deleted by the loser


def test_of_many_jobs_racing_for_a_new_or_an_expired_lock_exactly_one_gets_it(tmp_path):
    url = str(tmp_path / "cube.zarr")
    winners = race(url)
    assert len(winners) == 1 and json.loads(Path(f"{url}.lock").read_text())["owner"] == winners[0]
    leftover(url, "job-dead", "other-host", 4242, expires_in=-1)
    winners = race(url)
    assert len(winners) == 1 and json.loads(Path(f"{url}.lock").read_text())["owner"] == winners[0]


def test_the_held_lease_is_released_and_a_second_holder_refused(tmp_path):
    url = str(tmp_path / "cube.zarr")
    with held(url, "job-1") as lease:
        assert json.loads(Path(f"{url}.lock").read_text())["token"] == lease.me.token
        with pytest.raises(ConflictError, match=f"pid {os.getpid()} on {socket.gethostname()}, job job-1"):
            Lease(url, "job-2").acquire()
    assert not Path(f"{url}.lock").exists()


def test_a_service_job_blocked_by_another_host_s_lease_names_the_lock_without_server_paths(
    checkpoint, drivers, tmp_path
):
    cubes = tmp_path / "cubes"
    leftover(str(cubes / "blocked.zarr"), "job-9", "other-host", 4242, expires_in=50)
    settings = Settings(cubes=str(cubes), drivers=[drivers], workers=0, checkpoints={"tiny": str(checkpoint)})
    body = {"bbox": list(BBOX), "start": START, "end": END, "checkpoint": "tiny", "output": "blocked",
            "support_years": [2019]}  # fmt: skip
    with TestClient(create_app(settings)) as client:
        record = job_outcome(client.get, client.post("/upscale", json=body).headers["location"])
    assert record["state"] == "failed", record
    assert "another tamrl job (pid 4242 on other-host, job job-9" in record["error"]
    assert "is writing blocked.zarr;" in record["error"] and "frees blocked.zarr.lock when" in record["error"]
    assert str(tmp_path) not in record["error"] and "/" not in record["error"]


def test_a_lease_that_storage_errors_keep_from_renewing_is_lost(tmp_path, monkeypatch):
    monkeypatch.setattr(lock, "LEASE_SECONDS", 0.3)
    monkeypatch.setattr(lock, "HEARTBEAT_SECONDS", 0.05)
    url = str(tmp_path / "cube.zarr")

    def failing(self):
        raise OSError(5, "Input/output error")

    with held(url, "job-1") as lease:
        monkeypatch.setattr(lock.LocalObject, "read", failing)
        time.sleep(0.6)
        with pytest.raises(ConflictError, match=rf"lost its lease \({url}.lock could not be renewed for 0 s"):
            lease.check()


def test_a_lock_of_an_older_tamrl_or_not_a_lease_at_all_is_taken(tmp_path):
    url = str(tmp_path / "cube.zarr")
    for body in ('{"host": "old-host", "pid": 7, "since": "2026-11-20T10:00:00+00:00"}', "", "{not json"):
        Path(f"{url}.lock").write_text(body)
        lease = Lease(url, "job-1")
        lease.acquire()
        assert json.loads(Path(f"{url}.lock").read_text())["token"] == lease.me.token
        lease.release()


def test_a_lock_that_cannot_be_written_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("")
    url = tmp_path / "file" / "cube.zarr"  # below a file: no folder can be made
    with pytest.raises(DataError, match=rf"cannot take the lock {url}.lock \(\w+Error: .*\); check that the output"):
        with held(str(url), "job-1"):
            pass
