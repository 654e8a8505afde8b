"""Training: any registered model, an ensemble of seeds, early stopping on held-out training sites.

TAM-RL trains in two stages: the decoder alone first (no task information), then encoder, generator and
decoder jointly on episodes (for each site: a support set gives z, and disjoint query windows of the same site
are predicted). Baselines train the first stage only; XGBoost trains its boosters. After training, the
inference mode and NEE rule are chosen on the validation sites and stored in the checkpoint.
"""

import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from tamrl.checkpoint import FLUXNET_ATTRIBUTION, save_bundle
from tamrl.config import TrainConfig
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
from tamrl.evaluate import site_metrics, site_predictions
from tamrl.features import check_drivers, feature_set
from tamrl.loss import flux_loss
from tamrl.predict import MODES, NEE_RULES, Predictor, build_network, pick_device, support_windows
from tamrl.scaler import Scaler
from tamrl.xgb import fit_xgboost

log = logging.getLogger(__name__)


def train(cfg: TrainConfig, sites: list[Site], out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train ``cfg.model`` on ``sites`` and write the checkpoint bundle to ``out``; returns the bundle."""
    started = time.perf_counter()
    fs = feature_set(cfg.feature_set)
    for site in sites:
        check_drivers(fs, list(site.frame.columns), f"site {site.site_id}")
    if len(sites) < 2:
        raise DataError(f"training needs at least 2 sites (some are held out for early stopping); got {len(sites)}")
    fit_sites, val_sites = split_sites(sites, cfg.val_fraction, cfg.split_seed)
    if not val_sites:
        fit_sites, val_sites = sites[:-1], sites[-1:]
    x_scaler, y_scaler = fit_scalers(fs, fit_sites)
    weights = (class_weights(fit_sites, "igbp", cfg.class_weight_cap),
               class_weights(fit_sites, "koppen", cfg.class_weight_cap))
    fit = build_arrays(fs, fit_sites, x_scaler, y_scaler, weights)
    val = build_arrays(fs, val_sites, x_scaler, y_scaler, weights)
    log.info("training %s on %d sites (%d windows), validating on %d sites", cfg.model, len(fit),
             sum(len(a.query_starts) for a in fit), len(val))
    device = pick_device(cfg.device)
    torch.set_num_threads(os.cpu_count() or 1)

    members, histories = [], []
    for seed in range(cfg.seeds):
        if cfg.model == "xgboost":
            members.append(fit_xgboost(cfg, fit, val, y_scaler, seed))
            if cfg.seeds > 1:
                log.info("xgboost is deterministic with these settings: one member stands for all seeds")
                break
        else:
            state, history = fit_network(cfg, fit, val, y_scaler, seed, device, progress)
            members.append(state)
            histories.append(history)

    bundle: dict[str, Any] = {
        "model": cfg.model,
        "config": cfg.model_dump(mode="json"),
        "feature_set": fs.name,
        "features": {"dynamic": fs.dynamic_names, "static": fs.static_names},
        "scalers": {"x": x_scaler.to_state(), "y": y_scaler.to_state()},
        "members": members,
        "training_sites": [s.site_id for s in fit_sites],
        "validation_sites": [s.site_id for s in val_sites],
        "class_weights": {"igbp": weights[0], "koppen": weights[1]},
        "inference": {"mode": "stateful", "nee": "head", "support_windows": cfg.inference_support_windows},
        "metrics": {},
        "history": histories,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "attribution": FLUXNET_ATTRIBUTION,
    }
    bundle["inference"], bundle["metrics"] = choose_inference(bundle, val_sites)
    bundle["metrics"]["train_seconds"] = round(time.perf_counter() - started, 1)
    save_bundle(bundle, out)
    log.info("wrote %s (%d member(s), %.0f s)", out, len(members), bundle["metrics"]["train_seconds"])
    return bundle


def fit_network(
    cfg: TrainConfig,
    fit: list[SiteArrays],
    val: list[SiteArrays],
    y_scaler: Scaler,
    seed: int,
    device: torch.device,
    progress: bool,
) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    """Train one member; returns its best weights and the per-epoch history."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = build_network(cfg, fit[0].x.shape[1], len(fit[0].static)).to(device)
    mean, std = (torch.from_numpy(v).to(device) for v in (y_scaler.mean, y_scaler.std))
    stages = stage_plan(cfg, net)
    windows = sum(len(a.query_starts) for a in fit)
    steps = max(1, windows // (cfg.sites_per_batch * cfg.queries_per_site))
    steps = min(steps, cfg.max_steps_per_epoch or steps)
    history = []
    for stage, params, use_z, epochs, lr in stages:
        optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
        schedule = torch.optim.lr_scheduler.StepLR(optimiser, cfg.lr_halve_every, gamma=0.5)
        # A stage must beat where it starts: the joint stage keeps the decoder alone if z does not help.
        best, waited = validate(net, val, use_z, cfg.inference_support_windows, device), 0
        best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        bar = tqdm(range(epochs), desc=f"seed {seed} {stage}", disable=not progress, leave=False)
        for epoch in bar:
            net.train()
            losses = []
            for _ in range(steps):
                batch = sample_batch(fit, cfg.sites_per_batch, cfg.queries_per_site, cfg.support_windows, rng)
                loss = batch_loss(net, batch.to(device), use_z, mean, std, cfg.flux_weight)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                optimiser.step()
                losses.append(loss.item())
            schedule.step()
            val_loss = validate(net, val, use_z, cfg.inference_support_windows, device)
            history.append({"seed": seed, "stage": stage, "epoch": epoch, "train": float(np.mean(losses)),
                            "validation": val_loss})
            bar.set_postfix(train=f"{np.mean(losses):.3f}", val=f"{val_loss:.3f}")
            if val_loss < best - 1e-4:
                best, waited = val_loss, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                waited += 1
                if waited >= cfg.patience:
                    break
        net.load_state_dict(best_state)
        log.info("seed %d %s: best validation loss %.4f after %d epoch(s)", seed, stage, best, epoch + 1)
    return {k: v.cpu() for k, v in net.state_dict().items()}, history


def stage_plan(cfg: TrainConfig, net: torch.nn.Module) -> list[tuple[str, list, bool, int, float]]:
    """(name, parameters, use_z, epochs, learning rate) of each training stage of ``net``.

    A first stage trains with ``cfg.epochs`` and ``cfg.lr``; TAM-RL's joint second stage with ``epochs_stage2``
    and ``lr_stage2`` (0 epochs skips it).
    """
    plan = []
    for i, name in enumerate(net.stages):
        params = list(net.decoder.parameters() if name == "decoder" else net.parameters())
        epochs, lr = (cfg.epochs, cfg.lr) if i == 0 else (cfg.epochs_stage2, cfg.lr_stage2)
        if epochs:
            plan.append((name, params, name == "joint", epochs, lr))
    return plan


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
                z = net.embed(torch.from_numpy(support).to(device), torch.from_numpy(mask).to(device))
            pred = net(x, static, z)[0][0].cpu().numpy()
            se = (pred - np.nan_to_num(a.y)) ** 2 * a.weight
            scores.append(se.sum() / max(a.weight.sum(), 1e-8))
    return float(np.mean(scores))


def batch_loss(net, batch: Batch, use_z: bool, mean, std, flux_weight: float) -> torch.Tensor:
    """The TAM-RL loss of one batch; with ``use_z`` each query is modulated by its site's support set."""
    z = net.embed(batch.support, batch.support_mask)[batch.set_index] if use_z else None
    pred, _ = net(batch.x, batch.static, z)
    return flux_loss(pred, batch.y, batch.weight, mean, std, flux_weight)


def choose_inference(bundle: dict[str, Any], val_sites: list[Site]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pick the inference mode and the NEE rule with the lowest validation RMSE; return them and the scores."""
    predictor = Predictor(bundle)
    scores: dict[str, Any] = {}
    raw = {mode: {} for mode in MODES}
    for site in val_sites:
        x, static = predictor.features(site.frame, site.lat, site.lon, site.igbp, site.koppen)
        for mode in MODES:
            raw[mode][site.site_id] = predictor.members(x[None], static[None], mode)
    for mode in MODES:
        for rule in NEE_RULES:
            predictor.inference.update(mode=mode, nee=rule)
            metrics = site_metrics(site_predictions(predictor, val_sites, bundle["model"], members=raw[mode]))
            scores[f"{mode}/{rule}"] = metrics.groupby("target")["rmse"].mean().to_dict()
    mode = min(MODES, key=lambda m: sum(scores[f"{m}/head"].values()))
    rule = min(NEE_RULES, key=lambda r: scores[f"{mode}/{r}"]["NEE"])
    log.info("inference on validation sites: %s; chosen %s with NEE rule %s", scores, mode, rule)
    inference = {**bundle["inference"], "mode": mode, "nee": rule}
    return inference, {"validation_rmse": scores, "validation_rmse_chosen": scores[f"{mode}/{rule}"]}
