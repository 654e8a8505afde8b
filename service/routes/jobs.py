"""Upscaling jobs: ``POST /upscale`` queues one, ``GET /jobs`` and ``GET /jobs/{id}`` report them, ``DELETE
/jobs/{id}`` dismisses one. Every job endpoint needs the bearer token when the service has one: records show what
clients asked for.

A job is checked at submission as the engine will check it (`jobs.prepare.prepare_job`: the checkpoint, the drivers'
record against the period, its spin-up and the support years, the cells), so a job that cannot run gets 422 at once
rather than 202 and a failure. Live jobs are bounded in total and per client (429), and records of jobs that ended
over ``job_retention_days`` ago are deleted at each submission (and when the service starts).
"""

from functools import lru_cache
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from jobs import grid
from jobs.prepare import prepare_job
from jobs.records import JobRecord, JobState, Quota
from jobs.request import JobRequest, Resources
from jobs.runner import RunnerConfig, resolve_output
from service.dependencies import CatalogDep, RunnerDep, SettingsDep, StoreDep, authorised
from service.limits import client_address
from service.routes import PROBLEMS
from service.schemas import JobInfo, Progress, UpscaleRequest
from tamrl.checkpoint import read_metadata
from tamrl.errors import ConfigError, TooLargeError, UnavailableError

JOB_LINKS = {  # OpenAPI links: a submitted job's id is what GET and DELETE /jobs/{job_id} take
    op: {"operationId": op, "parameters": {"job_id": "$response.body#/id"}} for op in ("getJob", "deleteJob")
}

router = APIRouter(tags=["jobs"], dependencies=[Depends(authorised)])


@router.post(
    "/upscale", status_code=202, response_model=JobInfo, responses={202: {"links": JOB_LINKS}, **PROBLEMS},
    operation_id="submitUpscale",
)  # fmt: skip
def submit(body: UpscaleRequest, request: Request, response: Response, settings: SettingsDep, catalog: CatalogDep,
           store: StoreDep, runner: RunnerDep) -> dict:  # fmt: skip
    """Queue an upscaling job (or return the same request's job); its cube appears under /cubes when done."""
    rows, cols = grid.bbox_slices(body.bbox)
    cells = (rows.stop - rows.start) * (cols.stop - cols.start)
    if cells > settings.max_job_pixels:
        raise TooLargeError(f"the bbox holds {cells:,} cells, over the limit of {settings.max_job_pixels:,}")
    available = _members(runner.config.checkpoint_file(body.checkpoint))
    if body.members is not None and body.members > available:
        raise ConfigError(f"members {body.members}: {body.checkpoint} has {available}; give 1 to {available}")
    name, out = resolve_output(settings.cubes, body.output)
    job = body.job_request()
    _check_runs(job, runner.config)
    store.expire(settings.job_retention_days)
    quota = Quota(settings.max_live_jobs, settings.max_live_jobs_per_client)
    record, created = store.submit(job, name, catalog.fs.exists(out), client_address(request.scope), quota)
    if created:
        runner.submit(record)
    response.headers["Location"] = f"/jobs/{record.id}"
    return _job(record)


@router.get("/jobs", response_model=list[JobInfo], responses=PROBLEMS)
def list_jobs(store: StoreDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict]:
    """The newest jobs first."""
    return [_job(record) for record in store.recent(limit)]


@router.get("/jobs/{job_id}", response_model=JobInfo, responses=PROBLEMS, operation_id="getJob")
def get_job(store: StoreDep, job_id: str) -> dict:
    """A job's state, progress (tiles done of total), timestamps, error and output."""
    return _job(store.get(job_id))


@router.delete("/jobs/{job_id}", response_model=JobInfo, responses=PROBLEMS, operation_id="deleteJob")
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


def _check_runs(job: JobRequest, config: RunnerConfig) -> None:
    """What the engine checks before it writes (`jobs.prepare.prepare_job`), now: DataError, ConfigError or
    CheckpointError (422) for a job that would fail."""
    if not config.drivers:
        raise UnavailableError("this service has no drivers (TAMRL_DRIVERS), so it runs no upscaling jobs")
    prepare_job(job, Resources(drivers=config.drivers, checkpoint_file=config.checkpoint_file(job.checkpoint)))


@lru_cache(maxsize=8)
def _members(path: str) -> int:
    """Ensemble members in the checkpoint at ``path``, read from its metadata (its weights are never loaded)."""
    return read_metadata(path).members
