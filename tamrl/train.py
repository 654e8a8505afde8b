"""Training: any registered model, an ensemble of seeds, fixed budgets and weight averaging.

TAM-RL trains in two stages: the decoder alone first (no task information), then encoder, generator and
decoder jointly on episodes (for each site: a support set gives z, and disjoint query windows of the same site
are predicted). Baselines train the first stage only; XGBoost trains its boosters.

Every stage runs a fixed number of epochs (chosen by cross-validation, docs/VALIDATION.md) under a cosine learning
rate, and keeps an exponential moving average (EMA) of the weights: the averaged weights are what the checkpoint
holds. No stage is kept or rejected on a validation score, since epoch-to-epoch noise would then decide it. In the
joint stage the decoder learns at ``decoder_lr_factor`` of the rate, so the modulation cannot undo the decoder.
Validation sites (``val_fraction`` > 0) only monitor training, and give XGBoost its number of rounds.
"""

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from tamrl.attribution import FLUXNET_ATTRIBUTION
from tamrl.checkpoint import save_bundle
from tamrl.config import TrainConfig, cpu_threads
from tamrl.data import Site
from tamrl.dataset import (
    Batch,
    SiteArrays,
    build_arrays,
    class_weights,
    fit_scalers,
    sample_batch,
    split_sites,
)  # fmt: skip
from tamrl.errors import DataError
from tamrl.features import check_drivers, feature_set
from tamrl.loss import flux_loss
from tamrl.predict import build_network, pick_device, support_windows
from tamrl.xgb import fit_xgboost

log = logging.getLogger(__name__)

State = dict[str, torch.Tensor]


class Prepared:
    """Sites turned into scaled arrays, with the scalers and class weights fitted on the fitting sites."""

    def __init__(self, cfg: TrainConfig, sites: list[Site]):
        fs = feature_set(cfg.feature_set)
        for site in sites:
            check_drivers(fs, list(site.frame.columns), f"site {site.site_id}")
        if len(sites) < 2:
            raise DataError(f"training needs at least 2 sites; got {len(sites)}")
        fit_sites, val_sites = sites, []
        if cfg.val_fraction:
            fit_sites, val_sites = split_sites(sites, cfg.val_fraction, cfg.split_seed)
        if cfg.val_fraction and not val_sites:
            fit_sites, val_sites = sites[:-1], sites[-1:]
        self.fs, self.fit_sites, self.val_sites = fs, fit_sites, val_sites
        self.x_scaler, self.y_scaler = fit_scalers(fs, fit_sites)
        self.weights = (class_weights(fit_sites, "igbp", cfg.class_weight_cap),
                        class_weights(fit_sites, "koppen", cfg.class_weight_cap))
        self.fit = build_arrays(fs, fit_sites, self.x_scaler, self.y_scaler, self.weights)
        self.val = build_arrays(fs, val_sites, self.x_scaler, self.y_scaler, self.weights) if val_sites else []

    def arrays(self, sites: list[Site]) -> list[SiteArrays]:
        """Other sites (e.g. a cross-validation fold) scaled like the fitting sites, to monitor training on."""
        return build_arrays(self.fs, sites, self.x_scaler, self.y_scaler, self.weights)


