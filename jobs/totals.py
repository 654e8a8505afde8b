"""Carbon totals over regions: Tg C per region, period and flux, with the ensemble's spread and the calibrated range.

For each region (`jobs.regions`) and each row of the answer (the whole period, or its years, months or days):

- ``total`` [Tg C] is the sum over the region's computed cells and the row's days of the daily ensemble-mean flux
  times the cell's weight (covered fraction x area on the sphere);
- ``mean`` [g C m-2 d-1] is that total over the computed area and the days;
- ``total_std``, ``total_p05`` and ``total_p95`` describe the members' totals: each member's total is the ensemble
  total plus, per month, the row's days in that month times the region's sum of the member's deviation from the
  ensemble mean in the cube's per-member monthly means (`jobs.outputs.members_of`). For rows of whole months this is
  exactly each member's own total; for a row that covers part of a month (a day, or a period starting mid-month), a
  member's daily deviations inside the month are taken as their monthly mean. The standard deviation is over the
  members (population, as the cube's daily spread), the percentiles interpolate linearly between members;
- ``total_cal_p05`` and ``total_cal_p95``, where the cube carries a calibration (`tamrl.calibration`): the sum of
  the calibrated daily 90% bounds of the region's cells. That is the 90% range if the errors of all cells and days
  of a row move together; errors that partly cancel give a narrower true range, so it is an upper bound on the width
  under the calibration's assumptions (docs/ACCOUNTING.md).

Every region reports its area, the area the model computed and the area it did not (water, ice, cells without a
Koppen group or drivers); nothing is dropped silently. Values are read one time chunk and one spatial chunk at a
time (only the chunks the regions touch), a few chunks at once.
"""

import json
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import Literal

import numpy as np
import pandas as pd
import zarr
from pydantic import BaseModel, ConfigDict, field_validator
from scipy import sparse

from jobs import grid
from jobs.outputs import FLUXES, members_of, month_starts, spread_of
from jobs.regions import CellWeights, Region
from jobs.writer import CubeSpec
from tamrl.calibration import sigma_factor
from tamrl.errors import DataError, TooLargeError

G_PER_TG = 1e12
READERS = 4  # chunks read at once (zarr's decoding releases the GIL); bounds memory to READERS chunks
FREQUENCIES = {"all": None, "year": "Y", "month": "M", "day": "D"}  # row periods: pandas period codes
NEE_RULES = {
    "balance": "NEE = RECO - GPP for every member and day (the ensemble's GPP and RECO clipped at zero first), so "
    "NEE totals equal RECO totals minus GPP totals",
    "head": "NEE is the model's own NEE output, not RECO - GPP; NEE totals need not equal RECO minus GPP totals",
}


class TotalsQuery(BaseModel):
    """What to total: the days (default: the cube's), the rows, and the fluxes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: date | None = None
    end: date | None = None
    freq: Literal["all", "year", "month", "day"] = "all"
    variables: tuple[str, ...] = FLUXES

    @field_validator("variables")
    @classmethod
    def _known(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [n for n in names if n not in FLUXES]
        if unknown or not names:
            raise ValueError(f"variables must name some of {', '.join(FLUXES)}; got {', '.join(names) or 'none'}")
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class CubeSource:
    """The cube totals read: its zarr group, spec and the global row and column of its first cell."""

    name: str
    group: zarr.Group
    spec: CubeSpec
    origin: tuple[int, int]

    @classmethod
    def open(cls, url: str, name: str | None = None) -> "CubeSource":
        """The cube at ``url`` (a path or fsspec URL), or DataError saying it holds none."""
        try:
            group = zarr.open_group(url, mode="r", zarr_format=3)
            spec = CubeSpec.model_validate_json(group.attrs["tamrl_spec"])
        except (FileNotFoundError, KeyError) as exc:
            raise DataError(f"{url} holds no tamrl cube; give the path of a cube that tamrl upscale wrote") from exc
        origin = grid.cell_index(float(group["lat"][0]), float(group["lon"][0]))
        return cls(name or url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".zarr"), group, spec, origin)

    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)


@dataclass(frozen=True)
class Row:
    """One period of the answer: first and last day, inclusive, and its days' indices in the cube."""

    start: date
    end: date
    days: slice


@dataclass(frozen=True)
class RegionTotals:
    """One region's areas and, per row and flux, its total, spread, ranges and mean."""

    region: Region
    area_km2: float
    computed_area_km2: float
    cells: int  # cells the region touches
    computed_cells: int
    rows: list[Row]
    values: list[dict[str, dict[str, float | None]]]  # per row: flux -> statistic -> value

    @property
    def not_computed_area_km2(self) -> float:
        return self.area_km2 - self.computed_area_km2


