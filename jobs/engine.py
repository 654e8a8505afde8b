"""The gridded upscaling engine: a job request and its resources in, a daily GPP, RECO and NEE cube out.

`upscale` checks the job before any output is made (`jobs.prepare`), writes the cube's template
(`jobs.writer`), and computes every unfinished tile (`jobs.compute`): in-process (``workers=0``), on a
LocalCluster, or on an existing Dask cluster (`jobs.cluster`). On a cluster a tile is split into equal shares of
its cells when the job has fewer tiles than the cluster has task slots times TASKS_PER_SLOT, so every worker has
work; a tile's parts are gathered by one task that writes the whole, chunk-aligned tile and marks it in the
ledger. Running the same job again skips the tiles in the ledger. The job holds the output's lease (`jobs.lock`)
throughout, and marks the cube complete only when its caller agrees (`JobHooks.finishing`: a service's job record
that was not dismissed).
"""

import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from dataclasses import dataclass

from distributed import Client, Future, as_completed
from distributed.comm.core import CommClosedError
from tqdm import tqdm

from jobs import static
from jobs.cluster import check_workers, job_client, task_slots
from jobs.compute import Part, PartResult, TileJob, compute_part, tile_values
from jobs.lock import Lease, held
from jobs.prepare import prepare_job
from jobs.quicklook import write_quicklook
from jobs.request import JobRequest, Resources
from jobs.tiles import Tile, plan_tiles
from jobs.writer import Cube, create_cube
from tamrl.errors import UnavailableError

TASKS_PER_SLOT = 3  # tasks per task slot a job is split into at least: equal shares keep every worker busy
MIN_PART_CELLS = 64  # cells: a tile is never split finer (each part reads its own drivers window)
LOST_SCHEDULER_WAIT_S = 5.0  # after a connection error, how long the client may take to notice a lost scheduler


@dataclass(frozen=True)
class Summary:
    """What a job did: the cube, its quick-look, and how much was computed how fast."""

    url: str
    quicklook: str
    tiles: int
    tiles_computed: int  # in this run; the others were already in the ledger
    land_pixels: int  # land cells inside the bbox
    pixels_computed: int  # in this run
    days: int
    seconds: float  # wall time of the whole job
    model_seconds: float = 0.0  # in the model itself (Predictor.ensemble_members), summed over tasks
    slots: int = 1  # tasks run at once
    notes: tuple[str, ...] = ()  # what was dropped from the drivers (`GridDrivers.notes`)

    @property
    def pixel_days_per_second(self) -> float:
        return self.pixels_computed * self.days / self.seconds if self.seconds > 0 else 0.0

    @property
    def efficiency(self) -> float:
        """End to end against the bare model: model time per slot over wall time (1 means no overhead at all)."""
        return self.model_seconds / (self.seconds * self.slots) if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        return (
            f"{self.land_pixels:,} land pixels x {self.days} days; computed {self.tiles_computed} of {self.tiles} "
            f"tiles ({self.pixels_computed:,} pixels) in {self.seconds:.1f} s wall, "
            f"{self.pixel_days_per_second:,.0f} pixel-days/s, efficiency {self.efficiency:.2f} "
            f"(model time / ({self.slots} slots x wall))\ncube: {self.url}\nquick-look: {self.quicklook}"
        ) + "".join(f"\nnote: {note}" for note in self.notes)


class Cancelled(Exception):
    """A job was told to stop; the tiles finished before that stay in the ledger."""


def _no_report(done: int, total: int) -> None:
    """The default `JobHooks.on_progress`: nobody follows the job."""


def _never() -> bool:
    return False


def _always() -> bool:
    return True


@dataclass(frozen=True)
class JobHooks:
    """How a caller follows and controls a running job (a service's runner passes its job record's).

    ``on_progress(done, total)`` gets the tiles in the ledger once the cube is open and after every tile. ``stop()``
    is asked before the first tile and after each finished one; True stops the job there (tasks running on a
    cluster are cancelled) with Cancelled. ``finishing()`` is asked once, after the last tile and just before the
    cube is marked complete: it must atomically claim the job's completion (`jobs.records.JobStore.finishing`), so
    that a job dismissed at any moment before is never completed; False stops the job with Cancelled.
    """

    on_progress: Callable[[int, int], None] = _no_report
    stop: Callable[[], bool] = _never
    finishing: Callable[[], bool] = _always


