"""From sites to model-ready arrays: features, scaling, loss weights, the validation split and batches."""

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from tamrl.data import Site
from tamrl.errors import DataError
from tamrl.features import TARGETS, FeatureSet, climatology, dynamic_features, static_features
from tamrl.scaler import Scaler
from tamrl.windows import WINDOW, sample_episode, window_starts

log = logging.getLogger(__name__)


@dataclass
class SiteArrays:
    """One site's inputs and targets in model units, with the windows usable as queries and supports."""

    site: Site
    x: np.ndarray  # (days, n_dynamic), scaled
    static: np.ndarray  # (n_static,)
    y: np.ndarray  # (days, 3), scaled, NaN where not measured
    weight: np.ndarray  # (days, 3): w_qc * w_igbp * w_koppen, 0 where not measured
    query_starts: np.ndarray
    support_starts: np.ndarray
    clim: np.ndarray  # (n_clim,): monthly climatology of the site's drivers, the encoder's extra input


def raw_features(fs: FeatureSet, site: Site) -> tuple[np.ndarray, np.ndarray]:
    """A site's unscaled dynamic features (days, n_dynamic) and static vector."""
    frame = site.frame
    drivers = {name: frame[name].to_numpy() for name in fs.required if name in frame}
    try:
        x = dynamic_features(fs, drivers, site.dates)
    except DataError as exc:
        raise DataError(f"site {site.site_id}: {exc}") from exc
    return x, static_features(fs, site.lat, site.lon, site.igbp, site.koppen)


def class_weights(sites: list[Site], attribute: str, cap: float) -> dict[str, float]:
    """Inverse-frequency weights of a site class (by measured days), mean 1 over days, capped at ``cap``."""
    days = Counter()
    for site in sites:
        days[getattr(site, attribute)] += int(site.frame["NEE_QC"].notna().sum())
    total, classes = sum(days.values()), len(days)
    raw = {c: min(cap, total / (classes * n)) if n else 1.0 for c, n in days.items()}
    mean = sum(raw[c] * n for c, n in days.items()) / max(total, 1)
    return {c: w / mean for c, w in raw.items()}


def fit_scalers(fs: FeatureSet, sites: list[Site]) -> tuple[Scaler, Scaler]:
    """Input and target scalers from the training sites' rows."""
    x = np.concatenate([raw_features(fs, s)[0] for s in sites])
    y = np.concatenate([s.frame[list(TARGETS)].to_numpy() for s in sites])
    return Scaler.fit(x), Scaler.fit(y)


def site_arrays(
    fs: FeatureSet,
    site: Site,
    x_scaler: Scaler,
    y_scaler: Scaler,
    weights: tuple[dict[str, float], dict[str, float]] | None = None,
) -> SiteArrays:
    """Scaled arrays of one site; ``weights`` are the IGBP and Koppen class weights (None: all 1)."""
    x_raw, static = raw_features(fs, site)
    x = x_scaler.transform(x_raw)
    valid = np.isfinite(x).all(axis=1)
    y_raw = site.frame[list(TARGETS)].to_numpy(dtype=np.float32)
    qc = np.nan_to_num(site.frame["NEE_QC"].to_numpy(dtype=np.float32)).clip(0, 1)
    w_igbp, w_koppen = (weights[0].get(site.igbp, 1.0), weights[1].get(site.koppen, 1.0)) if weights else (1, 1)
    weight = np.where(np.isfinite(y_raw), (qc * w_igbp * w_koppen)[:, None], 0.0).astype(np.float32)
    supports = window_starts(valid)
    has_target = np.concatenate([[0], np.cumsum(weight.sum(axis=1) > 0)])
    queries = supports[has_target[supports + WINDOW] - has_target[supports] > 0]
    clim = climatology(x[None], x_raw[None], fs)[0]
    return SiteArrays(site, x, static, y_scaler.transform(y_raw), weight, queries, supports, clim)


