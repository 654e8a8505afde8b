"""The gridded upscaling engine: a checkpoint and gridded drivers in, daily GPP, RECO and NEE cubes out.

`upscale` checks on the client that the drivers can supply the checkpoint's features for the cells, the days and
the support years the job needs (before any output is made), writes the cube's template (`jobs.writer`), and runs
one task per unfinished tile: in-process (``workers=0``), on a LocalCluster, or on an existing Dask cluster. A
task gets only small, picklable arguments (the cube handle, its tile, a `TileJob`); the model is loaded once per
worker process and cached by checkpoint path and sha256, never shipped in the task graph.

Per tile (`compute_tile`): read the drivers of the tile's cells for the period plus SPINUP_DAYS before it and for
the support years; build the features with `tamrl.features` exactly as `tamrl predict` does for one location; run
`Predictor.predict_arrays` (encoder once per pixel on its own support years, decoder over all days, ensemble mean
and spread, GPP and RECO clipped, NEE by the checkpoint's rule); drop the spin-up; write the tile and mark it in
the ledger. Running the same job again skips the tiles in the ledger.
"""

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
import torch
from distributed import Client, LocalCluster, as_completed
from distributed.comm import get_address_host
from distributed.diagnostics.plugin import WorkerPlugin
from pydantic import ValidationError
from scipy import ndimage
from tqdm import tqdm

from jobs import grid, static
from jobs.drivers import GridDrivers
from jobs.grid import Bbox
from jobs.quicklook import write_quicklook
from jobs.tiles import CubeExtent, Tile, plan_tiles
from jobs.writer import VARIABLES, Cube, CubeSpec, create_cube, exclusive
from tamrl.checkpoint import load_bundle
from tamrl.errors import CheckpointError, ConfigError, DataError
from tamrl.features import MET, TARGETS, FeatureSet, check_drivers, dynamic_features, feature_set, static_features
from tamrl.predict import Predictor, check_precision
from tamrl.windows import WINDOW

log = logging.getLogger(__name__)

SPINUP_DAYS = 90  # the decoder runs from this many days before the period; only the period is kept
SUPPORT_YEARS = 3  # default support set: up to this many whole years of the driver record, evenly spread
PIXEL_BATCH = 4096  # pixels per predict_arrays call: bounds a task's memory (members x pixels x days x 3 floats)
DEVICES = ("cpu", "cuda", "auto")
CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"  # "<quota> <period>" or "max <period>"
KOPPEN_SEARCH = 10  # cells (0.5 deg): a land cell without a Koppen group takes the nearest group this close

# glibc malloc of LocalCluster workers: keep freed memory for reuse rather than hand it back to the OS after every
# step (Dask's default trim threshold is 64 KiB). A decoder batch allocates and frees tens of MB at a time; with these
# settings the system time of a 2-worker run halved and the run took 25% less wall time on this 2-core machine.
WORKER_MALLOC = {"MALLOC_TRIM_THRESHOLD_": 1 << 30, "MALLOC_MMAP_THRESHOLD_": 1 << 25, "MALLOC_TOP_PAD_": 1 << 28}

KOPPEN_FALLBACK = (
    f"A land cell where the 1 km Koppen raster has no data takes the group of the nearest cell that has one within "
    f"{KOPPEN_SEARCH} cells ({KOPPEN_SEARCH * grid.RES:g} deg); a cell with none that close is not computed (NaN)."
)


@dataclass(frozen=True)
class TileJob:
    """What every tile task needs besides its tile: names and dates, never the model or the data."""

    checkpoint: str  # path, readable on every worker
    sha256: str
    members: int  # the first ``members`` ensemble members are used
    precision: str  # tamrl.predict.PRECISIONS
    device: str  # cpu, cuda or auto (a GPU where the worker has one)
    drivers: tuple[str, ...]  # URLs, readable on every worker
    accumulations: tuple[str, ...]  # resolved ssrd conventions, one per driver grid (`GridDrivers.accumulations`)
    bbox: Bbox
    start: date
    end: date
    support_years: tuple[int, ...]

    @property
    def days(self) -> int:
        """Days in the output period."""
        return (self.end - self.start).days + 1


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
    notes: tuple[str, ...] = ()  # what was dropped from the drivers (`GridDrivers.notes`)

    @property
    def pixel_days_per_second(self) -> float:
        return self.pixels_computed * self.days / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        return (
            f"{self.land_pixels:,} land pixels x {self.days} days; computed {self.tiles_computed} of {self.tiles} "
            f"tiles ({self.pixels_computed:,} pixels) in {self.seconds:.1f} s wall, "
            f"{self.pixel_days_per_second:,.0f} pixel-days/s\ncube: {self.url}\nquick-look: {self.quicklook}"
        ) + "".join(f"\nnote: {note}" for note in self.notes)


