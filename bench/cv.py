"""Cross-validation over the training sites: the protocol every recipe decision is made with (docs/VALIDATION.md).

The training sites (all usable sites but the test sites of docs/validation/test_sites.txt, which this script never
reads) are cut into IGBP-stratified folds (seed 56). For each fold and seed, one TAM-RL member is trained on the
other folds and three variants are branched from it, so they differ in one thing only:

- ``decoder``: stage 1 alone (the decoder; TAMLSTM);
- ``tamrl``: stage 1, then the joint stage (modulation by the support set);
- ``z_off``: stage 1, then the same joint stage with z fixed at 0 (the control: as many steps, no site information).

Each writes its out-of-fold per-day member predictions to ``OUT/fold{k}/seed{s}.parquet`` and its training
history beside it; finished units are skipped, so the script resumes after a crash and can run as several
workers (``--worker i --workers n``). ``bench/cv_report.py`` turns the units into ensembles and tables.

``--final`` runs the same units once more for the final table: trained on all training sites, predicting the
test sites, 10 seeds (``OUT/test/seed{s}.parquet``, with each variant's member weights in ``seed{s}.pt``).

    TAMRL_THREADS=1 python bench/cv.py --worker 0 --workers 2 &     # about 25 min on 2 cores (3 seeds)
    TAMRL_THREADS=1 python bench/cv.py --worker 1 --workers 2 &
    TAMRL_THREADS=1 python bench/cv.py --final --seeds 10 --out runs/final --worker 0 --workers 2 &
"""

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tamrl.config import TrainConfig, cpu_threads, load_config
from tamrl.data import Site, load_fluxnet, read_site_list, read_sites_table
from tamrl.features import TARGETS
from tamrl.predict import Predictor, build_network
from tamrl.train import Prepared, make_bundle, run_stage

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
TEST = Path(__file__).resolve().parents[1] / "docs" / "validation" / "test_sites.txt"
log = logging.getLogger("cv")


def usable_sites(feature_set: str, with_test: bool = False) -> list[Site]:
    """Every usable site but (unless ``with_test``) the test sites."""
    test = set() if with_test else set(read_site_list(TEST))
    ids = [s for s in read_sites_table(DATA / "fluxnet2015").index if s not in test]
    return load_fluxnet(DATA / "fluxnet2015", ids, DATA / "modis" if "modis" in feature_set else None)


def folds(sites: list[Site], n: int, seed: int = 56) -> list[list[str]]:
    """IGBP-stratified folds: each class's sites shuffled and dealt round-robin, continuing across classes."""
    rng = np.random.default_rng(seed)
    out: list[list[str]] = [[] for _ in range(n)]
    turn = 0
    for igbp in sorted({s.igbp for s in sites}):
        members = sorted(s.site_id for s in sites if s.igbp == igbp)
        for site_id in rng.permutation(members):
            out[turn % n].append(str(site_id))
            turn += 1
    return out


def member_predictions(cfg: TrainConfig, data: Prepared, state: dict, sites: list[Site], variant: str,
                       seed: int) -> pd.DataFrame:
    """One member's raw daily predictions at ``sites`` (before clipping), with observations and QC."""
    predictor = Predictor(make_bundle(cfg, data, [state], []))
    frames = []
    for site in sites:
        x, static = predictor.features(site.frame, site.lat, site.lon, site.igbp, site.koppen)
        pred = predictor.members(x[None], static[None])[0, 0]
        for k, target in enumerate(TARGETS):
            frames.append(pd.DataFrame({
                "variant": variant, "seed": seed, "site": site.site_id, "igbp": site.igbp,
                "date": site.frame.index, "target": target, "observed": site.frame[target].to_numpy(),
                "member": pred[:, k], "nee_qc": site.frame["NEE_QC"].to_numpy(),
            }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def run_unit(cfg: TrainConfig, sites: list[Site], held: list[str], seed: int, out: Path, monitor: bool,
             branches: tuple[str, ...] = ("tamrl", "z_off")) -> None:
    """Train one seed on the sites outside ``held`` and write the variants' predictions at ``held`` (the decoder
    and the joint-stage ``branches``); with ``monitor``, the history holds the validation score on ``held`` after
    every epoch (never for test sites).
    """
    fit_sites = [s for s in sites if s.site_id not in held]
    test_sites = [s for s in sites if s.site_id in held]
    data = Prepared(cfg, fit_sites)
    monitor = data.arrays(test_sites) if monitor else []
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = build_network(cfg, data.fit[0].x.shape[1], len(data.fit[0].static), len(data.fit[0].clim))
    device = torch.device("cpu")
    history = run_stage(cfg, net, "decoder", data, rng, device, monitor=monitor, seed=seed)
    stage1 = {k: v.clone() for k, v in net.state_dict().items()}
    frames = [member_predictions(cfg, data, stage1, test_sites, "decoder", seed)]
    states = {"decoder": stage1}
    for variant in branches:
        vcfg = cfg.model_copy(update={"zero_embedding": variant == "z_off"})
        branch = build_network(vcfg, data.fit[0].x.shape[1], len(data.fit[0].static), len(data.fit[0].clim))
        branch.load_state_dict(stage1)
        branch_rng = np.random.default_rng(1000 + seed)  # both branches see the same batches
        torch.manual_seed(1000 + seed)
        rows = run_stage(vcfg, branch, "joint", data, branch_rng, device, monitor=monitor, seed=seed)
        history += [{**r, "stage": variant} for r in rows]
        frames.append(member_predictions(vcfg, data, branch.state_dict(), test_sites, variant, seed))
        states[variant] = branch.state_dict()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"states": states, "training_sites": [s.site_id for s in fit_sites],
                "config": cfg.model_dump(mode="json")}, out.with_suffix(".pt"))
    (out.with_suffix(".history.json")).write_text(json.dumps(history))
    table = pd.concat(frames, ignore_index=True)
    tmp = out.with_suffix(".tmp")
    table.to_parquet(tmp, index=False)
    tmp.replace(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/cv"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--config", type=Path, help="TOML run config (default: the TrainConfig defaults)")
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--final", action="store_true", help="train on all training sites, predict the test sites")
    parser.add_argument("--branches", default="tamrl,z_off", help="joint-stage variants to branch from stage 1")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = load_config(args.config, model="tamrl", seeds=1)
    torch.set_num_threads(cpu_threads())
    sites = usable_sites(cfg.feature_set, with_test=args.final)
    split = [read_site_list(TEST)] if args.final else folds(sites, args.folds)
    names = ["test"] if args.final else [f"fold{k}" for k in range(len(split))]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "folds.json").write_text(json.dumps({"folds": split, "config": cfg.model_dump(mode="json")}))
    units = [(k, s) for s in range(args.seeds) for k in range(len(split))]
    for i, (k, seed) in enumerate(units):
        out = args.out / names[k] / f"seed{seed}.parquet"
        if i % args.workers != args.worker or out.exists():
            continue
        log.info("fold %d seed %d: training on %d sites, scoring %d", k, seed, len(sites) - len(split[k]),
                 len(split[k]))
        run_unit(cfg, sites, split[k], seed, out, monitor=not args.final, branches=tuple(args.branches.split(",")))


if __name__ == "__main__":
    main()
