"""Calibrated 90% intervals: split-conformal on cross-validation residuals, per target, scaled by the spread.

The ensemble spread alone is too narrow: members share their training data, so they agree on errors that every
member makes at a tower nobody trained on. The interval therefore combines the spread with the error the model
makes at unseen towers. On out-of-fold days of a cross-validation over the training sites (days with NEE QC == 1),
each residual is scaled by the day's member sigma plus a floor:

    r = (observed - predicted) / (s + floor),   floor = the median s of that target

and the 5th and 95th percentiles of r per target give the interval

    p05 = predicted + q05 * (s + floor),   p95 = predicted + q95 * (s + floor)

``s`` is the ensemble spread (the population standard deviation of the n members, as in the ``*_std`` outputs)
times ``sigma_factor(n)``, an unbiased estimate of the members' sigma: the spread of a small ensemble is smaller on
average than that of a large one (by 44% for 2 members against 10), so without the factor a calibration fitted on
small cross-validation ensembles would give a 10-member ensemble too wide an interval. The floor keeps days with a
near-zero spread from getting a zero-width interval.

Two choices were made by cross-validation (docs/VALIDATION.md). The quantiles are pooled over IGBP classes: class
quantiles, fitted on the 2 to 40 sites of a class, covered 86-89% of the days at the sites of another fold, the
pooled ones 90%. And the bounds are not clipped at zero: they bound what a tower measures, and 14% of the measured
daily GPP values are below zero.

The calibration is stored in the checkpoint, so every reader of it (``tamrl predict``, evaluation, the gridded
engine) applies the same numbers.
"""

import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tamrl.errors import DataError
from tamrl.features import TARGETS

if TYPE_CHECKING:
    import xarray as xr

LEVELS = (0.05, 0.95)
COLUMNS = ("site", "target", "observed", "predicted", "spread", "nee_qc")


def sigma_factor(members: int) -> float:
    """From the population standard deviation of ``members`` values to an unbiased estimate of their sigma:
    sqrt(n / (n - 1)) / c4(n); 0 for a single member, which has no spread."""
    if members < 2:
        return 0.0
    c4 = math.sqrt(2 / (members - 1)) * math.exp(math.lgamma(members / 2) - math.lgamma((members - 1) / 2))
    return math.sqrt(members / (members - 1)) / c4


def fit_calibration(oof: pd.DataFrame, source: str, members: int) -> dict[str, Any]:
    """Calibration from out-of-fold predictions of ``members``-member ensembles (columns COLUMNS, one row per
    site, day and target).

    ``source`` says where the residuals come from (stored with the numbers, e.g. "5-fold CV over 162 sites").
    """
    missing = [c for c in COLUMNS if c not in oof.columns]
    if missing:
        raise DataError(f"out-of-fold table lacks column(s) {', '.join(missing)}")
    days = oof[(oof["nee_qc"] == 1) & np.isfinite(oof["observed"]) & np.isfinite(oof["predicted"])]
    targets = {}
    for target in TARGETS:
        rows = days[days["target"] == target]
        if rows.empty:
            raise DataError(f"no out-of-fold day with NEE QC == 1 for {target}: cannot calibrate")
        sigma = rows["spread"] * sigma_factor(members)
        floor = float(sigma.median())
        scaled = (rows["observed"] - rows["predicted"]) / (sigma + floor)
        targets[target] = {"floor": floor, "quantiles": [float(np.quantile(scaled, q)) for q in LEVELS]}
    return {
        "method": "split-conformal, residual / (member sigma + floor), per target",
        "levels": list(LEVELS),
        "source": source,
        "members": members,
        "n_days": int(len(days) // len(TARGETS)),
        "n_sites": int(days["site"].nunique()),
        "targets": targets,
    }


def bounds(calibration: dict[str, Any], mean: np.ndarray, spread: np.ndarray, members: int):
    """p05 and p95 (..., 3) from the mean and spread (..., 3) of a ``members``-member ensemble."""
    lo, hi = np.empty_like(mean), np.empty_like(mean)
    for k, target in enumerate(TARGETS):
        lo[..., k], hi[..., k] = target_bounds(calibration, target, mean[..., k], spread[..., k], members)
    return lo, hi


def target_bounds(calibration: dict[str, Any], target: str, mean: "np.ndarray | xr.DataArray",
                  spread: "np.ndarray | xr.DataArray", members: int) -> tuple:  # fmt: skip
    """p05 and p95 of ``target`` from its mean and spread over a ``members``-member ensemble (numpy or xarray
    arrays, computed in their dtype): mean + q * (spread * sigma_factor(members) + floor)."""
    entry = calibration["targets"][target]
    width = spread * sigma_factor(members) + entry["floor"]
    q05, q95 = entry["quantiles"]
    return mean + q05 * width, mean + q95 * width


def cube_bounds(cube: "xr.Dataset", target: str) -> tuple["xr.DataArray", "xr.DataArray"]:
    """The calibrated p05 and p95 of ``target`` (GPP, RECO or NEE) in a cube written by `tamrl upscale`.

    The cube stores the checkpoint's calibration as the JSON attribute ``tamrl_calibration``, so any reader can
    apply the same numbers as ``tamrl predict``:
    p05 = X + q05 * (X_std * sigma_factor(ensemble_size) + floor), p95 = X + q95 * (...).
    """
    if "tamrl_calibration" not in cube.attrs:
        raise DataError("this cube carries no calibration (its checkpoint had none), so it has no 90% intervals")
    calibration = json.loads(cube.attrs["tamrl_calibration"])
    lo, hi = target_bounds(calibration, target, cube[target], cube[f"{target}_std"], int(cube.attrs["ensemble_size"]))
    return lo.rename(f"{target}_p05"), hi.rename(f"{target}_p95")