def cube_days(spec: CubeSpec, query: TotalsQuery) -> slice:
    """The cube's day indices of the query's period, or DataError when the period leaves the cube."""
    times = spec.times
    start, end = pd.Timestamp(query.start or times[0]), pd.Timestamp(query.end or times[-1])
    if end < start:
        raise DataError(f"end {end:%Y-%m-%d} is before start {start:%Y-%m-%d}; give start <= end")
    if start < times[0] or end > times[-1]:
        raise DataError(
            f"the period {start:%Y-%m-%d}..{end:%Y-%m-%d} leaves the cube, which covers {times[0]:%Y-%m-%d}.."
            f"{times[-1]:%Y-%m-%d}; totals are never taken over part of a period silently, so ask within it"
        )
    return slice(int(times.searchsorted(start)), int(times.searchsorted(end)) + 1)


def rows_of(spec: CubeSpec, days: slice, freq: str) -> list[Row]:
    """The answer's rows: the whole period, or its calendar years, months or days (the first and last clipped)."""
    times = spec.times[days]
    code = FREQUENCIES[freq]
    labels = np.zeros(len(times), np.int64) if code is None else times.to_period(code).asi8
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    stops = np.r_[starts[1:], len(times)]
    return [
        Row(times[a].date(), times[b - 1].date(), slice(days.start + a, days.start + b))
        for a, b in zip(starts, stops, strict=True)
    ]


def check_inside(source: CubeSource, regions: Sequence[Region], weights: Sequence[CellWeights]) -> None:
    """DataError for a region whose cells leave the cube's bbox."""
    rows, cols = grid.bbox_slices(source.spec.request.bbox)
    for region, w in zip(regions, weights, strict=True):
        inside = (w.rows >= rows.start) & (w.rows < rows.stop) & (w.cols >= cols.start) & (w.cols < cols.stop)
        if not inside.all():
            raise DataError(
                f"feature {region.index} (bounds {_rounded_bounds(region)}) reaches outside cube {source.name}, which "
                f"covers (W, S, E, N) {tuple(source.spec.request.bbox)}; clip the region to the cube or use a cube "
                "that holds it"
            )


def read_cost(weights: Sequence[CellWeights], days: slice, query: TotalsQuery) -> int:
    """Cube values a totals request reads: its cells x days x (flux and spread) per variable."""
    cells = len(np.unique(np.concatenate([w.rows * grid.N_LON + w.cols for w in weights])))
    return cells * (days.stop - days.start) * 2 * len(query.variables)


def totals(source: CubeSource, regions: Sequence[Region], weights: Sequence[CellWeights], query: TotalsQuery,
           limit: int) -> list[RegionTotals]:  # fmt: skip
    """The totals of ``regions``, whose cells are ``weights`` (`jobs.regions.cell_weights`; see the module
    docstring); TooLargeError when cells x days x values read exceed ``limit``."""
    days = cube_days(source.spec, query)
    check_inside(source, regions, weights)
    cost = read_cost(weights, days, query)
    if cost > limit:
        raise TooLargeError(
            f"the request reads {cost:,} values (cells x days x 2 per variable), over the limit of {limit:,}; ask "
            "for fewer days, fewer variables or smaller regions"
        )
    cells = _Cells(source, weights)
    rows = rows_of(source.spec, days, query.freq)
    computed = cells.computed(query.variables[0], days)
    area = cells.matrix @ computed.astype(np.float64)  # m2 per region
    values = [[{} for _ in rows] for _ in regions]
    calibration = json.loads(source.attrs.get("tamrl_calibration", "null"))
    for name in query.variables:
        daily = cells.daily_sums(name, days, computed)  # (days, regions) g per day
        spread = cells.daily_sums(spread_of(name), days, computed) if calibration else None
        deviation = cells.member_deviations(name, computed)  # (months, members, regions) g m-2 d-1 x m2, or None
        for r, row in enumerate(rows):
            at = slice(row.days.start - days.start, row.days.stop - days.start)
            total = daily[at].sum(axis=0)
            members = None if deviation is None else total + np.einsum("k,kmf->mf", cells.month_days(row), deviation)
            cal = None if spread is None else _calibrated(calibration, name, total, spread[at].sum(0), area,
                                                          row.days.stop - row.days.start, source)  # fmt: skip
            for f in range(len(regions)):
                values[f][r][name] = _statistics(total[f], members, cal, f, area[f], row)
    counts = cells.touches @ computed.astype(np.float64)
    return [
        RegionTotals(region, w.area_km2, float(area[f]) / 1e6, len(w.rows), int(counts[f]), rows, values[f])
        for f, (region, w) in enumerate(zip(regions, weights, strict=True))
    ]


def _statistics(total: float, members: np.ndarray | None, cal: tuple | None, f: int, area: float,
                row: Row) -> dict[str, float | None]:  # fmt: skip
    """One region's, row's and flux's numbers in Tg C (totals) and g C m-2 d-1 (mean)."""
    n_days = row.days.stop - row.days.start
    out: dict[str, float | None] = {
        "total": total / G_PER_TG,
        "total_std": None,
        "total_p05": None,
        "total_p95": None,
        "mean": total / area / n_days if area > 0 else None,
    }
    if members is not None:
        tg = members[:, f] / G_PER_TG
        out |= {"total_std": float(tg.std()), "total_p05": float(np.percentile(tg, 5)),
                "total_p95": float(np.percentile(tg, 95))}  # fmt: skip
    if cal is not None:
        out |= {"total_cal_p05": float(cal[0][f]) / G_PER_TG, "total_cal_p95": float(cal[1][f]) / G_PER_TG}
    return out


