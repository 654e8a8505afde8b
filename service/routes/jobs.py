"""Upscaling jobs: ``POST /upscale`` queues one, ``GET /jobs`` and ``GET /jobs/{id}`` report them, ``DELETE
/jobs/{id}`` dismisses one. Submitting and deleting need the bearer token when the service has one."""

from functools import lru_cache
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from jobs import grid
from jobs.records import JobRecord, JobState
from jobs.runner import resolve_output
from service.dependencies import CatalogDep, RunnerDep, SettingsDep, StoreDep, authorised
from service.routes import PROBLEMS
from service.schemas import JobInfo, Progress, UpscaleRequest
from tamrl.checkpoint import read_metadata
from tamrl.errors import ConfigError, TooLargeError

JOB_LINKS = {  # OpenAPI links: a submitted job's id is what GET and DELETE /jobs/{job_id} take
    op: {"operationId": op, "parameters": {"job_id": "$response.body#/id"}} for op in ("getJob", "deleteJob")
}

router = APIRouter(tags=["jobs"])


@router.post(
    "/upscale", status_code=202, response_model=JobInfo, dependencies=[Depends(authorised)],
    responses={202: {"links": JOB_LINKS}, **PROBLEMS}, operation_id="submitUpscale",
)  # fmt: skip
def submit(body: UpscaleRequest, response: Response, settings: SettingsDep, catalog: CatalogDep, store: StoreDep,
           runner: RunnerDep) -> dict:  # fmt: skip
    """Queue an upscaling job (or return the same request's job); its cube appears under /cubes when done."""
    rows, cols = grid.bbox_slices(body.bbox)
    cells = (rows.stop - rows.start) * (cols.stop - cols.start)
    if cells > settings.max_job_pixels:
        raise TooLargeError(f"the bbox holds {cells:,} cells, over the limit of {settings.max_job_pixels:,}")
    available = _members(runner.config.checkpoint_file(body.checkpoint))
    if body.members is not None and body.members > available:
        raise ConfigError(f"members {body.members}: {body.checkpoint} has {available}; give 1 to {available}")
    name, out = resolve_output(settings.cubes, body.output)
    record, created = store.submit(body.job_request(), name, taken=catalog.fs.exists(out))
    if created:
        runner.submit(record)
    response.headers["Location"] = f"/jobs/{record.id}"
    return _job(record)


@router.get("/jobs", response_model=list[JobInfo])
def list_jobs(store: StoreDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict]:
    """The newest jobs first."""
    return [_job(record) for record in store.recent(limit)]


@router.get("/jobs/{job_id}", response_model=JobInfo, responses=PROBLEMS, operation_id="getJob")
def get_job(store: StoreDep, job_id: str) -> dict:
    """A job's state, progress (tiles done of total), timestamps, error and output."""
    return _job(store.get(job_id))


@router.delete(
    "/jobs/{job_id}", response_model=JobInfo, responses=PROBLEMS, dependencies=[Depends(authorised)],
    operation_id="deleteJob",
)  # fmt: skip
def delete_job(store: StoreDep, job_id: str) -> dict:
    """Dismiss a job: a queued one never starts, a running one stops between tiles (finished tiles are kept)."""
    return _job(store.dismiss(job_id))


def _job(record: JobRecord) -> dict:
    links = {"self": f"/jobs/{record.id}"}
    if record.state == JobState.successful:
        links["cube"] = f"/cubes/{record.output}"
    return {
        "id": record.id, "state": record.state.value,
        "progress": Progress(tiles_done=record.tiles_done, tiles_total=record.tiles_total),
        "created": record.created, "started": record.started, "updated": record.updated, "finished": record.finished,
        "error": record.error, "request": record.request,
        "output": record.output, "links": links,
    }  # fmt: skip


@lru_cache(maxsize=8)
def _members(path: str) -> int:
    """Ensemble members in the checkpoint at ``path``, read from its metadata (its weights are never loaded)."""
    return read_metadata(path).members
