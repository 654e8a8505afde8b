"""Calibrated 90% intervals: split-conformal on cross-validation residuals, by target and IGBP class.

The ensemble spread alone is too narrow: members share their training data, so they agree on errors that every
member makes at a tower nobody trained on. The interval therefore combines the spread with the error the model
makes at unseen towers. On out-of-fold days of a cross-validation over the training sites (days with NEE QC == 1),
each residual is scaled by the day's member sigma plus a floor:

    r = (observed - predicted) / (s + floor),   floor = the median s of that target

and the 5th and 95th percentiles of r, per target and IGBP class (classes with fewer than MIN_SITES sites use
the target's pooled percentiles), give the interval

    p05 = predicted + q05 * (s + floor),   p95 = predicted + q95 * (s + floor)

with GPP and RECO bounds clipped at zero like the fluxes. The floor keeps days with a near-zero spread from getting
a zero-width interval. ``s`` is the ensemble spread (the population standard deviation of the n members, as in
the ``*_std`` outputs) times ``sigma_factor(n)``, an unbiased estimate of the members' sigma. The spread of a
small ensemble is smaller on average than that of a large one (by 44% for 2 members against 10), so without the
factor a calibration fitted on small cross-validation ensembles would give a 10-member ensemble too wide an
interval. The calibration is stored in the checkpoint, so every reader of it (``tamrl predict``,
evaluation, the gridded engine) applies the same numbers.
"""

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tamrl.errors import DataError
from tamrl.features import IGBP_CLASSES, TARGETS

if TYPE_CHECKING:
    import xarray as xr

LEVELS = (0.05, 0.95)
MIN_SITES = 5  # an IGBP class with fewer out-of-fold sites uses the pooled percentiles of its target
COLUMNS = ("site", "igbp", "target", "observed", "predicted", "spread", "nee_qc")
NONNEGATIVE = ("GPP", "RECO")


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
        by_class = {
            igbp: _quantiles(scaled[rows["igbp"] == igbp])
            for igbp, n in rows.groupby("igbp")["site"].nunique().items()
            if n >= MIN_SITES
        }
        targets[target] = {"floor": floor, "pooled": _quantiles(scaled), "igbp": by_class}
    return {
        "method": "split-conformal, residual / (spread + floor), by target and IGBP class",
        "levels": list(LEVELS),
        "source": source,
        "members": members,
        "n_days": int(len(days) // len(TARGETS)),
        "n_sites": int(days["site"].nunique()),
        "targets": targets,
    }


def _quantiles(values: pd.Series) -> list[float]:
    return [float(np.quantile(values, level)) for level in LEVELS]


def igbp_of(static: np.ndarray, static_names: list[str]) -> np.ndarray:
    """The IGBP class name of each location from its static vectors (..., n_static), read off the one-hot."""
    first = static_names.index(f"IGBP_{IGBP_CLASSES[0]}")
    return np.asarray(IGBP_CLASSES)[np.argmax(static[..., first : first + len(IGBP_CLASSES)], axis=-1)]


def bounds(
    calibration: dict[str, Any], mean: np.ndarray, spread: np.ndarray, igbp: np.ndarray, members: int
) -> tuple[np.ndarray, np.ndarray]:
    """p05 and p95 (locations, days, 3) from the mean and spread (locations, days, 3) of a ``members``-member
    ensemble and each location's IGBP class (locations,)."""
    lo, hi = np.empty_like(mean), np.empty_like(mean)
    factor = sigma_factor(members)
    for k, target in enumerate(TARGETS):
        entry = calibration["targets"][target]
        q = np.array([entry["igbp"].get(c, entry["pooled"]) for c in igbp], dtype=np.float32)  # (locations, 2)
        width = spread[..., k] * factor + entry["floor"]
        lo[..., k] = mean[..., k] + q[:, None, 0] * width
        hi[..., k] = mean[..., k] + q[:, None, 1] * width
        if target in NONNEGATIVE:
            lo[..., k], hi[..., k] = np.maximum(lo[..., k], 0), np.maximum(hi[..., k], 0)
    return lo, hi


def cube_bounds(cube: "xr.Dataset", target: str) -> tuple["xr.DataArray", "xr.DataArray"]:
    """The calibrated p05 and p95 of ``target`` (GPP, RECO or NEE) in a cube written by `tamrl upscale`.

    The cube stores the checkpoint's calibration as the JSON attribute ``tamrl_calibration`` and each cell's
    MCD12C1 class as ``igbp``, so any reader can apply the same numbers as ``tamrl predict``:
    p05 = X + q05[class] * (X_std * sigma_factor(ensemble_size) + floor), p95 likewise (GPP and RECO bounds
    clipped at zero).
    """
    import json

    import xarray as xr

    if "tamrl_calibration" not in cube.attrs:
        raise DataError("this cube carries no calibration (its checkpoint had none), so it has no 90% intervals")
    entry = json.loads(cube.attrs["tamrl_calibration"])["targets"][target]
    codes = cube["igbp"].values.astype(int)
    names = np.asarray(("", *IGBP_CLASSES, *[""] * 239))[np.clip(codes, 0, 255)]
    q = np.array([[entry["igbp"].get(c, entry["pooled"])[i] for c in names.ravel()] for i in (0, 1)])
    q_lo, q_hi = (xr.DataArray(v.reshape(codes.shape), dims=cube["igbp"].dims) for v in q)
    width = cube[f"{target}_std"] * sigma_factor(int(cube.attrs["ensemble_size"])) + entry["floor"]
    lo, hi = cube[target] + q_lo * width, cube[target] + q_hi * width
    if target in NONNEGATIVE:
        lo, hi = lo.clip(min=0), hi.clip(min=0)
    return lo.rename(f"{target}_p05"), hi.rename(f"{target}_p95")
