"""Runs the upscaling jobs of a `JobStore`, one at a time, on one Dask cluster, and resumes live jobs on start.

A job runs `jobs.engine.upscale` with its record's request and the `Resources` the runner resolves for it (the
service's drivers, the checkpoint file behind the request's name, the output store behind the record's name);
progress goes to the record after every tile, and a
job whose record was dismissed stops between tiles (the engine's `JobHooks`), keeping its finished tiles; its cube
is completed only after the record has atomically claimed the completion (`JobStore.finishing`), so a dismissed
job's cube is never completed nor served. Jobs queue in submission order on a single thread, so two jobs never
compete for the cluster. A service that was killed leaves its running job in the ``running`` state; `JobRunner.start`
queues it again, the job takes its own output lease at once (the lease's owner is the job id, whatever the host or
process), and the engine's ledger skips the tiles it had finished. Errors are stored without server paths
(`jobs.redact`).
"""

import logging
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import fsspec
from distributed import LocalCluster
from fsspec.implementations.local import LocalFileSystem

from jobs.cluster import local_cluster
from jobs.engine import Cancelled, JobHooks, upscale
from jobs.records import JobRecord, JobState, JobStore
from jobs.redact import public_message
from jobs.request import Resources
from tamrl.checkpoint import resolve, shipped_names
from tamrl.errors import CheckpointError, ConfigError, TamrlError

log = logging.getLogger(__name__)
OUTPUT_NAME = re.compile(r"(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class RunnerConfig:
    """Where jobs read and write, and on what they run."""

    drivers: tuple[str, ...]  # driver URLs every job reads
    cubes: str  # the folder or fsspec URL the cubes are written into, as <output>.zarr
    checkpoints: dict[str, str] = field(default_factory=dict)  # name -> file, besides the shipped checkpoints
    scheduler: str | None = None  # an existing Dask cluster
    workers: int | None = None  # else a LocalCluster of this many processes (default: one per core); 0: in-process
    chunks: tuple[int, int, int] | None = None  # of the cubes jobs write (default: jobs.writer's)

    def checkpoint_file(self, name: str) -> str:
        """The file of checkpoint ``name``: one configured here, or a shipped one (never a client's path)."""
        if name in self.checkpoints:
            return self.checkpoints[name]
        if name in shipped_names():
            return str(resolve(name))
        choices = ", ".join([*shipped_names(), *self.checkpoints])
        raise CheckpointError(f"no checkpoint {name!r}; choose from {choices}")

    def resources(self, record: JobRecord) -> Resources:
        """Where ``record``'s job reads and writes."""
        out = resolve_output(self.cubes, record.output)[1]
        file = self.checkpoint_file(record.request.checkpoint)
        return Resources(drivers=self.drivers, out=out, checkpoint_file=file, chunks=self.chunks)

    def public_names(self, record: JobRecord) -> dict[str, str]:
        """The server's places a job's messages may name, each with the name a client may see."""
        names = {self.cubes: "<cubes>", resolve_output(self.cubes, record.output)[1]: f"{record.output}.zarr"}
        names |= {url: "<drivers>" for url in self.drivers}
        names |= {str(resolve(name)): name for name in shipped_names()} | {f: n for n, f in self.checkpoints.items()}
        return names | ({self.scheduler: "<scheduler>"} if self.scheduler else {})


class JobRunner:
    """A single-threaded queue of jobs from ``store``; ``start()`` brings up the cluster and resumes live jobs."""

    def __init__(self, store: JobStore, config: RunnerConfig):
        self.store = store
        self.config = config
        self._cluster: LocalCluster | None = None
        self._open()

    def _open(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tamrl-job")
        self._closing = threading.Event()

    def start(self) -> list[JobRecord]:
        """Start the LocalCluster (unless a scheduler is given or workers is 0) and queue every live job again.

        A runner that was closed starts afresh (an app whose lifespan runs twice, as test clients do)."""
        if self._closing.is_set():
            self._open()
        if self.config.scheduler is None and self.config.workers != 0:
            self._cluster = local_cluster(self.config.workers)
        live = self.store.live()
        for record in live:
            self.submit(record)
        return live

    def submit(self, record: JobRecord) -> Future:
        """Queue ``record``'s job."""
        return self._pool.submit(self._run, record.id)

    def close(self) -> None:
        """Stop taking jobs, stop the running one at its next tile boundary, and shut the cluster down.

        The stopped job stays ``running`` in the store, so the next start resumes it from its finished tiles.
        """
        self._closing.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._cluster is not None:
            self._cluster.close()

    @property
    def scheduler(self) -> str | None:
        return self.config.scheduler or (self._cluster.scheduler_address if self._cluster else None)

    def _run(self, job_id: str) -> None:
        if not self.store.start(job_id):
            return  # dismissed while it waited
        record = self.store.get(job_id)
        try:
            self._upscale(record)
        except Cancelled:
            log.info("job %s stopped between tiles (%s)", job_id, "shutdown" if self._closing.is_set() else "dismissed")
        except TamrlError as exc:
            self._fail(record, str(exc))
        except Exception as exc:  # any failure must reach the record, not vanish with the thread
            log.exception("job %s failed", job_id)
            self._fail(record, f"{type(exc).__name__}: {exc}")
        else:
            self.store.finish(job_id, JobState.successful)

    def _upscale(self, record: JobRecord) -> None:
        """Run ``record``'s job, owning the output's lease by its id; Cancelled once dismissed or shutting down."""
        job_id = record.id
        hooks = JobHooks(
            on_progress=lambda done, total: self.store.progress(job_id, done, total),
            stop=lambda: self._closing.is_set() or self.store.get(job_id).state == JobState.dismissed,
            finishing=lambda: self.store.finishing(job_id),
        )
        upscale(record.request, self.config.resources(record), workers=0 if self.scheduler is None else None,
                scheduler=self.scheduler, progress=False, hooks=hooks, owner=job_id)  # fmt: skip

    def _fail(self, record: JobRecord, message: str) -> None:
        """Record the job as failed with ``message``, its server paths, URLs and addresses hidden."""
        self.store.finish(record.id, JobState.failed, public_message(message, self.config.public_names(record)))


def resolve_output(root: str, name: str) -> tuple[str, str]:
    """The name and URL of the cube ``<root>/<name>.zarr`` (``root`` a folder or an fsspec URL); ConfigError for a
    name that is not a plain name (so could leave ``root``)."""
    stem = name.removesuffix(".zarr")
    if not OUTPUT_NAME.fullmatch(stem):
        raise ConfigError(
            f"output {name!r} must be a plain name of letters, digits, '_', '-' and '.' (at most 64, no '..', no "
            "path or URL); the cube is written as <name>.zarr in the service's cubes folder"
        )
    fs, base = fsspec.core.url_to_fs(root)
    path = f"{base.rstrip('/')}/{stem}.zarr"
    return stem, path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)
