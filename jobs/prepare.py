"""Checking a job before anything is written: its request against the checkpoint and the drivers.

`prepare_job` loads the checkpoint, opens the drivers and checks that they supply the checkpoint's features for
the cells, the days and the support years the job needs, resolving the request's defaults. It returns what the
engine and the planner run on: the `TileJob` every task gets, the cube's spec, the bundle and the drivers. It
raises DataError / ConfigError / CheckpointError (one-line messages) and writes nothing.
"""

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError

from jobs import grid
from jobs.compute import KOPPEN_FALLBACK, SPINUP_DAYS, TileJob, run_dates, support_dates
from jobs.drivers import GridDrivers
from jobs.request import JobRequest, Resources
from jobs.writer import CubeSpec
from tamrl.checkpoint import load_bundle, resolve
from tamrl.errors import ConfigError, DataError, validation_message
from tamrl.features import FeatureSet, check_drivers, feature_set
from tamrl.predict import check_precision
from tamrl.windows import WINDOW

log = logging.getLogger(__name__)

SUPPORT_YEARS = 3  # default support set: up to this many whole years of the driver record, evenly spread


@dataclass(frozen=True)
class PreparedJob:
    """A checked job: the tasks' `TileJob`, the cube's spec, the checkpoint bundle and the opened drivers."""

    job: TileJob
    spec: CubeSpec
    bundle: dict[str, Any]
    drivers: GridDrivers

    def attrs(self) -> dict[str, Any]:
        """Provenance the spec does not hold: drivers, spin-up, support set, members, Koppen fallback, computed
        cells, and the checkpoint's calibration of the 90% intervals (`tamrl.calibration.cube_bounds`)."""
        k = self.bundle["inference"]["support_windows"]
        windows = min(k, len(support_dates(self.job.support_years)) // WINDOW)
        return {
            "drivers": ", ".join(self.job.drivers),
            "spinup_days": SPINUP_DAYS,
            "support_set": (
                f"per pixel, {windows} non-overlapping {WINDOW}-day windows (the checkpoint takes up to {k}) spread "
                "evenly over the pixel's drivers of the support years, concatenated in order"
            ),
            "members_used": f"first {self.job.members} of the checkpoint's {len(self.bundle['members'])}",
            "koppen_fallback": KOPPEN_FALLBACK,
            "computed_cells": (
                "land_mask cells inside the requested bbox (tamrl_spec) that have a Koppen group and valid drivers; "
                "cells of the chunk padding outside the bbox are NaN"
            ),
            **({"tamrl_calibration": json.dumps(self.bundle["calibration"])} if self.bundle.get("calibration") else {}),
        }


def prepare_job(request: JobRequest, resources: Resources) -> PreparedJob:
    """Check ``request`` against its checkpoint and the drivers of ``resources`` (see the module docstring).

    Logs a warning for each of the drivers' notes (a partial day dropped from the end of an hourly record)."""
    bundle = load_bundle(resources.checkpoint_file or resolve(request.checkpoint))
    fs = feature_set(bundle["feature_set"])
    members = _members(bundle, request.members)
    check_precision(request.precision, bundle["model"], torch.device("cpu" if resources.device == "cpu" else "cuda"))
    drivers = GridDrivers(resources.drivers)
    for note in drivers.notes:
        log.warning(note)
    years = _check_drivers(drivers, fs, request)
    resolved = request.model_copy(
        update={"checkpoint": Path(bundle["path"]).stem, "support_years": years, "members": members}
    )
    job = TileJob(
        checkpoint=bundle["path"], sha256=bundle["sha256"], members=members, precision=request.precision,
        device=resources.device, drivers=drivers.urls, driver_options=drivers.options, bbox=request.bbox,
        start=request.start, end=request.end, support_years=years,
    )  # fmt: skip
    return PreparedJob(job, _spec(bundle, resolved, resources, drivers.synthetic), bundle, drivers)


def default_support_years(drivers: GridDrivers, names: Sequence[str], n: int = SUPPORT_YEARS) -> tuple[int, ...]:
    """Up to ``n`` whole calendar years that every variable of ``names`` covers, spread evenly over the record."""
    common = drivers.days(names[0])
    for name in names[1:]:
        common = common.intersection(drivers.days(name))
    years = [y for y in sorted(set(common.year)) if not len(support_dates([y]).difference(common))]
    if not years:
        raise DataError(
            f"the drivers hold no whole calendar year for the support set (they cover {drivers.coverage(names)}); "
            "give drivers with at least one whole year, or --support-years"
        )
    picks = np.unique(np.round(np.linspace(0, len(years) - 1, min(n, len(years)))).astype(int))
    return tuple(years[i] for i in picks)


def _members(bundle: dict[str, Any], members: int | None) -> int:
    available = len(bundle["members"])
    if members is None:
        return available
    if not 1 <= members <= available:
        raise ConfigError(f"--members {members}: the checkpoint has {available} members; give 1 to {available}")
    return members


def _check_drivers(drivers: GridDrivers, fs: FeatureSet, request: JobRequest) -> tuple[int, ...]:
    """DataError unless the drivers supply the features, days and cells the job needs; returns the support years."""
    check_drivers(fs, drivers.variables, f"the drivers ({', '.join(drivers.urls)})")
    first, last = request.start, request.end
    run = run_dates(first, last)
    drivers.check_dates(
        fs.required, run, f"{run[0]:%Y-%m-%d}..{last} (the period {first}..{last} plus {SPINUP_DAYS} days of spin-up)"
    )
    years = request.support_years or default_support_years(drivers, fs.required)
    drivers.check_dates(fs.required, support_dates(years), f"the support years {', '.join(map(str, years))}")
    drivers.check_cells(fs.required, *grid.bbox_slices(request.bbox))
    return years


def _spec(bundle: dict[str, Any], request: JobRequest, resources: Resources, synthetic: bool) -> CubeSpec:
    names = ("chunk_time", "chunk_lat", "chunk_lon")
    chunks = {} if resources.chunks is None else dict(zip(names, resources.chunks, strict=True))
    if resources.tile_chunks is not None:
        chunks["tile_chunks"] = resources.tile_chunks
    try:
        return CubeSpec(
            request=request, **chunks, checkpoint_sha256=bundle["sha256"], feature_set=bundle["feature_set"],
            nee_rule=bundle["inference"]["nee"], inference_mode=bundle["inference"]["mode"], synthetic=synthetic,
        )  # fmt: skip
    except ValidationError as exc:
        raise ConfigError(f"invalid cube parameters: {validation_message(exc.errors(), 'cube')}") from exc
