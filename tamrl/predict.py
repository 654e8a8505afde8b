"""Prediction from drivers alone: the single source of truth that evaluation and the gridded engine share.

An ensemble turns unscaled daily features (locations, days, n_dynamic) and static vectors (locations, n_static)
into per-member GPP, RECO and NEE in g C m-2 d-1. ``clipped`` then clips GPP and RECO at zero and applies the
checkpoint's NEE rule; ``finish`` reduces the clipped members to a mean and a spread.

Inference modes (the decoder was trained on 45-day windows):
- ``stateful``: one pass over the whole period, the LSTM state carried from the first day;
- ``windowed``: 45-day windows with a stride of 15, each day taken from the window where it has the most
  spin-up (the last 15 days of a window; the first window keeps all its days).
NEE rules: ``head`` keeps the model's NEE output; ``balance`` sets NEE = RECO - GPP after clipping, so the three
maps add up exactly. The checkpoint records the pair chosen on validation sites.

Precision: ``float32`` (the default) or mixed precision (``bfloat16``, and ``float16`` on a GPU) through
``torch.autocast``. On the 8 bundled held-out sites the shipped checkpoint's bfloat16 ensemble mean stays within
0.02 g C m-2 d-1 of float32 (mean absolute difference 0.003), against RMSEs of 1-2 g C m-2 d-1; the tests hold it
to PRECISION_TOLERANCE.
"""

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tamrl.calibration import bounds
from tamrl.checkpoint import load_bundle
from tamrl.config import TrainConfig
from tamrl.data import Site, daily_calendar
from tamrl.errors import ConfigError, DataError
from tamrl.features import (
    TARGETS,
    FeatureSet,
    check_drivers,
    climatology,
    climatology_channels,
    dynamic_features,
    feature_set,
    static_features,
)  # fmt: skip
from tamrl.model import NEURAL_MODELS, modulates
from tamrl.scaler import Scaler
from tamrl.windows import STRIDE, WINDOW, spread_support
from tamrl.xgb import XGBoostEnsemble

MODES = ("stateful", "windowed")
NEE_RULES = ("head", "balance")
CHUNK = 256  # locations per forward pass on a CPU (the fastest batch for these LSTMs there)
GPU_CHUNK = 8192  # on a GPU: large batches keep it busy
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
PRECISION_TOLERANCE = 0.05  # g C m-2 d-1: the largest allowed |mixed - float32| of an ensemble mean


def pick_device(name: str) -> torch.device:
    """``auto`` takes a GPU when one is present."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise DataError("--device cuda was asked for, but torch sees no GPU; use --device cpu")
        return torch.device("cuda")
    return torch.device("cpu")


def build_network(cfg: TrainConfig, n_dynamic: int, n_static: int, n_clim: int) -> torch.nn.Module:
    """A registered network; ``n_clim`` is the size of the climatology vector (unused unless cfg.climatology)."""
    return NEURAL_MODELS[cfg.model](n_dynamic, n_static, cfg.hidden, cfg.embedding, cfg.dropout,
                                    n_clim if cfg.climatology else 0, cfg.zero_embedding)


def support_windows(x: np.ndarray, static: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Inference support sets: up to ``k`` windows spread over the record, statics appended.

    ``x`` is scaled (locations, days, n_dynamic). Returns (locations, K, 45, features) and a (locations, K) mask.
    """
    starts = spread_support(x.shape[1], k)
    if not len(starts):
        raise DataError(f"the drivers cover {x.shape[1]} days; TAM-RL needs at least {WINDOW} for a support set")
    days = starts[:, None] + np.arange(WINDOW)
    windows = x[:, days]
    statics = np.broadcast_to(static[:, None, None, :], (*windows.shape[:3], static.shape[-1]))
    return np.concatenate([windows, statics], axis=-1), np.ones(windows.shape[:2], np.float32)


def window_plan(n_days: int) -> np.ndarray:
    """Starts of the 45-day inference windows covering ``n_days`` (the last one flush with the end)."""
    starts = list(range(0, max(n_days - WINDOW, 0) + 1, STRIDE))
    if starts[-1] + WINDOW < n_days:
        starts.append(n_days - WINDOW)
    return np.array(starts)