def upscale(
    checkpoint: str | Path,
    drivers: str | Sequence[str],
    bbox: Bbox,
    start: str | date,
    end: str | date,
    out: str | Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
    support_years: Sequence[int] | None = None,
    chunk: tuple[int | None, int, int] | None = None,
    tile_chunks: int | None = None,
    members: int | None = None,
    precision: str = "float32",
    device: str = "cpu",
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> Summary:
    """Daily GPP, RECO and NEE of ``checkpoint`` over ``bbox`` (W, S, E, N) from ``start`` to ``end`` into ``out``.

    ``drivers``: driver URLs (`jobs.drivers.GridDrivers`). ``workers``: LocalCluster processes (default: one per
    core; 0 runs the tiles in this process); ``scheduler``: the address of an existing Dask cluster instead.
    ``support_years``: the years whose drivers form each pixel's support set (default: up to 3 whole years of the
    driver record, evenly spread). ``chunk``: the cube's (time, lat, lon) chunks and ``tile_chunks`` the chunks per
    tile side (`CubeSpec` defaults). ``members``: use only the first N ensemble members (recorded as the cube's
    ensemble size). ``device``: where workers run the model (cpu, cuda, or auto: a GPU where a worker has one).
    ``precision``: float32 or mixed (`tamrl.predict.PRECISIONS`, recorded in the cube). An
    existing cube of the same parameters is resumed; one of other parameters is refused unless ``overwrite``.
    ``on_progress(done, total)`` gets the tiles in the ledger once the cube is open and after every tile. ``stop()``
    is asked before the first tile and after each finished one; when it says True the job stops there (tiles running
    on a cluster are cancelled) and raises Cancelled, and the ledger keeps what was finished. Raises DataError /
    ConfigError / CheckpointError (one-line messages) before writing anything.
    Worker processes are spawned: a script that calls this with workers needs the ``if __name__ == "__main__":``
    guard.
    """
    began = time.perf_counter()
    workers = _workers(workers, scheduler)
    job, spec, bundle, source = prepare_job(checkpoint, drivers, bbox, start, end, support_years=support_years,
                                        chunk=chunk, tile_chunks=tile_chunks, members=members,
                                        precision=precision, device=device)  # fmt: skip
    rows, cols = grid.bbox_slices(bbox)
    extent = plan_tiles(spec.bbox, spec.chunk_lat, spec.chunk_lon, spec.tile_chunks)[0]
    igbp = static.igbp(extent.bbox)
    with exclusive(str(out)):  # one job at a time per output
        cube = create_cube(str(out), spec, igbp=igbp, extra_attrs=_attrs(bundle, job), overwrite=overwrite)
        done = cube.finished()
        todo = [tile for tile in cube.tiles if tile.id not in done]
        report = on_progress or (lambda done, total: None)
        report(len(cube.tiles) - len(todo), len(cube.tiles))
        pixels = 0
        with tqdm(total=len(todo), unit="tile", desc="upscale", disable=not progress) as bar:
            results = _tile_results(cube, todo, job, workers, scheduler, stop or (lambda: False))
            for finished, n in enumerate(results, start=1):
                pixels += n
                bar.update()
                report(len(cube.tiles) - len(todo) + finished, len(cube.tiles))
        cube.finalize()
        png = write_quicklook(str(out))
        land = static.land_mask(igbp).values[grid.shift(rows, extent.rows.start), grid.shift(cols, extent.cols.start)]
        return Summary(
            url=str(out), quicklook=png, tiles=len(cube.tiles), tiles_computed=len(todo), land_pixels=int(land.sum()),
            pixels_computed=pixels, days=job.days, seconds=time.perf_counter() - began, notes=source.notes,
        )  # fmt: skip


def prepare_job(
    checkpoint: str | Path, drivers: str | Sequence[str], bbox: Bbox, start: str | date, end: str | date, *,
    support_years: Sequence[int] | None = None, chunk: tuple[int | None, int, int] | None = None,
    tile_chunks: int | None = None, members: int | None = None, precision: str = "float32", device: str = "cpu",
) -> tuple[TileJob, CubeSpec, dict[str, Any], GridDrivers]:  # fmt: skip
    """Check a job's arguments against its checkpoint and drivers (see `upscale`) and return what it runs on: the
    tile job, the cube's spec, the checkpoint bundle and the opened drivers. Writes nothing; logs a warning for each
    of the drivers' notes (a partial day dropped from the end of an hourly record)."""
    rows, cols = grid.bbox_slices(bbox)
    first, last = _day(start, "start"), _day(end, "end")
    if last < first:
        raise ConfigError(f"end {last} is before start {first}")
    bundle = load_bundle(checkpoint)
    fs = feature_set(bundle["feature_set"])
    members = _members(bundle, members)
    if device not in DEVICES:
        raise ConfigError(f"--device {device!r}: choose one of {', '.join(DEVICES)}")
    check_precision(precision, bundle["model"], torch.device("cpu" if device == "cpu" else "cuda"))
    source = GridDrivers(drivers)
    for note in source.notes:
        log.warning(note)
    years = _check_drivers(source, fs, rows, cols, first, last, support_years)
    job = TileJob(
        checkpoint=bundle["path"], sha256=bundle["sha256"], members=members, precision=precision, device=device,
        drivers=source.urls, accumulations=source.accumulations, bbox=tuple(float(v) for v in bbox), start=first,
        end=last, support_years=years,
    )  # fmt: skip
    return job, _spec(bundle, job, chunk, tile_chunks, source.synthetic), bundle, source


def run_dates(start: date, end: date) -> pd.DatetimeIndex:
    """The days the decoder runs over: SPINUP_DAYS before ``start`` to ``end`` inclusive."""
    return pd.date_range(pd.Timestamp(start) - pd.Timedelta(days=SPINUP_DAYS), pd.Timestamp(end), freq="D")


def support_dates(years: Sequence[int]) -> pd.DatetimeIndex:
    """The days of the support years, whole calendar years in order, concatenated."""
    return pd.DatetimeIndex(np.concatenate([pd.date_range(f"{y}-01-01", f"{y}-12-31").values for y in years]))


def default_support_years(source: GridDrivers, names: Sequence[str], n: int = SUPPORT_YEARS) -> tuple[int, ...]:
    """Up to ``n`` whole calendar years that every variable of ``names`` covers, spread evenly over the record."""
    common = source.days(names[0])
    for name in names[1:]:
        common = common.intersection(source.days(name))
    years = [y for y in sorted(set(common.year)) if not len(support_dates([y]).difference(common))]
    if not years:
        raise DataError(
            f"the drivers hold no whole calendar year for the support set (they cover {source.coverage(names)}); "
            "give drivers with at least one whole year, or --support-years"
        )
    picks = np.unique(np.round(np.linspace(0, len(years) - 1, min(n, len(years)))).astype(int))
    return tuple(years[i] for i in picks)


def run_tile(cube: Cube, tile: Tile, job: TileJob) -> int:
    """One task: compute ``tile``, write it and mark it finished. Returns the number of pixels computed."""
    values, pixels = compute_tile(tile, job)
    cube.write_tile(tile, values)
    return pixels


def compute_tile(tile: Tile, job: TileJob) -> tuple[dict[str, np.ndarray], int]:
    """The six output variables of ``tile`` ((time, lat, lon), NaN where not computed) and the pixels computed."""
    predictor = cached_predictor(job.checkpoint, job.sha256, job.members, job.precision, job.device)
    values = {name: np.full((job.days, *tile.shape), np.nan, np.float32) for name in VARIABLES}
    ii, jj, x, x_support, statics = tile_features(tile, job, predictor.fs)
    for lo in range(0, len(ii), PIXEL_BATCH):
        batch = slice(lo, lo + PIXEL_BATCH)
        mean, std = predictor.predict_arrays(x[batch], statics[batch], x_support[batch])
        for k, target in enumerate(TARGETS):
            values[target][:, ii[batch], jj[batch]] = mean[:, SPINUP_DAYS:, k].T
            values[f"{target}_std"][:, ii[batch], jj[batch]] = std[:, SPINUP_DAYS:, k].T
    return values, len(ii)


def tile_features(
    tile: Tile, job: TileJob, fs: FeatureSet
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The model inputs of the cells of ``tile`` to compute: their tile rows and columns, features for the run
    (spin-up included), features of the support years, and static vectors.

    Computed are the land cells (`jobs.static.land_mask`) inside the job's bbox that have a Koppen group (see
    KOPPEN_FALLBACK) and valid drivers (every feature finite after gap filling).
    """
    ii, jj, igbp, koppen = _cells(tile, job.bbox)
    run, support = run_dates(job.start, job.end), support_dates(job.support_years)
    n_dyn, n_stat = len(fs.dynamic_names), len(fs.static_names)
    if not len(ii):
        empty = np.zeros((0, 0, n_dyn), np.float32)
        return ii, jj, empty, empty, np.zeros((0, n_stat), np.float32)
    days = run.union(support)
    blocks = cached_drivers(job.drivers, job.accumulations).read(tile.rows, tile.cols, days, fs.required)
    series = {name: block[:, ii, jj] for name, block in blocks.items()}  # (days, pixels)
    del blocks  # the whole tile's blocks: free them before the features are built
    _check_gaps(series, days, tile)
    x, x_support = _dynamic(fs, series, days, run), _dynamic(fs, series, days, support)
    lat, lon = grid.lat_coords()[tile.rows][ii], grid.lon_coords()[tile.cols][jj]
    statics = np.stack([static_features(fs, *cell) for cell in zip(lat, lon, igbp, koppen, strict=True)])
    ok = np.isfinite(x).all(axis=(1, 2)) & np.isfinite(x_support).all(axis=(1, 2))
    return ii[ok], jj[ok], x[ok], x_support[ok], statics[ok]


def _check_gaps(series: dict[str, np.ndarray], days: pd.DatetimeIndex, tile: Tile) -> None:
    """DataError for meteorology with gaps at a land cell: ERA5 has none, so a gap means a missing or damaged file
    (or a day the drivers only partly cover). A cell with no value on any day (e.g. ERA5-Land at the coast) is
    skipped instead; reflectance gaps are expected (clouds) and filled."""
    for name in MET:
        if name not in series:
            continue
        missing = np.isnan(series[name])
        gaps = missing.any(axis=0) & ~missing.all(axis=0)
        if gaps.any():
            first = days[np.argmax(missing[:, gaps].any(axis=1))]
            raise DataError(
                f"the drivers' {name} has gaps (NaN) at {int(gaps.sum())} land cell(s) of tile {tile.id}, first on "
                f"{first:%Y-%m-%d}: meteorology must be complete; check for a missing, truncated or damaged driver "
                "file, or days the drivers only partly cover"
            )


_PREDICTORS: dict[tuple[str, str, int, str, str], Predictor] = {}


def cached_predictor(
    path: str, sha256: str, members: int, precision: str = "float32", device: str = "cpu"
) -> Predictor:
    """The checkpoint's Predictor (first ``members`` members, at ``precision`` on ``device``), loaded once per
    process."""
    key = (path, sha256, members, precision, device)
    if key not in _PREDICTORS:
        bundle = load_bundle(path)
        if bundle["sha256"] != sha256:
            raise CheckpointError(f"{path} changed while the job ran (sha256 {bundle['sha256'][:12]}...); start again")
        _PREDICTORS[key] = Predictor({**bundle, "members": bundle["members"][:members]}, device, precision)
    return _PREDICTORS[key]


@lru_cache(maxsize=4)
def cached_drivers(urls: tuple[str, ...], accumulations: tuple[str, ...]) -> GridDrivers:
    """The drivers, opened (lazily) once per process."""
    return GridDrivers(urls, accumulations)


def _dynamic(fs: FeatureSet, series: dict[str, np.ndarray], days: pd.DatetimeIndex, dates: pd.DatetimeIndex):
    """Dynamic features (pixels, dates, F) from (days, pixels) driver series, as `tamrl predict` builds them."""
    at = days.get_indexer(dates)
    return dynamic_features(fs, {name: values[at] for name, values in series.items()}, dates).transpose(1, 0, 2)


def _cells(tile: Tile, bbox: Bbox) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tile rows and columns of the cells to compute, with their IGBP classes and Koppen groups (names)."""
    codes = static.igbp(CubeExtent(tile.rows, tile.cols).bbox)
    rows, cols = grid.bbox_slices(bbox)
    inside = _within(tile.rows, rows)[:, None] & _within(tile.cols, cols)[None, :]
    koppen = _koppen(tile)
    ii, jj = np.nonzero(static.land_mask(codes).values & inside & (koppen > 0))
    return ii, jj, static.igbp_names(codes.values[ii, jj]), static.koppen_letters(koppen[ii, jj])


def _koppen(tile: Tile) -> np.ndarray:
    """Koppen codes of the tile's cells, gaps filled from the nearest coded cell within KOPPEN_SEARCH (else 0)."""
    rows = slice(max(tile.rows.start - KOPPEN_SEARCH, 0), min(tile.rows.stop + KOPPEN_SEARCH, grid.N_LAT))
    cols = slice(max(tile.cols.start - KOPPEN_SEARCH, 0), min(tile.cols.stop + KOPPEN_SEARCH, grid.N_LON))
    codes = static.koppen(CubeExtent(rows, cols).bbox).values
    if codes.any():
        distance, (near_r, near_c) = ndimage.distance_transform_edt(codes == 0, return_indices=True)
        codes = np.where(distance <= KOPPEN_SEARCH, codes[near_r, near_c], 0)
    return codes[grid.shift(tile.rows, rows.start), grid.shift(tile.cols, cols.start)]


def _within(cells: slice, box: slice) -> np.ndarray:
    index = np.arange(cells.start, cells.stop)
    return (index >= box.start) & (index < box.stop)


def _tile_results(
    cube: Cube, tiles: list[Tile], job: TileJob, workers: int, scheduler: str | None, stop: Callable[[], bool]
) -> Iterator[int]:
    """Run the tiles in this process or on a Dask cluster, yielding each one's pixel count as it finishes.

    Raises Cancelled as soon as ``stop()`` says so (asked before the first tile and after every finished one, the
    last included, so a stopped job is never finalized).
    """
    if not tiles:
        return
    _check_stop(stop)
    if scheduler is None and workers == 0:
        for tile in tiles:
            yield run_tile(cube, tile, job)
            _check_stop(stop)
        return
    with _client(workers, scheduler) as client:
        futures = [client.submit(run_tile, cube, tile, job, pure=False) for tile in tiles]
        try:
            for future in as_completed(futures, loop=client.loop):
                yield future.result()
                _check_stop(stop)
        finally:
            client.cancel([f for f in futures if not f.done()])


class Cancelled(Exception):
    """A job was told to stop; the tiles finished before that stay in the ledger."""


def _check_stop(stop: Callable[[], bool]) -> None:
    if stop():
        raise Cancelled("the job was stopped; run it again to resume from the finished tiles")


@contextmanager
def _client(workers: int, scheduler: str | None) -> Iterator[Client]:
    """A Dask client on ``scheduler``, or on a LocalCluster of ``workers`` single-threaded processes.

    Never the process's default client: a service answers queries with dask while a job runs, and those must not be
    sent to the job's cluster (they were, and failed when the job closed its client).
    """
    _quiet_dask()
    if scheduler is not None:
        with Client(scheduler, set_as_default=False) as client:
            _set_torch_threads(client)
            yield client
        return
    with local_cluster(workers) as cluster, Client(cluster, set_as_default=False) as client:
        _set_torch_threads(client)
        yield client


def local_cluster(workers: int | None = None) -> LocalCluster:
    """A LocalCluster of ``workers`` (default: one per core) single-threaded worker processes with WORKER_MALLOC."""
    _quiet_dask()
    environ = {f"distributed.nanny.pre-spawn-environ.{name}": value for name, value in WORKER_MALLOC.items()}
    with dask.config.set(environ):
        return LocalCluster(
            n_workers=workers or cores(), threads_per_worker=1, processes=True, dashboard_address=":0"
        )


def _quiet_dask() -> None:
    logging.getLogger("distributed").setLevel(logging.WARNING)  # not its INFO lines on every start and stop


class TorchThreads(WorkerPlugin):
    """Gives each worker cores / (task slots on its host) torch threads, so threads x concurrent tasks = cores."""

    def __init__(self, slots: dict[str, int]):
        self.slots = slots  # host -> worker threads (task slots) on it

    def setup(self, worker: Any) -> None:
        slots = self.slots.get(get_address_host(worker.address), worker.state.nthreads)
        torch.set_num_threads(max(1, cores() // slots))


def _set_torch_threads(client: Client) -> None:
    client.wait_for_workers(1)
    slots: dict[str, int] = {}
    for info in client.scheduler_info()["workers"].values():
        slots[info["host"]] = slots.get(info["host"], 0) + info["nthreads"]
    client.register_plugin(TorchThreads(slots), name="tamrl-torch-threads")


def cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (containers)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path(CGROUP_CPU_MAX).read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    return cores if quota == "max" else max(1, min(cores, math.ceil(int(quota) / int(period))))


def _workers(workers: int | None, scheduler: str | None) -> int:
    if scheduler is not None and workers is not None:
        raise ConfigError("give --workers (a local cluster) or --scheduler (an existing one), not both")
    if workers is not None and workers < 0:
        raise ConfigError(f"--workers {workers} must be >= 0 (0 runs the tiles in this process)")
    return cores() if workers is None else workers


def _members(bundle: dict[str, Any], members: int | None) -> int:
    available = len(bundle["members"])
    if members is None:
        return available
    if not 1 <= members <= available:
        raise ConfigError(f"--members {members}: the checkpoint has {available} members; give 1 to {available}")
    return members


def _day(value: str | date, what: str) -> date:
    try:
        return pd.Timestamp(value).date()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} {value!r} is not a date such as 2020-01-31") from exc


def _check_drivers(
    source: GridDrivers, fs: FeatureSet, rows: slice, cols: slice, first: date, last: date,
    support_years: Sequence[int] | None,
) -> tuple[int, ...]:  # fmt: skip
    """DataError unless the drivers supply the features, days and cells the job needs; returns the support years."""
    check_drivers(fs, source.variables, f"the drivers ({', '.join(source.urls)})")
    run = run_dates(first, last)
    source.check_dates(
        fs.required, run, f"{run[0]:%Y-%m-%d}..{last} (the period {first}..{last} plus {SPINUP_DAYS} days of spin-up)"
    )
    years = default_support_years(source, fs.required) if support_years is None else _years(support_years)
    source.check_dates(fs.required, support_dates(years), f"the support years {', '.join(map(str, years))}")
    source.check_cells(fs.required, rows, cols)
    return years


def _years(years: Sequence[int]) -> tuple[int, ...]:
    try:
        out = tuple(sorted({int(y) for y in years}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"support years {years!r} must be whole years such as 2001,2011") from exc
    if not out:
        raise ConfigError("give at least one support year")
    return out


def _spec(
    bundle: dict[str, Any], job: TileJob, chunk: tuple[int | None, int, int] | None, tile_chunks: int | None,
    synthetic: bool,
) -> CubeSpec:  # fmt: skip
    chunks = {} if chunk is None else dict(zip(("chunk_time", "chunk_lat", "chunk_lon"), chunk, strict=True))
    if tile_chunks is not None:
        chunks["tile_chunks"] = tile_chunks
    try:
        return CubeSpec(
            bbox=job.bbox, start=job.start, end=job.end, **chunks, checkpoint=Path(job.checkpoint).stem,
            checkpoint_sha256=job.sha256, feature_set=bundle["feature_set"], ensemble_size=job.members,
            precision=job.precision,
            support_years=job.support_years, nee_rule=bundle["inference"]["nee"],
            inference_mode=bundle["inference"]["mode"], synthetic=synthetic,
        )  # fmt: skip
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid cube parameters: {problems}") from exc


def _attrs(bundle: dict[str, Any], job: TileJob) -> dict[str, Any]:
    """Provenance the spec does not hold: drivers, spin-up, support set, members, Koppen fallback, computed cells,
    and the checkpoint's calibration of the 90% intervals (`tamrl.calibration.cube_bounds` applies it)."""
    k = bundle["inference"]["support_windows"]
    windows = min(k, len(support_dates(job.support_years)) // WINDOW)
    total = len(bundle["members"])
    return {
        "drivers": ", ".join(job.drivers),
        "spinup_days": SPINUP_DAYS,
        "support_set": (
            f"per pixel, {windows} non-overlapping {WINDOW}-day windows (the checkpoint takes up to {k}) spread "
            "evenly over the pixel's drivers of the support years, concatenated in order"
        ),
        "members_used": f"first {job.members} of the checkpoint's {total}",
        "koppen_fallback": KOPPEN_FALLBACK,
        "computed_cells": (
            "land_mask cells inside the requested bbox (tamrl_spec) that have a Koppen group and valid drivers; "
            "cells of the chunk padding outside the bbox are NaN"
        ),
        **({"tamrl_calibration": json.dumps(bundle["calibration"])} if bundle.get("calibration") else {}),
    }
