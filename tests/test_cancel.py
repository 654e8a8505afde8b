"""Cancellation that holds: once ``DELETE /jobs/{id}`` answers "dismissed", the job's cube is never completed nor
served; a job that has claimed its completion can no longer be dismissed. The race is run directly: the DELETE is
sent between the job's last tile and its completion, in both orders."""

import sqlite3

import pytest
import zarr
from conftest import job_outcome
from fastapi.testclient import TestClient

from jobs import records
from jobs.records import JobState, JobStore
from jobs.request import JobRequest
from service.api import create_app
from service.settings import Settings
from tamrl.errors import ConflictError

# one tile
BODY = {"bbox": [10.4, 45.4, 10.8, 45.8], "start": "2020-04-01", "end": "2020-04-10", "checkpoint": "tiny",
        "support_years": [2019]}  # fmt: skip
POINT = {"lat": 45.5, "lon": 10.52}
pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part:UserWarning")


def settings(tmp_path, checkpoint, drivers) -> Settings:
    return Settings(cubes=str(tmp_path / "cubes"), drivers=[drivers], workers=0, checkpoints={"tiny": str(checkpoint)})


def run_with_delete(settings: Settings, output: str, monkeypatch, before_claim: bool) -> tuple[dict, dict]:
    """Run a job whose DELETE arrives after its last tile, just before (or just after) it claims its completion;
    returns the DELETE's answer (status and body) and the job's final record."""
    real, answers = JobStore.finishing, []

    def racing(store: JobStore, job_id: str) -> bool:
        if before_claim:
            answers.append(client.delete(f"/jobs/{job_id}"))
        claimed = real(store, job_id)
        if not before_claim:
            answers.append(client.delete(f"/jobs/{job_id}"))
        return claimed

    monkeypatch.setattr(JobStore, "finishing", racing)
    with TestClient(create_app(settings)) as client:
        location = client.post("/upscale", json=BODY | {"output": output}).headers["location"]
        job_outcome(client.get, location)
    with TestClient(create_app(settings)) as client:  # after the runner ended, and as a restarted service
        return {"status": answers[0].status_code, **answers[0].json()}, client.get(location).json()


def served(settings: Settings, output: str) -> bool:
    with TestClient(create_app(settings)) as client:
        listed = output in [cube["name"] for cube in client.get("/cubes").json()]
        queried = client.get("/flux", params=POINT | {"cube": output}).status_code == 200
    assert listed == queried
    return listed


def test_a_job_dismissed_between_its_last_tile_and_its_completion_is_never_completed_nor_served(
    checkpoint, drivers, tmp_path, monkeypatch
):
    config = settings(tmp_path, checkpoint, drivers)
    answer, record = run_with_delete(config, "raced", monkeypatch, before_claim=True)
    assert answer["status"] == 200 and answer["state"] == "dismissed"
    assert record["state"] == "dismissed" and record["progress"] == {"tiles_done": 1, "tiles_total": 1}, record
    assert zarr.open_group(str(tmp_path / "cubes" / "raced.zarr"), mode="r").attrs["tamrl_complete"] == 0
    assert not served(config, "raced")


def test_a_job_that_claimed_its_completion_cannot_be_dismissed_and_is_served(
    checkpoint, drivers, tmp_path, monkeypatch
):
    config = settings(tmp_path, checkpoint, drivers)
    answer, record = run_with_delete(config, "claimed", monkeypatch, before_claim=False)
    assert answer["status"] == 409 and "is completing its cube; it can no longer be stopped" in answer["detail"]
    assert record["state"] == "successful", record
    assert zarr.open_group(str(tmp_path / "cubes" / "claimed.zarr"), mode="r").attrs["tamrl_complete"] == 1
    assert served(config, "claimed")


def test_the_completion_is_claimed_in_the_record_atomically(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    request = JobRequest(checkpoint="tiny", bbox=BODY["bbox"], start=BODY["start"], end=BODY["end"])
    first, second = store.submit(request, "a")[0], store.submit(request, "b")[0]
    assert not store.finishing(first.id)  # accepted, not running: nothing to complete
    store.start(first.id), store.start(second.id)
    assert store.finishing(first.id)
    with pytest.raises(ConflictError, match=f"job {first.id} has computed every tile and is completing its cube"):
        store.dismiss(first.id)
    assert store.get(first.id).state == JobState.running
    store.start(first.id)  # resumed by a restarted service: it claims its completion again at the end
    assert store.dismiss(first.id).state == JobState.dismissed and not store.finishing(first.id)
    assert store.dismiss(second.id).state == JobState.dismissed and not store.finishing(second.id)


def test_a_job_file_of_an_older_tamrl_gains_the_finishing_column(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(records._SCHEMA)  # the table as tamrl 0.1 made it
    store = JobStore(path)
    record = store.submit(JobRequest(checkpoint="tiny", bbox=BODY["bbox"], start=BODY["start"], end=BODY["end"]),
                          "a")[0]  # fmt: skip
    assert store.start(record.id) and store.finishing(record.id)
