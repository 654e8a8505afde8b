"""What the service answers, as plain functions on the catalog: point series, bbox subsets, regional totals, maps.

Every function raises domain errors (`tamrl.errors`) with messages that say what exists, so the API maps them to
4xx answers once.

Which cube answers a query without a cube name is a fixed rule, so that a new cube cannot change answers silently:
of the cubes that hold the point (or the whole bbox) and overlap the period, the only one; else the configured
default cube (`Settings.default_cube`) if it is one of them; else ConflictError (409) naming them all. A new cube can
turn an answer into a 409, never into another cube's numbers.

A point resolves to the 0.05 deg cell that contains it (`jobs.grid.cell_index`), never to the nearest computed cell:
a point outside every cube's bbox, or on water or ice, is NotFoundError.
"""

import math
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import xarray as xr

from jobs import grid
from jobs.outputs import FLUXES, spread_of
from jobs.regions import bbox_region
from jobs.totals import G_PER_TG, NEE_RULES, CubeSource, TotalsQuery, totals
from service.catalog import Catalog, NotCached, OpenCube
from tamrl.calibration import target_bounds
from tamrl.errors import ConflictError, DataError, NotFoundError, TooLargeError
from tamrl.features import TARGET_UNITS

SERVER_ATTRS = ("drivers",)  # cube attributes that name paths on the server: never served


@dataclass(frozen=True)
class Period:
    """Requested days, either end open (then the cube's own first or last day)."""

    start: date | None = None
    end: date | None = None

    def __post_init__(self) -> None:
        if self.start and self.end and self.end < self.start:
            raise DataError(f"end {self.end} is before start {self.start}; give start <= end")

    def on(self, cube: OpenCube) -> slice | None:
        """The cube's time indices inside the period, or None when they do not overlap."""
        times = cube.times
        lo = 0 if self.start is None else times.searchsorted(pd.Timestamp(self.start))
        hi = len(times) if self.end is None else times.searchsorted(pd.Timestamp(self.end), side="right")
        return slice(int(lo), int(hi)) if lo < hi else None