class NeuralEnsemble:
    """The members of a TAM-RL, TAMLSTM or CT-LSTM checkpoint."""

    def __init__(self, bundle: dict[str, Any], device: torch.device, precision: str = "float32"):
        self.cfg = TrainConfig(**bundle["config"])
        self.device = device
        self.dtype = PRECISIONS[precision]
        self.chunk = GPU_CHUNK if device.type == "cuda" else CHUNK
        self.fs = feature_set(bundle["feature_set"])
        n_dyn, n_stat = len(bundle["features"]["dynamic"]), len(bundle["features"]["static"])
        n_clim = 12 * len(climatology_channels(self.fs))
        self.x_scaler = Scaler.from_state(bundle["scalers"]["x"])
        self.y_scaler = Scaler.from_state(bundle["scalers"]["y"])
        self.networks = []
        for state in bundle["members"]:
            net = build_network(self.cfg, n_dyn, n_stat, n_clim)
            net.load_state_dict(state)
            self.networks.append(net.to(device).eval())
        self.modulating = [modulates(net) for net in self.networks]

    @torch.inference_mode()
    def predict(
        self, x_raw: np.ndarray, static: np.ndarray, mode: str, k: int, support_raw: np.ndarray | None = None
    ) -> np.ndarray:
        """Per-member predictions (members, locations, days, 3) in physical units.

        The support set is drawn from ``support_raw`` (locations, support days, n_dynamic) when given, else from
        ``x_raw`` itself.
        """
        x = self.x_scaler.transform(x_raw)
        sup_raw = x_raw if support_raw is None else support_raw
        x_sup = x if support_raw is None else self.x_scaler.transform(support_raw)
        clim = climatology(x_sup, sup_raw, self.fs) if any(self.modulating) else None
        out = np.empty((len(self.networks), *x.shape[:2], len(TARGETS)), np.float32)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            self._predict(x, x_sup, clim, static, mode, k, out)
        return self.y_scaler.inverse(out)

    def _predict(self, x: np.ndarray, x_sup: np.ndarray, clim: np.ndarray | None, static: np.ndarray, mode: str,
                 k: int, out: np.ndarray):
        """Fill ``out`` (members, locations, days, 3) with scaled predictions, ``self.chunk`` locations at a time."""
        for lo in range(0, x.shape[0], self.chunk):
            xs, st = x[lo : lo + self.chunk], static[lo : lo + self.chunk]
            xt, stt = self._tensor(xs), self._tensor(st)
            task = None
            if any(self.modulating):
                sup, mask = support_windows(x_sup[lo : lo + self.chunk], st, k)
                task = (self._tensor(sup), self._tensor(mask), self._tensor(clim[lo : lo + self.chunk]))
            for m, net in enumerate(self.networks):
                z = net.embed(*task) if self.modulating[m] else None
                out[m, lo : lo + self.chunk] = self._decode(net, xt, stt, z, mode)

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def _decode(self, net, x, static, z, mode: str) -> np.ndarray:
        n_days = x.shape[1]
        if mode == "stateful" or n_days <= WINDOW:
            return net(x, static, z)[0].float().cpu().numpy()
        starts = window_plan(n_days)
        windows = x.unfold(1, WINDOW, 1)[:, starts].permute(0, 1, 3, 2)  # (loc, windows, 45, feat)
        loc, n_win = windows.shape[:2]
        flat = windows.reshape(loc * n_win, WINDOW, -1)
        rep = lambda t: None if t is None else t.repeat_interleave(n_win, dim=0)  # noqa: E731
        pred = net(flat, rep(static), rep(z))[0].float().cpu().numpy().reshape(loc, n_win, WINDOW, -1)
        out = np.empty((loc, n_days, pred.shape[-1]), np.float32)
        for i in reversed(range(n_win)):
            out[:, starts[i] : starts[i] + WINDOW] = pred[:, i]
        return out


RUNNERS = {name: NeuralEnsemble for name in NEURAL_MODELS} | {"xgboost": XGBoostEnsemble}