def upscale(
    request: JobRequest,
    resources: Resources,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    hooks: JobHooks = JobHooks(),
    owner: str | None = None,
) -> Summary:
    """Run ``request`` with ``resources`` into the cube ``resources.out``.

    ``workers``: LocalCluster processes (default: one per core; 0 runs the tiles in this process); ``scheduler``:
    the address of an existing Dask cluster instead. An existing cube of the same spec is resumed; one of another
    spec is refused unless ``overwrite``. ``hooks`` follow and stop the job (`JobHooks`); a stopped job raises
    Cancelled and the ledger keeps what was finished. ``owner`` names the job in the output's lease (a job id: the
    same job resumed takes its own lease at once; None: a fresh one); ConflictError while another job holds it.
    Raises DataError / ConfigError / CheckpointError (one-line messages) before writing anything, and
    UnavailableError if the Dask scheduler is lost mid-job. Worker processes are spawned: a script that calls this
    with workers needs the ``if __name__ == "__main__":`` guard.
    """
    began = time.perf_counter()
    workers = check_workers(workers, scheduler)
    if not resources.out:
        raise ValueError("resources.out names no output store")
    prepared = prepare_job(request, resources)
    spec, job = prepared.spec, prepared.job
    extent = plan_tiles(request.bbox, spec.chunk_lat, spec.chunk_lon, spec.tile_chunks)[0]
    with held(resources.out, owner) as lease:  # one job at a time per output
        cube = create_cube(
            resources.out, spec, igbp=static.igbp(extent.bbox), extra_attrs=prepared.attrs(), overwrite=overwrite
        )
        done = cube.finished()
        todo = [tile for tile in cube.tiles if tile.id not in done]
        hooks.on_progress(len(cube.tiles) - len(todo), len(cube.tiles))
        pixels, model, slots = 0, 0.0, 1
        stop = _stopper(lease, hooks)
        with tqdm(total=len(todo), unit="tile", desc="upscale", disable=not progress) as bar:
            for finished, (n, seconds, used) in enumerate(_run(cube, todo, job, workers, scheduler, stop), start=1):
                pixels, model, slots = pixels + n, model + seconds, used
                bar.update()
                hooks.on_progress(len(cube.tiles) - len(todo) + finished, len(cube.tiles))
        _finalize(cube, lease, hooks)
        return Summary(
            url=resources.out, quicklook=write_quicklook(resources.out), tiles=len(cube.tiles),
            tiles_computed=len(todo), land_pixels=static.land_cells(request.bbox), pixels_computed=pixels,
            days=request.days, seconds=time.perf_counter() - began, model_seconds=model, slots=slots,
            notes=prepared.drivers.notes,
        )  # fmt: skip


def _stopper(lease: Lease, hooks: JobHooks) -> Callable[[], bool]:
    """The job's stop test: ConflictError once its lease is lost, else the caller's ``stop``."""

    def stop() -> bool:
        lease.check()
        return hooks.stop()

    return stop


def _finalize(cube: Cube, lease: Lease, hooks: JobHooks) -> None:
    """Mark the cube complete if the job still holds its lease and its caller claims the completion."""
    lease.check()
    if not hooks.finishing():
        raise Cancelled("the job was dismissed before its cube was completed; the cube stays incomplete")
    cube.finalize()


def write_tile(cube: Cube, tile: Tile, *results: PartResult) -> tuple[int, float]:
    """Gather a tile's parts, write the tile and mark it finished; returns its pixels computed and model seconds."""
    cube.write_tile(tile, tile_values(tile, cube.spec.sizes, results))
    return sum(r.pixels for r in results), sum(r.model_seconds for r in results)


def parts(tiles: list[Tile], slots: int) -> int:
    """Parts per tile so that the job has at least TASKS_PER_SLOT tasks per slot, none under MIN_PART_CELLS."""
    wanted = math.ceil(TASKS_PER_SLOT * slots / len(tiles))
    smallest = min(tile.shape[0] * tile.shape[1] for tile in tiles)
    return max(1, min(wanted, smallest // MIN_PART_CELLS))


def _run(
    cube: Cube, tiles: list[Tile], job: TileJob, workers: int, scheduler: str | None, stop: Callable[[], bool]
) -> Iterator[tuple[int, float, int]]:
    """Compute and write the tiles in this process or on a Dask cluster, yielding each one's pixels, model seconds
    and the task slots as it finishes.

    Raises Cancelled as soon as ``stop()`` says so (asked before the first tile and after every finished one, the
    last included, so a stopped job is never finalized).
    """
    if not tiles:
        return
    _check_stop(stop)
    if scheduler is None and workers == 0:
        for tile in tiles:
            yield (*write_tile(cube, tile, compute_part(Part(tile), job)), 1)
            _check_stop(stop)
        return
    with job_client(workers, scheduler) as client:
        slots = task_slots(client)
        futures = _submit(client, cube, tiles, job, parts(tiles, slots))
        try:
            for future in as_completed(futures, loop=client.loop):
                yield (*_result(future, client), slots)
                _check_stop(stop)
        finally:
            if client.status == "running":
                client.cancel(futures)


def _result(future: Future, client: Client) -> tuple[int, float]:
    """A write task's result; UnavailableError if the client lost its scheduler (Dask then cancels every task)."""
    try:
        return future.result()
    except (CancelledError, CommClosedError, OSError, TimeoutError) as exc:
        if not _scheduler_lost(client):
            raise
        raise UnavailableError(
            f"the job lost its Dask scheduler ({type(exc).__name__}); the tiles finished so far are kept: check "
            "that the cluster is up, then run the job again to resume"
        ) from exc


def _scheduler_lost(client: Client) -> bool:
    """Whether the client has lost its scheduler. A result's connection error can come before the client notices
    (a worker's connection reset as the scheduler dies), so it is given LOST_SCHEDULER_WAIT_S to notice."""
    deadline = time.monotonic() + LOST_SCHEDULER_WAIT_S
    while client.status == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    return client.status != "running"


def _submit(client: Client, cube: Cube, tiles: list[Tile], job: TileJob, count: int) -> list:
    """One write task per tile, fed by ``count`` part tasks; returns the write tasks' futures."""
    writes = []
    for tile in tiles:
        results = [client.submit(compute_part, Part(tile, i, count), job, pure=False) for i in range(count)]
        writes.append(client.submit(write_tile, cube, tile, *results, pure=False))
    return writes


def _check_stop(stop: Callable[[], bool]) -> None:
    if stop():
        raise Cancelled("the job was stopped; run it again to resume from the finished tiles")
