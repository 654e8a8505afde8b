"""Planning a job before running it (``tamrl upscale --dry-run``): its size, its I/O and its wall time.

`plan_job` checks the job as the engine does (`jobs.prepare`), counts tiles and land pixels, estimates the bytes
read (the drivers' daily values at their own resolution, for the run days and the support years) and written (the
output variables, uncompressed: the daily ones and the members' monthly means), and calibrates the wall time by
running the real tile pipeline (driver read, features, model) on a sample of the job's own pixels on this machine,
one torch thread, as one worker would.
The estimate assumes the workers scale linearly and are as fast as this machine's cores; it leaves out the Zarr
writes, which the engine benchmark measured as a few percent of the time.
"""

import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from jobs import grid, static
from jobs.compute import Part, TileJob, cached_predictor, part_features, run_dates, support_dates
from jobs.drivers import GridDrivers
from jobs.outputs import OUTPUTS
from jobs.prepare import prepare_job
from jobs.request import JobRequest, Resources
from jobs.tiles import Tile, plan_tiles
from tamrl.errors import DataError
from tamrl.features import FeatureSet, feature_set

SAMPLE_PIXELS = 64  # pixels of the calibration run
GLOBAL_LAND_PIXELS = 5_758_230


@dataclass(frozen=True)
class Plan:
    """What a job would do and an estimate of how long it would take."""

    tiles: int
    land_pixels: int
    days: int
    bytes_read: int
    bytes_written: int
    seconds_per_pixel: float  # one worker, measured on a sample
    sample_pixels: int
    workers: int

    @property
    def wall_seconds(self) -> float:
        return self.land_pixels * self.seconds_per_pixel / self.workers

    def __str__(self) -> str:
        rate = self.days / self.seconds_per_pixel
        return "\n".join([
            f"tiles: {self.tiles:,}; land pixels: {self.land_pixels:,} ({self.land_pixels / GLOBAL_LAND_PIXELS:.2%} "
            f"of the global land); days: {self.days:,} ({self.land_pixels * self.days:,} pixel-days)",
            f"read: {_size(self.bytes_read)} of daily driver values; write: {_size(self.bytes_written)} of flux "
            "variables (uncompressed; the demo cube compressed to 73%)",
            f"calibration: {self.sample_pixels} pixels on this machine, {rate:,.0f} pixel-days/s per worker",
            f"estimated wall time with {self.workers} worker(s): {_duration(self.wall_seconds)}",
            f"at this rate a global year ({GLOBAL_LAND_PIXELS:,} land pixels x 365 days) would take "
            f"{_duration(GLOBAL_LAND_PIXELS * 365 / rate / self.workers)} with {self.workers} worker(s)",
        ])  # fmt: skip


def plan_job(request: JobRequest, resources: Resources, workers: int = 1) -> Plan:
    """The `Plan` of ``upscale(request, resources)`` on ``workers`` workers."""
    prepared = prepare_job(request, resources)
    job, spec = prepared.job, prepared.spec
    extent, tiles = plan_tiles(request.bbox, spec.chunk_lat, spec.chunk_lon, spec.tile_chunks)
    land_pixels = static.land_cells(request.bbox)
    if not land_pixels:
        raise DataError(f"bbox {request.bbox} holds no land cell; there is nothing to compute")
    fs = feature_set(spec.feature_set)
    days = run_dates(job.start, job.end).union(support_dates(job.support_years))
    rows, cols = grid.bbox_slices(request.bbox)
    lat, lon = grid.lat_coords()[rows], grid.lon_coords()[cols]
    read = sum(_window_bytes(prepared.drivers, name, lat, lon, days) for name in fs.required)
    space = (len(extent.lat), len(extent.lon))
    written = sum(np.dtype(o.dtype).itemsize * math.prod(o.shape(spec.sizes, space)) for o in OUTPUTS.values())
    seconds, sampled = _calibrate(job, tiles, fs)
    return Plan(len(tiles), land_pixels, job.days, read, written, seconds, sampled, max(1, workers))


def _window_bytes(source: GridDrivers, name: str, lat: np.ndarray, lon: np.ndarray, days: pd.DatetimeIndex) -> int:
    """Bytes of the daily values of ``name`` on ``days`` within the bbox, at the drivers' own resolution."""
    da = source.array(name)
    inside = da.sel(lat=slice(lat.max(), lat.min()), lon=slice(lon.min(), lon.max()))
    return int(max(inside.sizes["lat"], 1) * max(inside.sizes["lon"], 1) * len(days) * 4)


def _calibrate(job: TileJob, tiles: list[Tile], fs: FeatureSet) -> tuple[float, int]:
    """Seconds per pixel for one worker (one torch thread): reads and features of a tile, the model on a sample."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        predictor = cached_predictor(job.checkpoint, job.sha256, job.members, job.precision, job.device)
        for tile in tiles:
            started = time.perf_counter()
            ii, _, x, x_support, statics = part_features(Part(tile), job, fs)
            if len(ii):
                break
        prepare = (time.perf_counter() - started) / len(ii)
        n = min(SAMPLE_PIXELS, len(ii))
        started = time.perf_counter()
        predictor.predict_arrays(x[:n], statics[:n], x_support[:n])
        return prepare + (time.perf_counter() - started) / n, n
    finally:
        torch.set_num_threads(threads)


def _size(n: float) -> str:
    """Bytes in decimal units, e.g. 800.8 MB."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:,.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1000
    return f"{n:,.1f} TB"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