@dataclass(frozen=True)
class PointSeries:
    """A pixel's daily series from one cube."""

    cube: OpenCube
    cell: tuple[int, int]  # local row, column
    days: slice
    values: dict[str, np.ndarray]  # a flux and its spread (`jobs.outputs.spread_of`) -> (days,)

    def bounds(self, name: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The calibrated daily 5% and 95% bounds of flux ``name``, by `tamrl.calibration.cube_bounds`' formula, or
        None for a cube without a calibration."""
        calibration = self.cube.calibration
        if calibration is None:
            return None
        mean, spread = self.values[name], self.values[spread_of(name)]
        return target_bounds(calibration, name, mean, spread, int(self.cube.attrs["ensemble_size"]))


@dataclass(frozen=True)
class PointCell:
    """Where a point query reads: a land cell of one cube and the days of the period, found before any value is
    read, so that the read can be admitted by its cost (`service.admission`)."""

    cube: OpenCube
    cell: tuple[int, int]  # local row, column
    days: slice

    def cost(self, variables: list[str]) -> int:
        """Values decoded to read ``variables`` and their spreads (whole chunks)."""
        start, stop = self.days.start, self.days.stop
        return sum(self.cube.series_cost(key, start, stop) for name in variables for key in (name, spread_of(name)))

    def read(self, variables: list[str], cached_only: bool = False) -> PointSeries:
        """The series of ``variables`` and their spreads; ``cached_only``: NotCached where a read would need the
        store."""
        (i, j), days = self.cell, self.days
        values = {
            key: self.cube.series(key, i, j, days.start, days.stop, cached_only)
            for name in variables
            for key in (name, spread_of(name))
        }
        return PointSeries(self.cube, self.cell, days, values)


def parse_variables(text: str | None) -> list[str]:
    """Flux names from a comma-separated list (default: all three); DataError naming the valid ones."""
    if not text:
        return list(FLUXES)
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in FLUXES]
    if not names:
        raise DataError(f"variables {text!r} names no variable; choose from {', '.join(FLUXES)}")
    if unknown:
        raise DataError(f"unknown variable(s) {', '.join(unknown)}; choose from {', '.join(FLUXES)}")
    return list(dict.fromkeys(names))


def locate_point(catalog: Catalog, lat: float, lon: float, period: Period, cube_name: str | None = None,
                 cached_only: bool = False) -> PointCell:  # fmt: skip
    """The land cell holding (lat, lon) and the days of ``period``, in the cube named or chosen by the module's rule.

    ``cached_only``: raise NotCached where the cube's metadata is not in memory yet.
    """
    row, col = grid.cell_index(lat, lon)
    cubes = [catalog.get(cube_name)] if cube_name else catalog.cubes()
    for cube in cubes:
        if cached_only and not cube.ready:
            raise NotCached(cube.name)
        if not cube.ready:
            cube.prepare()
    holding = [c for c in cubes if c.contains(row, col)]
    if not holding:
        centre = f"{grid.lat_coords()[row]:.3f}, {grid.lon_coords()[col]:.3f}"
        raise NotFoundError(
            f"lat={lat}, lon={lon} (the cell centred at {centre}; a point on a cell edge belongs to the cell south "
            f"and east of it) lies outside every cube; cubes: {_extents(cubes)}"
        )
    cube, days = _choose(holding, period, f"lat={lat}, lon={lon}", catalog.default)
    i, j = cube.local(row, col)
    if not cube.land[i, j]:
        raise NotFoundError(
            f"lat={lat}, lon={lon} is in a cell that is not computed (water, permanent ice or no Koppen group; "
            f"IGBP class {int(cube.igbp[i, j])}); fluxes exist for land cells only"
        )
    return PointCell(cube, (i, j), days)


def bbox_subset(catalog: Catalog, bbox: tuple[float, float, float, float], period: Period, variables: list[str],
                limit: int, cube_name: str | None = None, spreads: bool = True) -> xr.Dataset:  # fmt: skip
    """The cells of ``bbox`` and days of ``period`` (``variables``, with their spreads if ``spreads``) from the cube
    named or chosen by the module's rule (among those holding the whole bbox).

    TooLargeError when cells x days x variables read exceed ``limit``. The subset's attributes are the cube's, with
    its own time coverage and bbox, and without server paths.
    """
    rows, cols = grid.bbox_slices(bbox)
    cube, days = cube_holding(catalog, rows, cols, period, f"bbox {bbox}", cube_name)
    names = [v for name in variables for v in ((name, spread_of(name)) if spreads else (name,))]
    size = (rows.stop - rows.start) * (cols.stop - cols.start) * (days.stop - days.start) * len(names)
    if size > limit:
        raise TooLargeError(
            f"the request covers {size:,} values (cells x days x variables), over the limit of {limit:,}; ask for "
            "a smaller bbox, fewer days or fewer variables"
        )
    r0, c0 = cube.origin
    subset = cube.dataset[[*names, "land_mask", "lat_bnds", "lon_bnds"]].isel(
        time=days, lat=slice(rows.start - r0, rows.stop - r0), lon=slice(cols.start - c0, cols.stop - c0)
    )
    times = cube.times[days]
    attrs = {k: v for k, v in cube.dataset.attrs.items() if k not in SERVER_ATTRS}
    subset.attrs = attrs | {
        "tamrl_cube": cube.name, "tamrl_subset_bbox": list(bbox),
        "time_coverage_start": f"{times[0]:%Y-%m-%d}", "time_coverage_end": f"{times[-1]:%Y-%m-%d}",
    }  # fmt: skip
    return subset


def cube_holding(catalog: Catalog, rows: slice, cols: slice, period: Period, what: str,
                 cube_name: str | None = None) -> tuple[OpenCube, slice]:  # fmt: skip
    """The cube named, or chosen by the module's rule among those holding all of global ``rows`` and ``cols``, and
    its days of ``period``; ``what`` names the request in errors."""
    cubes = [catalog.get(cube_name)] if cube_name else catalog.cubes()
    holding = [c for c in cubes if _holds(c, rows, cols)]
    if not holding:
        raise NotFoundError(f"no cube holds the whole {what}; cubes: {_extents(cubes)}")
    return _choose(holding, period, what, catalog.default)


def cube_overlapping(catalog: Catalog, rows: slice, cols: slice, period: Period, what: str,
                     cube_name: str | None = None) -> tuple[OpenCube, slice]:  # fmt: skip
    """The cube named, or chosen by the module's rule among those whose bbox overlaps global ``rows`` and ``cols``
    (a map tile), and its days of ``period``; ``what`` names the request in errors."""
    cubes = [catalog.get(cube_name)] if cube_name else catalog.cubes()
    touching = [c for c in cubes if _overlaps(c, rows, cols)]
    if not touching:
        raise NotFoundError(f"no cube overlaps {what}; cubes: {_extents(cubes)}")
    return _choose(touching, period, what, catalog.default)


def regional(cube: OpenCube, bbox: tuple[float, float, float, float], days: slice, variables: list[str], how: str,
             limit: int) -> dict:  # fmt: skip
    """The bbox's ``total`` (Tg C over the days) or ``mean`` (g C m-2 d-1 over the computed area and the days) per
    variable, with the members' spread and ranges, and its areas: `jobs.totals` over the bbox's cells, each whole
    (`jobs.regions.bbox_region`), so that a bbox and the rectangle on its cells' edges give the same numbers."""
    region, weights = bbox_region(bbox)
    source = CubeSource(cube.name, cube.group, cube.spec, cube.origin)
    times = cube.times[days]
    query = TotalsQuery(start=times[0].date(), end=times[-1].date(), variables=tuple(variables))
    (result,) = totals(source, [region], [weights], query, limit)
    scale = 1 / G_PER_TG if how == "total" else 1 / (result.computed_area_km2 * 1e6 * len(times) or math.nan)
    units = "Tg C" if how == "total" else TARGET_UNITS
    described = {"total": "summed over the period", "mean": "area-weighted mean daily flux over the computed area"}
    out = {}
    for name, values in result.values[0].items():
        total = values["total"] * G_PER_TG
        stats = {key.removeprefix("total_"): _scaled(values[key] * G_PER_TG, scale) for key in values
                 if key.startswith("total_") and values[key] is not None}  # fmt: skip
        out[name] = {"value": _scaled(total, scale), "units": units, "description": f"{name} {described[how]}",
                     **stats}  # fmt: skip
    return {
        "area_km2": result.area_km2, "computed_area_km2": result.computed_area_km2,
        "not_computed_area_km2": result.not_computed_area_km2, "cells": result.cells,
        "computed_cells": result.computed_cells, "not_computed_cells": result.cells - result.computed_cells,
        "days": len(times), "variables": out, "nee_rule": NEE_RULES[cube.spec.nee_rule],
    }  # fmt: skip


def _scaled(value: float, scale: float) -> float | None:
    """``value`` x ``scale``, or None where the scale is undefined (a mean over no computed area)."""
    return None if math.isnan(scale) else value * scale


def _choose(cubes: list[OpenCube], period: Period, what: str, default: str | None) -> tuple[OpenCube, slice]:
    """Of ``cubes`` (those holding ``what``), the one overlapping ``period`` by the module's rule, and its days."""
    covering = [(cube, days) for cube in cubes if (days := period.on(cube)) is not None]
    if not covering:
        raise NotFoundError(f"no cube holding {what} covers {_period(period)}; {_coverage(cubes)}")
    chosen = covering if len(covering) == 1 else [item for item in covering if item[0].name == default]
    if not chosen:
        names = ", ".join(cube.name for cube, _ in covering)
        raise ConflictError(
            f"several cubes hold {what} over {_period(period)}: {names}; give cube= with one of them (the service has "
            "no default cube among them)"
        )
    return chosen[0]


def _holds(cube: OpenCube, rows: slice, cols: slice) -> bool:
    have_rows, have_cols = cube.requested
    return (
        have_rows.start <= rows.start and rows.stop <= have_rows.stop
        and have_cols.start <= cols.start and cols.stop <= have_cols.stop
    )  # fmt: skip


def _overlaps(cube: OpenCube, rows: slice, cols: slice) -> bool:
    have_rows, have_cols = cube.requested
    return (
        have_rows.start < rows.stop and rows.start < have_rows.stop
        and have_cols.start < cols.stop and cols.start < have_cols.stop
    )  # fmt: skip


def _extents(cubes: list[OpenCube]) -> str:
    if not cubes:
        return "none are available yet"
    return "; ".join(f"{c.name} bbox (W,S,E,N) {tuple(c.spec.request.bbox)}" for c in cubes)


def _coverage(cubes: list[OpenCube]) -> str:
    return "; ".join(f"{c.name} covers {c.spec.request.start}..{c.spec.request.end}" for c in cubes)


def _period(period: Period) -> str:
    return f"{period.start or 'the start'}..{period.end or 'the end'}"
