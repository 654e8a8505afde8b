"""Ablation of TAM-RL's joint stage: does modulation by the support set help on held-out training sites?

Starts from a TAM-RL checkpoint's first member (its decoder after stage 1; the generator still at the identity when
the joint stage was rejected), trains the joint stage for a few epochs under one variant, and prints the training
loss and the validation score (``tamrl.train.validate``: per-site QC-weighted MSE over whole records) per epoch.

    python bench/stage2_ablation.py runs/validation/tamrl_modis_met.pt base|frozen|noise|dropz [--epochs 4]

Variants: ``base`` all parameters, lr 5e-4 (the default joint stage); ``frozen`` encoder and generator only,
lr 1e-3; ``noise`` the embedding layer-normalised plus unit Gaussian noise in training (an information
bottleneck); ``dropz`` the modulation switched off for a random half of the sites in each batch.
"""

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

from tamrl.checkpoint import load_bundle
from tamrl.config import TrainConfig
from tamrl.data import load_fluxnet
from tamrl.dataset import build_arrays, sample_batch
from tamrl.features import feature_set
from tamrl.loss import flux_loss
from tamrl.model import with_statics
from tamrl.predict import build_network
from tamrl.scaler import Scaler
from tamrl.train import validate

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("variant", choices=["base", "frozen", "noise", "dropz"])
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    bundle = load_bundle(args.checkpoint)
    cfg = TrainConfig(**bundle["config"])
    fs = feature_set(cfg.feature_set)
    x_scaler, y_scaler = (Scaler.from_state(bundle["scalers"][k]) for k in ("x", "y"))
    weights = (bundle["class_weights"]["igbp"], bundle["class_weights"]["koppen"])
    modis = DATA / "modis" if fs.reflectance else None
    load = lambda ids: load_fluxnet(DATA / "fluxnet2015", ids, modis)  # noqa: E731
    fit = build_arrays(fs, load(bundle["training_sites"]), x_scaler, y_scaler, weights)
    val = build_arrays(fs, load(bundle["validation_sites"]), x_scaler, y_scaler, weights)
    net = build_network(cfg, fit[0].x.shape[1], len(fit[0].static))
    net.load_state_dict(bundle["members"][0])
    mean, std = torch.from_numpy(y_scaler.mean), torch.from_numpy(y_scaler.std)
    cpu = torch.device("cpu")
    if args.variant == "noise":
        embed = net.embed
        net.embed = lambda s, m: torch.nn.functional.layer_norm(embed(s, m), (cfg.embedding,))
    params = (list(net.encoder.parameters()) + list(net.generator.parameters())
              if args.variant == "frozen" else list(net.parameters()))
    optimiser = torch.optim.AdamW(params, lr=1e-3 if args.variant == "frozen" else 5e-4, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    steps = sum(len(a.query_starts) for a in fit) // (cfg.sites_per_batch * cfg.queries_per_site)
    print(f"{args.variant} start: validation {validate(net, val, True, cfg.inference_support_windows, cpu):.4f}")
    for epoch in range(args.epochs):
        net.train()
        losses = []
        for _ in range(steps):
            batch = sample_batch(fit, cfg.sites_per_batch, cfg.queries_per_site, cfg.support_windows, rng)
            z = net.embed(batch.support, batch.support_mask)
            if args.variant == "noise":
                z = z + torch.randn_like(z)
            g1, b1, g2, b2 = net.generator(z)
            if args.variant == "dropz":
                keep = (torch.rand(z.shape[0], 1) > 0.5).float()
                g1, b1, g2, b2 = 1 + keep * (g1 - 1), keep * b1, 1 + keep * (g2 - 1), keep * b2
            film = tuple(p[batch.set_index] for p in (g1, b1, g2, b2))
            pred, _ = net.decoder(with_statics(batch.x, batch.static), film)
            loss = flux_loss(pred, batch.y, batch.weight, mean, std, cfg.flux_weight)
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimiser.step()
            losses.append(loss.item())
        score = validate(net, val, True, cfg.inference_support_windows, cpu)
        print(f"{args.variant} epoch {epoch}: train {np.mean(losses):.4f} validation {score:.4f}")


if __name__ == "__main__":
    main()
