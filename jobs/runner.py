"""Runs the upscaling jobs of a `JobStore`, one at a time, on one Dask cluster, and resumes live jobs on start.

A job runs `jobs.engine.upscale` with its record's request and the `Resources` the runner resolves for it (the
service's drivers, the checkpoint file behind the request's name, the output store behind the record's name);
progress goes to the record after every tile, and a
job whose record was dismissed stops between tiles (the engine's ``stop`` hook), keeping its finished tiles. Jobs
queue in submission order on a single thread, so two jobs never compete for the cluster. A service that was
killed leaves its running job in the ``running`` state; `JobRunner.resume` queues it again, and the engine's
ledger skips the tiles it had finished.
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
from jobs.engine import Cancelled, upscale
from jobs.records import JobRecord, JobState, JobStore
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
            resources = self.config.resources(record)
        except TamrlError as exc:  # a checkpoint the service no longer has
            self.store.finish(job_id, JobState.failed, str(exc))
            return
        try:
            upscale(
                record.request, resources, workers=0 if self.scheduler is None else None, scheduler=self.scheduler,
                progress=False, on_progress=lambda done, total: self.store.progress(job_id, done, total),
                stop=lambda: self._closing.is_set() or self.store.get(job_id).state == JobState.dismissed,
            )  # fmt: skip
        except Cancelled:
            log.info("job %s stopped between tiles (%s)", job_id, "shutdown" if self._closing.is_set() else "dismissed")
        except TamrlError as exc:
            self.store.finish(job_id, JobState.failed, _public(str(exc), resources, record))
        except Exception as exc:  # any failure must reach the record, not vanish with the thread
            log.exception("job %s failed", job_id)
            self.store.finish(job_id, JobState.failed, _public(f"{type(exc).__name__}: {exc}", resources, record))
        else:
            self.store.finish(job_id, JobState.successful)


def _public(message: str, resources: Resources, record: JobRecord) -> str:
    """``message`` with the server's output store and checkpoint file named as the client named them. The engine's
    messages may name them (a cube of another spec, a checkpoint that changed while the job ran)."""
    return message.replace(resources.out, record.output).replace(
        resources.checkpoint_file or record.request.checkpoint, record.request.checkpoint
    )


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
