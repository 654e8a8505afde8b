"""From the units of bench/cv.py to decisions, calibrations and checkpoints.

    python bench/cv_report.py cv --runs runs/cv --out docs/validation/cv
        ensembles of equal size per variant, per-site scores, paired tests with bootstrap confidence intervals,
        each variant's calibration (runs/cv/calibration_<variant>.json) and its coverage when calibrated on the
        other folds
    python bench/cv_report.py assemble --runs runs/final --cv runs/cv
        the final units' members as one checkpoint per variant (runs/final/<variant>.pt), calibrated from the CV
    python bench/cv_report.py attach --checkpoint C --variant tamrl --cv runs/cv
        a checkpoint trained with `tamrl train` gets that variant's calibration and cross-validation scores
    python bench/cv_report.py test --report docs/validation/test
        the final table from `tamrl evaluate`'s predictions.csv: every model against TAMLSTM and against XGBoost,
        paired per site, with bootstrap intervals (comparisons.csv beside it)
"""

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from cv import usable_sites  # bench/cv.py, beside this script

from tamrl.calibration import bounds, fit_calibration
from tamrl.checkpoint import load_bundle, save_bundle
from tamrl.config import TrainConfig
from tamrl.evaluate import paired_comparison, same_days, site_metrics
from tamrl.features import TARGETS
from tamrl.train import Prepared, make_bundle

VARIANTS = ("decoder", "tamrl", "z_off")
LABELS = {"decoder": "TAMLSTM (stage 1)", "tamrl": "TAM-RL (joint stage)", "z_off": "z-off control"}
PAIRS = (("tamrl", "decoder"), ("tamrl", "z_off"), ("z_off", "decoder"))


def load_units(root: Path) -> pd.DataFrame:
    """Every unit's member predictions, with the fold it came from."""
    frames = [pd.read_parquet(p).assign(fold=p.parent.name) for p in sorted(root.glob("*/seed*.parquet"))]
    if not frames:
        raise SystemExit(f"no units under {root}: run bench/cv.py first")
    return pd.concat(frames, ignore_index=True)


def ensembles(units: pd.DataFrame) -> pd.DataFrame:
    """Per variant, site, day and target: the mean and spread of the members (GPP and RECO clipped at zero),
    over the seeds that every variant has (equal ensembles)."""
    seeds = units.groupby("variant")["seed"].unique()
    common = sorted(set.intersection(*(set(s) for s in seeds)))
    units = units[units["seed"].isin(common)].copy()
    clip = units["target"].isin(["GPP", "RECO"])
    units.loc[clip, "member"] = units.loc[clip, "member"].clip(lower=0)
    keys = ["variant", "fold", "site", "igbp", "date", "target"]
    out = units.groupby(keys, sort=False).agg(
        predicted=("member", "mean"), spread=("member", lambda m: float(np.std(m))), observed=("observed", "first"),
        nee_qc=("nee_qc", "first"), members=("member", "size"),
    ).reset_index()  # fmt: skip
    return out


def long_table(ens: pd.DataFrame) -> pd.DataFrame:
    """The tamrl.evaluate prediction table of the ensembles (one model per variant)."""
    return ens.rename(columns={"variant": "model"}).assign(p05=np.nan, p95=np.nan)[
        ["model", "site", "date", "target", "observed", "predicted", "p05", "p95", "nee_qc"]]


