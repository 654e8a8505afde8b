"""Computing the fluxes of a tile's cells on a worker: drivers in, model run, ensemble mean and spread out.

A task computes a `Part` of a tile: all of its cells, or one of ``count`` equal shares of them (so that a job of
few tiles still gives every worker work). It reads the drivers of its cells for the period plus SPINUP_DAYS before
it and for the support years; builds the features with `tamrl.features` exactly as `tamrl predict` does for one
location; runs `Predictor.ensemble_members` (encoder once per pixel on its own support years, decoder over all
days, GPP and RECO clipped, NEE by the checkpoint's rule); drops the spin-up; and reduces the members to each
output's statistic (`STATISTICS`: the daily ensemble mean and spread, each member's monthly means). A task gets
only small, picklable arguments (its part and a `TileJob`); the model is loaded once per worker process and cached
by checkpoint path and sha256, never shipped in the task graph.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import ndimage

from jobs import grid, static
from jobs.adapters.base import AdapterOptions
from jobs.drivers import GridDrivers
from jobs.grid import Bbox
from jobs.outputs import OUTPUTS, month_starts
from jobs.tiles import CubeExtent, Tile
from tamrl.checkpoint import load_bundle
from tamrl.errors import CheckpointError, DataError
from tamrl.features import MET, TARGETS, FeatureSet, dynamic_features, static_features
from tamrl.predict import Predictor

SPINUP_DAYS = 90  # the decoder runs from this many days before the period; only the period is kept
PIXEL_BATCH = 4096  # pixels per model call: bounds a task's memory (members x pixels x days x 3 floats)
KOPPEN_SEARCH = 10  # cells (0.5 deg): a land cell without a Koppen group takes the nearest group this close


def _monthly_means(members: np.ndarray, starts: np.ndarray, target: int) -> np.ndarray:
    """Each member's mean of ``target`` over the days of each month: (months, members, cells)."""
    sums = np.add.reduceat(members[..., target], starts, axis=2, dtype=np.float64)  # (members, cells, months)
    return (sums / np.diff(starts, append=members.shape[2])).transpose(2, 0, 1)


# what an output variable (`jobs.outputs.Output.statistic`) takes from the clipped members (members, cells, days,
# targets) of the cube's days, given the position of each month's first day (`jobs.outputs.month_starts`) and the
# index of the output's target: its values with the cells last, in the order of its dims ((days, cells), ...)
STATISTICS: dict[str, Callable[[np.ndarray, np.ndarray, int], np.ndarray]] = {
    "mean": lambda members, starts, target: members[..., target].mean(axis=0).T,
    "spread": lambda members, starts, target: members[..., target].std(axis=0).T,
    "members_monthly": _monthly_means,
}
MODEL_CACHE = 2  # checkpoints (at a precision and device) a worker keeps loaded: a job's, and the one before it
KOPPEN_FALLBACK = (
    f"A land cell where the 1 km Koppen raster has no data takes the group of the nearest cell that has one within "
    f"{KOPPEN_SEARCH} cells ({KOPPEN_SEARCH * grid.RES:g} deg); a cell with none that close is not computed (NaN)."
)


@dataclass(frozen=True)
class TileJob:
    """What every task needs besides its part: names and dates, never the model or the data."""

    checkpoint: str  # path, readable on every worker
    sha256: str
    members: int  # the first ``members`` ensemble members are used
    precision: str  # tamrl.predict.PRECISIONS
    device: str  # cpu, cuda or auto (a GPU where the worker has one)
    drivers: tuple[str, ...]  # URLs, readable on every worker
    driver_options: tuple[AdapterOptions, ...]  # the adapters' options as used, per driver grid (`GridDrivers.options`)
    bbox: Bbox
    start: date
    end: date
    support_years: tuple[int, ...]

    @property
    def days(self) -> int:
        """Days in the output period."""
        return (self.end - self.start).days + 1

    @property
    def month_starts(self) -> np.ndarray:
        """Positions of the first day of each calendar month in the output period (`jobs.outputs.month_starts`)."""
        return month_starts(pd.date_range(self.start, self.end, freq="D"))

    @property
    def sizes(self) -> dict[str, int]:
        """The sizes of the outputs' dimensions other than lat and lon."""
        return {"time": self.days, "month": len(self.month_starts), "member": self.members}


@dataclass(frozen=True)
class Part:
    """Share ``index`` of ``count`` of a tile's cells to compute (in row-major order): what one task computes."""

    tile: Tile
    index: int = 0
    count: int = 1


@dataclass(frozen=True)
class PartResult:
    """The outputs of a part's cells: tile rows and columns, values per variable (..., cell), the model's time."""

    ii: np.ndarray
    jj: np.ndarray
    values: dict[str, np.ndarray]  # `jobs.outputs.OUTPUTS` name -> (days, cells) or (months, members, cells)
    model_seconds: float  # in the model (ensemble_members): the bare model, for the job's efficiency

    @property
    def pixels(self) -> int:
        return len(self.ii)