def _calibrated(calibration: dict, name: str, total: np.ndarray, spread: np.ndarray, area: np.ndarray, n_days: int,
                source: CubeSource) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The sums of the calibrated daily p05 and p95 of the regions' computed cells (see `tamrl.calibration`)."""
    entry = calibration["targets"][name]
    width = spread * sigma_factor(int(source.spec.request.members)) + entry["floor"] * area * n_days
    q05, q95 = entry["quantiles"]
    return total + q05 * width, total + q95 * width


class _Cells:
    """The cells the regions touch, grouped by the cube's spatial chunks, and the regions' weights on them."""

    def __init__(self, source: CubeSource, weights: Sequence[CellWeights]):
        self.source = source
        keys = np.concatenate([w.rows * grid.N_LON + w.cols for w in weights])
        cells, where = np.unique(keys, return_inverse=True)
        self.i = cells // grid.N_LON - source.origin[0]  # local rows and columns in the cube
        self.j = cells % grid.N_LON - source.origin[1]
        owner = np.repeat(np.arange(len(weights)), [len(w.rows) for w in weights])
        area = np.concatenate([w.area_m2 for w in weights])
        self.matrix = sparse.csr_matrix((area, (owner, where)), shape=(len(weights), len(cells)))
        self.touches = sparse.csr_matrix((np.ones_like(area), (owner, where)), shape=self.matrix.shape)
        self._columns = self.matrix.tocsc()  # sliced by the cells of a chunk
        self._month_starts = month_starts(source.spec.times)  # the member variables' months, as day indices

    def computed(self, name: str, days: slice) -> np.ndarray:
        """Whether each cell holds values (the cube's cells are computed on all days or on none)."""
        out = np.zeros(len(self.i), bool)
        for cells, values in self._chunks(self.source.group[name], (slice(days.start, days.start + 1),)):
            out[cells] = np.isfinite(values[0])
        return out

    def daily_sums(self, name: str, days: slice, computed: np.ndarray) -> np.ndarray:
        """(days, regions): the regions' weighted sums of daily ``name`` over their computed cells, read one time
        chunk and one spatial chunk at a time."""
        array = self.source.group[name]
        step = array.chunks[0]
        sums = np.zeros((self.matrix.shape[0], days.stop - days.start))
        start = days.start
        while start < days.stop:
            block = slice(start, min((start // step + 1) * step, days.stop))
            at = slice(block.start - days.start, block.stop - days.start)
            for cells, values in self._chunks(array, (block,)):
                ok = computed[cells]
                if not np.isfinite(values[:, ok]).all():
                    raise DataError(
                        f"cube {self.source.name} has {name} gaps at computed cells; the cube is damaged or "
                        "incomplete: run its job again to resume it"
                    )
                sums[:, at] += self._columns[:, cells] @ np.where(ok, values, 0).T
            start = block.stop
        return sums.T

    def member_deviations(self, name: str, computed: np.ndarray) -> np.ndarray | None:
        """(months, members, regions): the weighted sums of each member's monthly mean minus the ensemble's, or None
        for a cube without the per-member layer."""
        key = members_of(name)
        if key not in self.source.group:
            return None
        array = self.source.group[key]
        months, members = array.shape[:2]
        sums = np.zeros((self.matrix.shape[0], months * members))
        for cells, values in self._chunks(array, (slice(None), slice(None))):  # (months, members, cells)
            values = np.where(computed[cells], values, 0)
            deviation = (values - values.mean(axis=1, keepdims=True)).reshape(months * members, -1)
            sums += self._columns[:, cells] @ deviation.T
        return sums.T.reshape(months, members, -1)

    def month_days(self, row: Row) -> np.ndarray:
        """Days of ``row`` in each month of the member variables."""
        month = np.searchsorted(self._month_starts, np.arange(row.days.start, row.days.stop), side="right") - 1
        return np.bincount(month, minlength=len(self._month_starts)).astype(np.float64)

    def _chunks(self, array: zarr.Array, lead: tuple[slice, ...]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(cells, ``array[*lead, i, j]`` at those cells) for each spatial chunk the cells touch, READERS at once."""
        cy, cx = array.chunks[-2:]
        chunk = (self.i // cy) * (array.shape[-1] // cx + 1) + self.j // cx
        groups = [np.flatnonzero(chunk == c) for c in np.unique(chunk)]

        def read(cells: np.ndarray) -> np.ndarray:
            i, j = self.i[cells], self.j[cells]
            block = array[(*lead, slice(int(i.min()), int(i.max()) + 1), slice(int(j.min()), int(j.max()) + 1))]
            return block[..., i - i.min(), j - j.min()]

        with ThreadPoolExecutor(READERS) as pool:
            for k in range(0, len(groups), READERS):
                batch = groups[k : k + READERS]
                yield from zip(batch, pool.map(read, batch), strict=True)


def _rounded_bounds(region: Region) -> tuple[float, ...]:
    return tuple(round(v, 4) for v in region.bounds)
