"""The XGBoost baseline, trained the way FLUXCOM-X-BASE is: per-day features, one booster per flux.

Settings of FLUXCOM-X: hist trees, learning rate 0.05, max_depth 10, min_child_weight 5, max_leaves 31, up to
1000 rounds. The number of rounds is chosen on the validation sites (early stopping), the baseline's best honest
chance. Inputs are the checkpoint's daily features and statics, one row per day: with a ``*_context`` feature set
they carry the FLUXCOM-X temporal context (trailing means, vegetation indices, days since a clear view), so the
trees see the past as FLUXCOM-X's do. Sample weights are the same w_qc * w_igbp * w_koppen as the neural models'.
"""

import logging
from typing import Any

import numpy as np
import torch
import xgboost as xgb

from tamrl.config import TrainConfig, cpu_threads
from tamrl.dataset import SiteArrays
from tamrl.features import TARGETS
from tamrl.scaler import Scaler

log = logging.getLogger(__name__)

PARAMS = {
    "tree_method": "hist", "learning_rate": 0.05, "max_depth": 10, "min_child_weight": 5, "max_leaves": 31,
    "objective": "reg:squarederror",
}  # fmt: skip


def design(x: np.ndarray, static: np.ndarray) -> np.ndarray:
    """Per-day rows: scaled dynamic features followed by the static vector; ``x`` is (..., days, n_dynamic)."""
    statics = np.broadcast_to(static[..., None, :], (*x.shape[:-1], static.shape[-1]))
    return np.concatenate([x, statics], axis=-1).reshape(-1, x.shape[-1] + static.shape[-1])


def _rows(arrays: list[SiteArrays], y_scaler: Scaler, target: int) -> xgb.DMatrix:
    features, labels, weights = [], [], []
    for a in arrays:
        keep = a.weight[:, target] > 0
        features.append(design(a.x[keep], a.static))
        labels.append(y_scaler.inverse(a.y)[keep, target])
        weights.append(a.weight[keep, target])
    return xgb.DMatrix(np.concatenate(features), np.concatenate(labels), weight=np.concatenate(weights),
                       nthread=cpu_threads())


def fit_xgboost(
    cfg: TrainConfig, fit: list[SiteArrays], val: list[SiteArrays], y_scaler: Scaler, seed: int
) -> dict[str, torch.Tensor]:
    """One member: a booster per target, serialised as bytes tensors (weights_only-safe)."""
    member = {}
    for i, target in enumerate(TARGETS):
        train_rows, val_rows = _rows(fit, y_scaler, i), _rows(val, y_scaler, i)
        booster = xgb.train(
            {**PARAMS, "seed": seed, "nthread": cpu_threads()}, train_rows, num_boost_round=cfg.xgb_rounds,
            evals=[(val_rows, "validation")], early_stopping_rounds=cfg.xgb_early_stopping, verbose_eval=False,
        )
        best = booster.best_iteration + 1
        log.info("xgboost %s: %d rounds chosen on validation sites (of at most %d)", target, best, cfg.xgb_rounds)
        raw = booster[:best].save_raw("ubj")
        member[target] = torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone()
    return member


class XGBoostEnsemble:
    """The members of an XGBoost checkpoint; per-day prediction, so the inference mode does not apply."""

    def __init__(self, bundle: dict[str, Any], device: torch.device, precision: str = "float32"):
        self.x_scaler = Scaler.from_state(bundle["scalers"]["x"])
        self.members = []
        for member in bundle["members"]:
            boosters = {}
            for target in TARGETS:
                booster = xgb.Booster()
                booster.load_model(bytearray(member[target].numpy().tobytes()))
                # the threads this process gives the model: in a Dask worker, its share of the host's cores
                booster.set_param({"nthread": torch.get_num_threads()})
                boosters[target] = booster
            self.members.append(boosters)

    def predict(
        self, x_raw: np.ndarray, static: np.ndarray, mode: str, k: int, support_raw: np.ndarray | None = None
    ) -> np.ndarray:
        """Per-member predictions (members, locations, days, 3); mode, k and support do not apply to trees."""
        rows = xgb.DMatrix(design(self.x_scaler.transform(x_raw), static))
        out = np.stack([
            np.stack([m[t].predict(rows) for t in TARGETS], axis=-1) for m in self.members
        ])
        return out.reshape(len(self.members), *x_raw.shape[:2], len(TARGETS)).astype(np.float32)