def bootstrap_ci(metrics: pd.DataFrame, a: str, b: str, target: str, n: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval (over sites) of the relative difference of mean RMSE, (a - b) / b in %."""
    rows = metrics[metrics["target"] == target].pivot(index="site", columns="model", values="rmse")
    pairs = rows[[a, b]].dropna().to_numpy()
    rng = np.random.default_rng(0)
    draws = pairs[rng.integers(0, len(pairs), (n, len(pairs)))]
    rel = (draws[..., 0].mean(1) - draws[..., 1].mean(1)) / draws[..., 1].mean(1) * 100
    return float(np.percentile(rel, 2.5)), float(np.percentile(rel, 97.5))


def comparisons(metrics: pd.DataFrame, pairs=PAIRS) -> pd.DataFrame:
    """Paired per-site RMSE comparisons with wins, Wilcoxon p and a bootstrap interval of the mean difference."""
    rows = []
    for a, b in pairs:
        for target in TARGETS:
            row = paired_comparison(metrics, a, b, target)
            row["ci_low"], row["ci_high"] = bootstrap_ci(metrics, a, b, target)
            rows.append(row)
    return pd.DataFrame(rows)


def oof_table(ens: pd.DataFrame, variant: str) -> pd.DataFrame:
    return ens[ens["variant"] == variant]


def cross_coverage(ens: pd.DataFrame, variant: str) -> pd.DataFrame:
    """Coverage of the 90% interval on each fold's sites when calibrated on the other folds (an honest CV
    estimate), overall and by IGBP class."""
    table = oof_table(ens, variant)
    members = int(table["members"].min())
    rows = []
    for fold in sorted(table["fold"].unique()):
        cal = fit_calibration(table[table["fold"] != fold], f"folds other than {fold}", members)
        held = table[(table["fold"] == fold) & (table["nee_qc"] == 1) & np.isfinite(table["observed"])]
        for target in TARGETS:
            t = held[held["target"] == target]
            k = TARGETS.index(target)
            mean, spread = (np.repeat(t[c].to_numpy()[:, None], 3, axis=1) for c in ("predicted", "spread"))
            lo, hi = (b[:, k] for b in bounds(cal, mean, spread, members))
            inside = (lo <= t["observed"].to_numpy()) & (t["observed"].to_numpy() <= hi)
            rows.append(pd.DataFrame({"target": target, "igbp": t["igbp"].to_numpy(), "inside": inside}))
    frame = pd.concat(rows, ignore_index=True)
    overall = frame.groupby("target", sort=False)["inside"].agg(days="size", coverage="mean").reset_index()
    by_class = frame.groupby(["target", "igbp"], sort=False)["inside"].agg(days="size", coverage="mean").reset_index()
    return pd.concat([overall.assign(igbp="all"), by_class], ignore_index=True)


def cmd_cv(args: argparse.Namespace) -> None:
    units = load_units(args.runs)
    ens = ensembles(units)
    members = int(ens["members"].min())
    metrics = site_metrics(long_table(ens))
    args.out.mkdir(parents=True, exist_ok=True)
    metrics.to_csv(args.out / "site_metrics.csv", index=False)
    summary = metrics.groupby(["model", "target"], sort=False)["rmse"].agg(["mean", "median", "count"]).reset_index()
    summary.to_csv(args.out / "summary.csv", index=False)
    table = comparisons(metrics)
    table.to_csv(args.out / "comparisons.csv", index=False)
    coverage = {}
    for variant in VARIANTS:
        cal = fit_calibration(oof_table(ens, variant), f"{ens['fold'].nunique()}-fold cross-validation over "
                              f"{ens['site'].nunique()} training sites, {members}-member ensembles", members)
        (args.runs / f"calibration_{variant}.json").write_text(json.dumps(cal, indent=1))
        coverage[variant] = cross_coverage(ens, variant)
    cov = pd.concat([c.assign(model=v) for v, c in coverage.items()], ignore_index=True)
    cov.to_csv(args.out / "coverage.csv", index=False)
    scores = {v: summary[summary["model"] == v].set_index("target")["mean"].round(4).to_dict() for v in VARIANTS}
    (args.runs / "cv_scores.json").write_text(json.dumps({"members": members, "sites": int(ens["site"].nunique()),
                                                          "folds": int(ens["fold"].nunique()),
                                                          "rmse_mean": scores}, indent=1))
    print(f"{members}-member ensembles, {ens['site'].nunique()} sites, {ens['fold'].nunique()} folds")
    print(summary.to_string(index=False))
    print(table.round(4).to_string(index=False))
    print(cov.round(3).to_string(index=False))


def cmd_assemble(args: argparse.Namespace) -> None:
    units = sorted((args.runs / "test").glob("seed*.pt"))
    saved = [torch.load(p, weights_only=True) for p in units]
    cfg = TrainConfig(**saved[0]["config"])
    sites = [s for s in usable_sites(cfg.feature_set, with_test=True) if s.site_id in set(saved[0]["training_sites"])]
    data = Prepared(cfg, sites)
    scores = json.loads((args.cv / "cv_scores.json").read_text())
    for variant in [v for v in VARIANTS if v in saved[0]["states"]]:
        vcfg, states = cfg, [u["states"][variant] for u in saved]
        if variant == "decoder":
            vcfg = cfg.model_copy(update={"model": "tamlstm"})
            states = [{k: v for k, v in s.items() if k.startswith("decoder.")} for s in states]
        elif variant == "z_off":
            vcfg = cfg.model_copy(update={"zero_embedding": True})
        bundle = make_bundle(vcfg.model_copy(update={"seeds": len(states)}), data, states, [])
        bundle["calibration"] = json.loads((args.cv / f"calibration_{variant}.json").read_text())
        bundle["metrics"]["cross_validation"] = {**scores, "variant": variant}
        save_bundle(bundle, args.runs / f"{variant}.pt")
        print(f"wrote {args.runs / f'{variant}.pt'}: {len(states)} members")


def cmd_attach(args: argparse.Namespace) -> None:
    bundle = load_bundle(args.checkpoint)
    bundle.pop("path"), bundle.pop("sha256")
    bundle["calibration"] = json.loads((args.cv / f"calibration_{args.variant}.json").read_text())
    scores = json.loads((args.cv / "cv_scores.json").read_text())
    bundle["metrics"]["cross_validation"] = {**scores, "variant": args.variant}
    save_bundle(bundle, args.checkpoint)
    print(f"{args.checkpoint}: calibration and cross-validation scores of {args.variant} attached")


def cmd_test(args: argparse.Namespace) -> None:
    metrics = site_metrics(same_days(pd.read_csv(args.report / "predictions.csv", parse_dates=["date"])))
    models = list(metrics["model"].unique())
    pairs = [(m, ref) for ref in args.against for m in models if m != ref]
    table = comparisons(metrics, pairs)
    table.to_csv(args.report / "comparisons.csv", index=False)
    print(table.round(4).to_string(index=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(required=True)
    p = sub.add_parser("cv")
    p.add_argument("--runs", type=Path, default=Path("runs/cv"))
    p.add_argument("--out", type=Path, default=Path("docs/validation/cv"))
    p.set_defaults(func=cmd_cv)
    p = sub.add_parser("assemble")
    p.add_argument("--runs", type=Path, default=Path("runs/final"))
    p.add_argument("--cv", type=Path, default=Path("runs/cv"))
    p.set_defaults(func=cmd_assemble)
    p = sub.add_parser("attach")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--variant", choices=VARIANTS, required=True)
    p.add_argument("--cv", type=Path, default=Path("runs/cv"))
    p.set_defaults(func=cmd_attach)
    p = sub.add_parser("test")
    p.add_argument("--report", type=Path, default=Path("docs/validation/test"))
    p.add_argument("--against", nargs="+", default=["tamlstm", "xgboost"])
    p.set_defaults(func=cmd_test)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