def check_precision(precision: str, model: str, device: torch.device) -> None:
    """ConfigError unless ``precision`` is one of PRECISIONS that the model and device can run."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision != "float32" and model not in NEURAL_MODELS:
        raise ConfigError(f"--precision {precision} applies to neural checkpoints; {model} runs in float32")
    if precision == "float16" and device.type != "cuda":
        raise ConfigError("--precision float16 needs a GPU (--device cuda); on a CPU use bfloat16")


def clipped(members: np.ndarray, nee_rule: str) -> np.ndarray:
    """A copy of per-member predictions (members, ..., 3) with GPP and RECO clipped at zero and the NEE rule
    applied: the members that the ensemble mean and spread describe."""
    m = members.copy()
    m[..., :2] = np.maximum(m[..., :2], 0)
    if nee_rule == "balance":
        m[..., 2] = m[..., 1] - m[..., 0]
    return m


def finish(members: np.ndarray, nee_rule: str) -> tuple[np.ndarray, np.ndarray]:
    """Clip GPP and RECO at zero, apply the NEE rule, and return the ensemble mean and standard deviation."""
    m = clipped(members, nee_rule)
    return m.mean(axis=0), m.std(axis=0)


class Predictor:
    """A loaded checkpoint, ready to predict daily fluxes for any location from its drivers."""

    def __init__(self, bundle: dict[str, Any], device: str = "cpu", precision: str = "float32"):
        self.bundle = bundle
        self.fs: FeatureSet = feature_set(bundle["feature_set"])
        self.inference = dict(bundle["inference"])
        torch_device = pick_device(device)
        check_precision(precision, bundle["model"], torch_device)
        self.ensemble = RUNNERS[bundle["model"]](bundle, torch_device, precision)

    @classmethod
    def load(cls, checkpoint: str | Path, device: str = "cpu", precision: str = "float32") -> "Predictor":
        return cls(load_bundle(checkpoint), device, precision)

    def members(
        self, x_raw: np.ndarray, static: np.ndarray, mode: str | None = None, support_raw: np.ndarray | None = None
    ) -> np.ndarray:
        """Raw per-member predictions (members, locations, days, 3), before clipping."""
        mode = mode or self.inference["mode"]
        return self.ensemble.predict(x_raw, static, mode, self.inference["support_windows"], support_raw)

    def ensemble_members(
        self, x_raw: np.ndarray, static: np.ndarray, support_raw: np.ndarray | None = None
    ) -> np.ndarray:
        """Per-member predictions (members, locations, days, 3) as the ensemble mean sees them: clipped, with the
        checkpoint's NEE rule (`clipped`)."""
        return clipped(self.members(x_raw, static, support_raw=support_raw), self.inference["nee"])

    def predict_arrays(
        self, x_raw: np.ndarray, static: np.ndarray, support_raw: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble mean and spread (locations, days, 3) from unscaled features (support: see ``members``)."""
        return finish(self.members(x_raw, static, support_raw=support_raw), self.inference["nee"])

    @property
    def calibrated(self) -> bool:
        """Whether the checkpoint carries a calibration, so predictions get 90% intervals."""
        return self.bundle.get("calibration") is not None

    def bounds(self, mean: np.ndarray, spread: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated 5th and 95th percentiles (locations, days, 3) of the ensemble mean and spread
        (tamrl.calibration); a DataError for a checkpoint without calibration."""
        if not self.calibrated:
            raise DataError(f"checkpoint {self.bundle.get('path', '')} has no calibration, so no intervals; "
                            "use a calibrated checkpoint (the shipped default is one)")
        return bounds(self.bundle["calibration"], mean, spread, len(self.bundle["members"]))

    def features(self, frame: pd.DataFrame, lat: float, lon: float, igbp: str, koppen: str):
        """Unscaled model inputs of one location, with a clear error if the drivers lack a variable."""
        check_drivers(self.fs, list(frame.columns), "the drivers")
        drivers = {v: frame[v].to_numpy() for v in self.fs.required}
        x = dynamic_features(self.fs, drivers, pd.DatetimeIndex(frame.index))
        if not np.isfinite(x).all():
            bad = [n for n, ok in zip(self.fs.dynamic_names, np.isfinite(x).all(axis=0), strict=True) if not ok]
            raise DataError(f"the drivers hold no valid value at all for {', '.join(bad)}")
        return x, static_features(self.fs, lat, lon, igbp, koppen)

    def predict_frame(
        self, frame: pd.DataFrame, lat: float, lon: float, igbp: str, koppen: str, support: pd.DataFrame | None = None
    ) -> pd.DataFrame:
        """Daily GPP, RECO, NEE, their ensemble spread (``*_std``) and, for a calibrated checkpoint, their 90%
        interval (``*_p05``, ``*_p95``) for one location.

        The support set comes from ``support`` (drivers of other periods, e.g. historical years) when given,
        else from ``frame`` itself.
        """
        x, static = self.features(frame, lat, lon, igbp, koppen)
        support_raw = None if support is None else self.features(support, lat, lon, igbp, koppen)[0][None]
        mean, std = self.predict_arrays(x[None], static[None], support_raw)
        out = pd.DataFrame(mean[0], index=frame.index, columns=list(TARGETS))
        for i, t in enumerate(TARGETS):
            out[f"{t}_std"] = std[0][:, i]
        if self.calibrated:
            lo, hi = self.bounds(mean, std)
            for i, t in enumerate(TARGETS):
                out[f"{t}_p05"], out[f"{t}_p95"] = lo[0][:, i], hi[0][:, i]
        out.index.name = "date"
        return out

    def predict_site(self, site: Site) -> pd.DataFrame:
        return self.predict_frame(site.frame, site.lat, site.lon, site.igbp, site.koppen)


def read_drivers(path: str | Path) -> pd.DataFrame:
    """A daily driver table (CSV or Parquet) with a ``date`` or ``TIMESTAMP`` column; -9999 means missing."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"drivers file {path} does not exist")
    table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, na_values=[-9999])
    column = next((c for c in ("date", "TIMESTAMP") if c in table.columns), None)
    if column is None:
        raise DataError(f"{path} needs a 'date' (YYYY-MM-DD) or 'TIMESTAMP' (YYYYMMDD) column")
    raw = table[column].astype(str)
    table.index = pd.to_datetime(raw, format="%Y%m%d" if column == "TIMESTAMP" else None)
    return daily_calendar(table.drop(columns=[column]).select_dtypes("number"), str(path))