def train(cfg: TrainConfig, sites: list[Site], out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train ``cfg.model`` on ``sites`` and write the checkpoint bundle to ``out``; returns the bundle."""
    started = time.perf_counter()
    data = Prepared(cfg, sites)
    log.info("training %s on %d sites (%d windows), monitoring on %d sites", cfg.model, len(data.fit),
             sum(len(a.query_starts) for a in data.fit), len(data.val))
    device = pick_device(cfg.device)
    torch.set_num_threads(cpu_threads())
    members, histories = [], []
    for seed in range(cfg.seeds):
        if cfg.model == "xgboost":
            members.append(fit_xgboost(cfg, data.fit, data.val, data.y_scaler, seed))
            if cfg.seeds > 1:
                log.info("xgboost is deterministic with these settings: one member stands for all seeds")
                break
        else:
            state, history = fit_network(cfg, data, seed, device, progress)
            members.append(state)
            histories.append(history)
    bundle = make_bundle(cfg, data, members, histories)
    bundle["metrics"]["train_seconds"] = round(time.perf_counter() - started, 1)
    save_bundle(bundle, out)
    log.info("wrote %s (%d member(s), %.0f s)", out, len(members), bundle["metrics"]["train_seconds"])
    return bundle


def make_bundle(cfg: TrainConfig, data: Prepared, members: list, histories: list) -> dict[str, Any]:
    """The checkpoint bundle of a trained ensemble (calibration and cross-validation scores are added later)."""
    return {
        "model": cfg.model,
        "config": cfg.model_dump(mode="json"),
        "feature_set": data.fs.name,
        "features": {"dynamic": data.fs.dynamic_names, "static": data.fs.static_names},
        "scalers": {"x": data.x_scaler.to_state(), "y": data.y_scaler.to_state()},
        "members": members,
        "training_sites": [s.site_id for s in data.fit_sites],
        "validation_sites": [s.site_id for s in data.val_sites],
        "class_weights": {"igbp": data.weights[0], "koppen": data.weights[1]},
        "inference": {"mode": cfg.inference_mode, "nee": cfg.nee_rule, "support_windows": cfg.support_windows},
        "calibration": None,
        "metrics": {},
        "history": histories,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "attribution": FLUXNET_ATTRIBUTION,
    }


def fit_network(
    cfg: TrainConfig, data: Prepared, seed: int, device: torch.device, progress: bool,
    monitor: list[SiteArrays] | None = None,
) -> tuple[State, list[dict[str, float]]]:
    """Train one member through all its stages; returns its averaged weights and the per-epoch history."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = build_network(cfg, data.fit[0].x.shape[1], len(data.fit[0].static), len(data.fit[0].clim)).to(device)
    history: list[dict[str, float]] = []
    for stage in net.stages:
        history += run_stage(cfg, net, stage, data, rng, device, progress, monitor, seed)
    return {k: v.cpu() for k, v in net.state_dict().items()}, history


def run_stage(
    cfg: TrainConfig, net: torch.nn.Module, stage: str, data: Prepared, rng: np.random.Generator,
    device: torch.device, progress: bool = False, monitor: list[SiteArrays] | None = None, seed: int = 0,
) -> list[dict[str, float]]:
    """Train ``net`` for one stage's fixed budget and load the stage's weight average into it.

    ``decoder``: the decoder alone, no task information, ``cfg.epochs`` at ``cfg.lr``. ``joint``: everything, with z,
    ``cfg.epochs_stage2`` at ``cfg.lr_stage2`` (the decoder at ``decoder_lr_factor`` of it). Returns the history:
    the training loss and, on ``monitor`` (default: the validation sites), the validation score of the averaged
    weights after each epoch.
    """
    use_z = stage == "joint"
    epochs, lr = (cfg.epochs_stage2, cfg.lr_stage2) if use_z and "decoder" in net.stages else (cfg.epochs, cfg.lr)
    monitor = data.val if monitor is None else monitor
    optimiser = torch.optim.AdamW(param_groups(net, stage, lr, cfg.decoder_lr_factor), weight_decay=cfg.weight_decay)
    windows = sum(len(a.query_starts) for a in data.fit)
    steps = max(1, windows // (cfg.sites_per_batch * cfg.queries_per_site))
    steps = min(steps, cfg.max_steps_per_epoch or steps)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(1, epochs * steps), eta_min=0.05 * lr)
    mean, std = (torch.from_numpy(v).to(device) for v in (data.y_scaler.mean, data.y_scaler.std))
    average = WeightAverage(net, cfg.ema_decay)
    history = []
    for epoch in tqdm(range(epochs), desc=f"seed {seed} {stage}", disable=not progress, leave=False):
        net.train()
        losses = []
        for _ in range(steps):
            batch = sample_batch(data.fit, cfg.sites_per_batch, cfg.queries_per_site, cfg.support_windows, rng)
            loss = batch_loss(net, batch.to(device), use_z, mean, std, cfg.flux_weight, cfg.z_noise)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimiser.step()
            schedule.step()
            average.update(net)
            losses.append(loss.item())
        row = {"seed": seed, "stage": stage, "epoch": epoch, "train": float(np.mean(losses))}
        if monitor:
            with average.applied(net):
                row["validation"] = validate(net, monitor, use_z, cfg.support_windows, device)
        history.append(row)
    average.load_into(net)
    log.info("seed %d %s: %d epochs of %d steps%s", seed, stage, epochs, steps,
             f", validation {history[-1]['validation']:.4f}" if history and monitor else "")
    return history


def param_groups(net: torch.nn.Module, stage: str, lr: float, decoder_factor: float) -> list[dict[str, Any]]:
    """The decoder alone in stage 1; in the joint stage everything, the decoder at ``decoder_factor`` of ``lr``."""
    decoder = list(net.decoder.parameters())
    if stage == "decoder":
        return [{"params": decoder, "lr": lr}]
    others = [p for name, p in net.named_parameters() if not name.startswith("decoder.")]
    if "decoder" not in net.stages:  # one-stage task-aware models (CT-LSTM) train everything at lr
        return [{"params": list(net.parameters()), "lr": lr}]
    return [{"params": others, "lr": lr}, {"params": decoder, "lr": lr * decoder_factor}]


class WeightAverage:
    """An exponential moving average of a network's floating-point weights (the weights a stage keeps)."""

    def __init__(self, net: torch.nn.Module, decay: float):
        self.decay, self.steps = decay, 0
        self.state = {k: v.detach().clone() for k, v in net.state_dict().items()}

    @torch.no_grad()
    def update(self, net: torch.nn.Module) -> None:
        """Fold in the current weights; the decay ramps up over the first steps, so the start weighs little."""
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for k, v in net.state_dict().items():
            if v.is_floating_point():
                self.state[k].lerp_(v, 1 - decay)

    def load_into(self, net: torch.nn.Module) -> None:
        net.load_state_dict(self.state)

    @contextmanager
    def applied(self, net: torch.nn.Module) -> Iterator[None]:
        """Inside the block ``net`` holds the averaged weights; its own weights are back after it."""
        saved = {k: v.detach().clone() for k, v in net.state_dict().items()}
        self.load_into(net)
        try:
            yield
        finally:
            net.load_state_dict(saved)


def validate(net, val: list[SiteArrays], use_z: bool, k: int, device: torch.device) -> float:
    """Validation score: the mean over sites of each site's QC-weighted MSE (standardised units).

    Each site is predicted over its whole record in one stateful pass, modulated (``use_z``) by a support set
    spread over that record, exactly as at inference; sites count equally, like the per-site metrics.
    """
    net.eval()
    scores = []
    with torch.inference_mode():
        for a in val:
            x = torch.from_numpy(np.nan_to_num(a.x))[None].to(device)
            static = torch.from_numpy(a.static)[None].to(device)
            z = None
            if use_z:
                support, mask = support_windows(np.nan_to_num(a.x)[None], a.static[None], k)
                z = net.embed(*(torch.from_numpy(v).to(device) for v in (support, mask, a.clim[None])))
            pred = net(x, static, z)[0][0].cpu().numpy()
            se = (pred - np.nan_to_num(a.y)) ** 2 * a.weight
            scores.append(se.sum() / max(a.weight.sum(), 1e-8))
    return float(np.mean(scores))


def batch_loss(net, batch: Batch, use_z: bool, mean, std, flux_weight: float, z_noise: float = 0.0) -> torch.Tensor:
    """The TAM-RL loss of one batch; with ``use_z`` each query is modulated by its site's support set, whose
    embedding gets Gaussian noise of std ``z_noise`` (a regulariser: z must carry coarse site traits, not ids)."""
    z = None
    if use_z:
        z = net.embed(batch.support, batch.support_mask, batch.clim)[batch.set_index]
        z = z + z_noise * torch.randn_like(z) if z_noise else z
    pred, _ = net(batch.x, batch.static, z)
    return flux_loss(pred, batch.y, batch.weight, mean, std, flux_weight)