def run_dates(start: date, end: date) -> pd.DatetimeIndex:
    """The days the decoder runs over: SPINUP_DAYS before ``start`` to ``end`` inclusive."""
    return pd.date_range(pd.Timestamp(start) - pd.Timedelta(days=SPINUP_DAYS), pd.Timestamp(end), freq="D")


def support_dates(years: Sequence[int]) -> pd.DatetimeIndex:
    """The days of the support years, whole calendar years in order, concatenated."""
    return pd.DatetimeIndex(np.concatenate([pd.date_range(f"{y}-01-01", f"{y}-12-31").values for y in years]))


def compute_part(part: Part, job: TileJob) -> PartResult:
    """The output variables of the part's cells (see the module docstring)."""
    predictor = cached_predictor(job.checkpoint, job.sha256, job.members, job.precision, job.device)
    ii, jj, x, x_support, statics = part_features(part, job, predictor.fs)
    values = {name: np.empty(o.shape(job.sizes, (len(ii),)), o.dtype) for name, o in OUTPUTS.items()}
    starts, seconds = job.month_starts, 0.0
    for lo in range(0, len(ii), PIXEL_BATCH):
        batch = slice(lo, lo + PIXEL_BATCH)
        started = time.perf_counter()
        members = predictor.ensemble_members(x[batch], statics[batch], x_support[batch])[:, :, SPINUP_DAYS:]
        seconds += time.perf_counter() - started
        for name, o in OUTPUTS.items():
            values[name][..., batch] = STATISTICS[o.statistic](members, starts, TARGETS.index(o.target))
    return PartResult(ii, jj, values, seconds)


def tile_values(tile: Tile, sizes: dict[str, int], results: Sequence[PartResult]) -> dict[str, np.ndarray]:
    """The whole tile's variables (dims as `jobs.outputs.Output.dims`, the fill where not computed) from the
    results of its parts; ``sizes``: those of the dimensions other than lat and lon (`TileJob.sizes`)."""
    values = {name: np.full(o.shape(sizes, tile.shape), o.fill, o.dtype) for name, o in OUTPUTS.items()}
    for result in results:
        for name, cells in result.values.items():
            values[name][..., result.ii, result.jj] = cells
    return values


def part_features(
    part: Part, job: TileJob, fs: FeatureSet
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The model inputs of the part's cells to compute: their tile rows and columns, features for the run
    (spin-up included), features of the support years, and static vectors.

    Computed are the land cells (`jobs.static.land_mask`) inside the job's bbox that have a Koppen group (see
    KOPPEN_FALLBACK) and valid drivers (every feature finite after gap filling). Only the drivers of the rows and
    columns that the part's cells span are read.
    """
    tile = part.tile
    cells = _cells(tile, job.bbox)
    share = np.array_split(np.arange(len(cells[0])), part.count)[part.index]
    ii, jj, igbp, koppen = (values[share] for values in cells)
    run, support = run_dates(job.start, job.end), support_dates(job.support_years)
    if not len(ii):
        n_dyn, n_stat = len(fs.dynamic_names), len(fs.static_names)
        empty = np.zeros((0, 0, n_dyn), np.float32)
        return ii, jj, empty, empty, np.zeros((0, n_stat), np.float32)
    days = run.union(support)
    r0, c0 = int(ii.min()), int(jj.min())
    rows = slice(tile.rows.start + r0, tile.rows.start + int(ii.max()) + 1)
    cols = slice(tile.cols.start + c0, tile.cols.start + int(jj.max()) + 1)
    blocks = cached_drivers(job.drivers, job.driver_options).read(rows, cols, days, fs.required)
    series = {name: block[:, ii - r0, jj - c0] for name, block in blocks.items()}  # (days, pixels)
    del blocks  # the whole window's blocks: free them before the features are built
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


@lru_cache(maxsize=MODEL_CACHE)
def cached_predictor(
    path: str, sha256: str, members: int, precision: str = "float32", device: str = "cpu"
) -> Predictor:
    """The checkpoint's Predictor (first ``members`` members, at ``precision`` on ``device``), loaded once per
    process and kept while it is among the MODEL_CACHE most recently used."""
    bundle = load_bundle(path)
    if bundle["sha256"] != sha256:
        raise CheckpointError(f"{path} changed while the job ran (sha256 {bundle['sha256'][:12]}...); start again")
    return Predictor({**bundle, "members": bundle["members"][:members]}, device, precision)


@lru_cache(maxsize=4)
def cached_drivers(urls: tuple[str, ...], options: tuple[AdapterOptions, ...]) -> GridDrivers:
    """The drivers, opened (lazily) once per process."""
    return GridDrivers(urls, options)


def _dynamic(fs: FeatureSet, series: dict[str, np.ndarray], days: pd.DatetimeIndex, dates: pd.DatetimeIndex):
    """Dynamic features (pixels, dates, F) from (days, pixels) driver series, as `tamrl predict` builds them."""
    at = days.get_indexer(dates)
    return dynamic_features(fs, {name: values[at] for name, values in series.items()}, dates).transpose(1, 0, 2)


def _cells(tile: Tile, bbox: Bbox) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tile rows and columns of the cells to compute (row-major), with their IGBP classes and Koppen groups."""
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