def build_arrays(
    fs: FeatureSet,
    sites: list[Site],
    x_scaler: Scaler,
    y_scaler: Scaler,
    weights: tuple[dict[str, float], dict[str, float]] | None,
) -> list[SiteArrays]:
    """Arrays of every site that has at least one query window; the others are counted in a warning."""
    arrays = [site_arrays(fs, s, x_scaler, y_scaler, weights) for s in sites]
    kept = [a for a in arrays if len(a.query_starts)]
    if len(kept) < len(arrays):
        short = [a.site.site_id for a in arrays if not len(a.query_starts)]
        log.warning("%d site(s) have no complete %d-day window with fluxes and were left out: %s",
                    len(short), WINDOW, ", ".join(short))
    if not kept:
        raise DataError(f"no site has a complete {WINDOW}-day window of drivers with flux data")
    return kept


def split_sites(sites: list[Site], fraction: float, seed: int) -> tuple[list[Site], list[Site]]:
    """Stratified split by IGBP class: about ``fraction`` of each class's sites (at least one of classes with
    three or more) go to the second list. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    held = set()
    for igbp in sorted({s.igbp for s in sites}):
        members = sorted(s.site_id for s in sites if s.igbp == igbp)
        n = round(fraction * len(members))
        n = max(n, 1) if len(members) >= 3 else n
        held.update(rng.choice(members, size=n, replace=False).tolist())
    return [s for s in sites if s.site_id not in held], [s for s in sites if s.site_id in held]


@dataclass
class Batch:
    """Query windows of several sites, and one support set per site."""

    x: torch.Tensor  # (B, days, n_dynamic)
    static: torch.Tensor  # (B, n_static)
    y: torch.Tensor  # (B, days, 3)
    weight: torch.Tensor  # (B, days, 3)
    set_index: torch.Tensor  # (B,): which support set conditions each query
    support: torch.Tensor  # (sites, K, days, n_dynamic + n_static)
    support_mask: torch.Tensor  # (sites, K)
    clim: torch.Tensor  # (sites, n_clim)

    def to(self, device: torch.device) -> "Batch":
        return Batch(*(t.to(device, non_blocking=True) for t in vars(self).values()))


def support_tensor(arrays: SiteArrays, starts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Support windows (K, days, features) with the statics appended, zero-padded to ``k``; and its mask."""
    n_feat = arrays.x.shape[1] + len(arrays.static)
    out = np.zeros((k, WINDOW, n_feat), np.float32)
    for i, s in enumerate(starts[:k]):
        out[i, :, : arrays.x.shape[1]] = arrays.x[s : s + WINDOW]
        out[i, :, arrays.x.shape[1] :] = arrays.static
    mask = (np.arange(k) < min(len(starts), k)).astype(np.float32)
    return out, mask


def make_batch(episodes: list[tuple[SiteArrays, np.ndarray, np.ndarray]], k: int) -> Batch:
    """Assemble a batch from (site arrays, query starts, support starts) episodes."""
    xs, statics, ys, ws, index, supports, masks, clims = [], [], [], [], [], [], [], []
    for i, (arrays, queries, support) in enumerate(episodes):
        for s in queries:
            xs.append(arrays.x[s : s + WINDOW])
            ys.append(arrays.y[s : s + WINDOW])
            ws.append(arrays.weight[s : s + WINDOW])
            statics.append(arrays.static)
            index.append(i)
        sup, mask = support_tensor(arrays, support, k)
        supports.append(sup)
        masks.append(mask)
        clims.append(arrays.clim)
    as_t = [torch.from_numpy(np.stack(v)) for v in (xs, statics, ys, ws)]
    return Batch(*as_t, torch.tensor(index), torch.from_numpy(np.stack(supports)),
                 torch.from_numpy(np.stack(masks)), torch.from_numpy(np.stack(clims)))


def sample_batch(arrays: list[SiteArrays], n_sites: int, n_query: int, k: int, rng: np.random.Generator) -> Batch:
    """An episodic batch: sites drawn in proportion to their query windows, each with a disjoint support set."""
    sizes = np.array([len(a.query_starts) for a in arrays], dtype=np.float64)
    chosen = rng.choice(len(arrays), size=min(n_sites, len(arrays)), replace=False, p=sizes / sizes.sum())
    episodes = []
    for i in chosen:
        a = arrays[i]
        episodes.append((a, *sample_episode(a.query_starts, a.support_starts, n_query, k, rng)))
    return make_batch(episodes, k)
