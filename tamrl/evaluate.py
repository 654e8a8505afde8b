"""Zero-shot evaluation: per-site skill, summaries over sites, paired model comparisons and a markdown report.

Follows the CarbonBench protocol used by TAM-RL (Rozanov et al. 2026): only days with NEE QC exactly 1 count,
skill is computed per held-out site and then averaged (mean and median) over sites, overall and per IGBP
class or Koppen group, and models are compared site by site against a reference (XGBoost by default).
Everything is computed from one long table of daily predictions (PREDICTION_COLUMNS), which the report writes
as ``predictions.csv``; when several models are compared, all are scored on the same days.
"""

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from tamrl import plots
from tamrl.data import Site, join_sites, require_columns
from tamrl.errors import DataError
from tamrl.features import TARGETS
from tamrl.predict import Predictor

log = logging.getLogger(__name__)

PREDICTION_COLUMNS = ("model", "site", "date", "target", "observed", "predicted", "p05", "p95", "nee_qc")
METRICS = ("rmse", "r2", "bias", "nmae")
GROUPINGS = ("igbp", "koppen")
KEYS = ["model", "site", "target"]
DAY_KEYS = ["site", "date", "target"]


def site_predictions(predictor: Predictor, sites: list[Site], label: str) -> pd.DataFrame:
    """Long table (PREDICTION_COLUMNS) of a checkpoint's predictions at sites, every day of their records.

    ``p05`` and ``p95`` are the calibrated 90% interval, NaN when the checkpoint has no calibration.
    """
    frames = []
    for site in sites:
        pred = predictor.predict_site(site)
        for target in TARGETS:
            lo, hi = (pred[f"{target}_{q}"].to_numpy() if predictor.calibrated else np.nan for q in ("p05", "p95"))
            frames.append(pd.DataFrame({
                "model": label, "site": site.site_id, "date": site.frame.index, "target": target,
                "observed": site.frame[target].to_numpy(), "predicted": pred[target].to_numpy(), "p05": lo, "p95": hi,
                "nee_qc": site.frame["NEE_QC"].to_numpy(),
            }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def _require(frame: pd.DataFrame, columns: tuple[str, ...], name: str) -> None:
    """Raise DataError when ``frame`` is empty or lacks any of ``columns``."""
    require_columns(frame, columns, name)
    if frame.empty:
        raise DataError(f"{name} is empty; nothing to evaluate")


def _sorted(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Sort rows by ``by``, targets in the canonical GPP, RECO, NEE order; reset the index."""

    def key(col: pd.Series) -> pd.Series:
        return col.map(TARGETS.index) if col.name == "target" else col

    return frame.sort_values(by, key=key, kind="stable").reset_index(drop=True)


def _qualifying(predictions: pd.DataFrame) -> pd.Series:
    """Rows that can be scored: NEE QC exactly 1 and a finite observation and prediction."""
    observed, predicted = predictions["observed"].astype(float), predictions["predicted"].astype(float)
    return (predictions["nee_qc"] == 1) & np.isfinite(observed) & np.isfinite(predicted)


def site_metrics(predictions: pd.DataFrame) -> pd.DataFrame:
    """Skill of every model at every site for every target, on days with NEE QC == 1 and finite observed and
    predicted values.

    Returns one row per (model, site, target) with ``n_days``, ``rmse``, ``r2`` (coefficient of determination
    1 - SSE/SST, NaN when the observations do not vary), ``bias`` (mean predicted - observed) and ``nmae`` (mean
    absolute error over mean absolute observation, NaN when that is 0). Series without a qualifying day are dropped.
    """
    _require(predictions, PREDICTION_COLUMNS, "predictions")
    unknown = sorted(set(predictions["target"]) - set(TARGETS))
    if unknown:
        raise DataError(f"predictions has unknown targets {unknown}; expected {list(TARGETS)}")

    obs = predictions["observed"].astype(float)
    pred = predictions["predicted"].astype(float)
    keep = _qualifying(predictions)
    days = predictions.loc[keep, KEYS].assign(obs=obs[keep], err=pred[keep] - obs[keep])
    if days.empty:
        raise DataError("predictions has no day with nee_qc == 1 and finite observed and predicted")
    days["dev2"] = (days["obs"] - days.groupby(KEYS)["obs"].transform("mean")) ** 2
    days["abs_err"] = days["err"].abs()
    days["abs_obs"] = days["obs"].abs()
    days["sq_err"] = days["err"] ** 2

    agg = days.groupby(KEYS).agg(
        n_days=("obs", "size"), sse=("sq_err", "sum"), sst=("dev2", "sum"), obs_min=("obs", "min"),
        obs_max=("obs", "max"), bias=("err", "mean"), mae=("abs_err", "mean"), mao=("abs_obs", "mean"),
    )  # fmt: skip
    # Varying observations (which implies >= 2 days) is the exact form of SST > 0, free of rounding residue.
    varies = agg["obs_max"] > agg["obs_min"]
    out = pd.DataFrame({
        "n_days": agg["n_days"],
        "rmse": np.sqrt(agg["sse"] / agg["n_days"]),
        "r2": (1 - agg["sse"] / agg["sst"]).where(varies),
        "bias": agg["bias"],
        "nmae": (agg["mae"] / agg["mao"]).where(agg["mao"] > 0),
    }).reset_index()  # fmt: skip

    n_series = len(predictions.drop_duplicates(KEYS))
    if len(out) < n_series:
        log.warning(
            "%d of %d model/site/target series have no day with nee_qc == 1, an observation and a prediction; dropped",
            n_series - len(out), n_series,
        )  # fmt: skip
    return _sorted(out, KEYS)


def same_days(predictions: pd.DataFrame) -> pd.DataFrame:
    """The scorable rows (NEE QC == 1, finite observed and predicted) of the (site, date, target) days on which
    every model of ``predictions`` is scorable, so all models are scored on the same days."""
    _require(predictions, PREDICTION_COLUMNS, "predictions")
    days = predictions[_qualifying(predictions)]
    n_models = predictions["model"].nunique()
    shared = days[days.groupby(DAY_KEYS)["model"].transform("nunique") == n_models]
    if shared.empty:
        raise DataError(f"no day with nee_qc == 1 and a finite observation has a prediction from all {n_models} models")
    if len(shared) < len(days):
        log.info(
            "%d of %d scorable model days dropped: not every model predicts them", len(days) - len(shared), len(days)
        )
    return shared.reset_index(drop=True)


def coverage(predictions: pd.DataFrame, by: str | None = None, sites: pd.DataFrame | None = None) -> pd.DataFrame:
    """How often the calibrated 90% interval holds the observation, per (model, target), optionally per IGBP
    class or Koppen group of the site (``by`` "igbp" or "koppen", described by ``sites``).

    Counts days with NEE QC == 1 and finite observed, p05 and p95 (models without intervals have none, so they
    are left out). Returns ``n_days``, ``coverage`` (share of those days with p05 <= observed <= p95) and
    ``mean_width`` (mean p95 - p05).
    """
    _require(predictions, PREDICTION_COLUMNS, "predictions")
    if by is not None and (by not in GROUPINGS or sites is None):
        raise DataError(f"coverage by {by!r} needs one of {list(GROUPINGS)} and a sites table")
    observed, lo, hi = (predictions[c].astype(float) for c in ("observed", "p05", "p95"))
    keep = (predictions["nee_qc"] == 1) & np.isfinite(observed) & np.isfinite(lo) & np.isfinite(hi)
    days = predictions.loc[keep, ["model", "site", "target"]].assign(
        inside=((lo <= observed) & (observed <= hi))[keep], width=(hi - lo)[keep]
    )
    keys = ["model", "target"] if by is None else ["model", "target", by]
    if by is not None:
        days = join_sites(days, sites, GROUPINGS)
    out = days.groupby(keys).agg(n_days=("inside", "size"), coverage=("inside", "mean"), mean_width=("width", "mean"))
    return _sorted(out.reset_index(), keys)


def summarise(metrics: pd.DataFrame, sites: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """Mean and median over sites of each metric per (model, target), optionally per IGBP or Koppen group.

    ``by`` is None, "igbp" or "koppen". Returns one row per (model, target[, by]) with ``n_sites`` and
    ``<metric>_mean`` / ``<metric>_median`` columns; NaN site values (e.g. R2 at a constant site) are skipped.
    """
    _require(metrics, ("model", "site", "target", *METRICS), "metrics")
    if by is not None and by not in GROUPINGS:
        raise DataError(f"cannot summarise by {by!r}; choose one of {list(GROUPINGS)} or None")
    keys = ["model", "target"] if by is None else ["model", "target", by]
    frame = join_sites(metrics, sites, GROUPINGS) if by else metrics
    grouped = frame.groupby(keys)
    stats = grouped[list(METRICS)].agg(["mean", "median"])
    stats.columns = [f"{metric}_{stat}" for metric, stat in stats.columns]
    stats.insert(0, "n_sites", grouped["site"].nunique())
    return _sorted(stats.reset_index(), keys)


def _score(metrics: pd.DataFrame, metric: str) -> pd.Series:
    """Values of ``metric`` as a skill to compare: absolute for bias, since either sign is an error."""
    return metrics[metric].abs() if metric == "bias" else metrics[metric]


def paired_comparison(
    metrics: pd.DataFrame, model_a: str, model_b: str, target: str, metric: str = "rmse"
) -> dict:
    """Compare two models site by site on one target, over the sites where both have a finite ``metric``.

    Returns ``n_sites``, ``wins_a`` and ``wins_b`` (lower rmse / nmae / absolute bias, higher r2),
    ``rel_diff_pct`` = (mean a - mean b) / mean b * 100 over those sites, and the Wilcoxon signed-rank
    ``p_value`` (NaN with no sites or no difference at all).
    """
    _require(metrics, ("model", "site", "target", *METRICS), "metrics")
    if metric not in METRICS:
        raise DataError(f"unknown metric {metric!r}; choose one of {list(METRICS)}")
    for model in (model_a, model_b):
        if model not in set(metrics["model"]):
            raise DataError(f"model {model!r} is not in metrics; have {sorted(set(metrics['model']))}")

    rows = metrics[metrics["target"] == target]
    wide = rows.assign(score=_score(rows, metric)).pivot(index="site", columns="model", values="score")
    pairs = wide.reindex(columns=[model_a, model_b]).dropna()
    a, b = pairs[model_a].to_numpy(), pairs[model_b].to_numpy()
    diff = a - b if metric == "r2" else b - a  # positive where a is better
    rel = (a.mean() - b.mean()) / b.mean() * 100 if len(pairs) and b.mean() != 0 else np.nan
    return {
        "model_a": model_a,
        "model_b": model_b,
        "target": target,
        "metric": metric,
        "n_sites": len(pairs),
        "wins_a": int((diff > 0).sum()),
        "wins_b": int((diff < 0).sum()),
        "rel_diff_pct": float(rel),
        "p_value": float(wilcoxon(a, b).pvalue) if np.any(diff != 0) else np.nan,
    }


def _fmt(value: object) -> str:
    """Format a table cell: 3 decimals for floats, 3 significant digits below 0.01, n/a for NaN."""
    if isinstance(value, float | np.floating):
        if np.isnan(value):
            return "n/a"
        return f"{value:.3g}" if 0 < abs(value) < 0.01 else f"{value:.3f}"
    return str(value)


def _md_table(frame: pd.DataFrame) -> str:
    """Render a frame as a GitHub markdown table."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + " --- |" * frame.shape[1]]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _group_table(summary: pd.DataFrame, by: str) -> pd.DataFrame:
    """Mean RMSE per (target, class) with one column per model, and the number of sites in the class."""
    rows = summary[summary["group_by"] == by]
    table = rows.pivot(index=["target", "group"], columns="model", values="rmse_mean")
    table.insert(0, "n_sites", rows.groupby(["target", "group"])["n_sites"].max())
    return _sorted(table.reset_index().rename(columns={"group": by}), ["target", by])


def _comparisons(metrics: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Paired RMSE and R2 comparison of every other model against ``reference``, per target."""
    targets = [t for t in TARGETS if t in set(metrics["target"])]
    rows = [
        paired_comparison(metrics, model, reference, target, metric)
        for model in sorted(set(metrics["model"]) - {reference})
        for target in targets
        for metric in ("rmse", "r2")
    ]
    return pd.DataFrame(rows)


def _figures(metrics: pd.DataFrame, sites: pd.DataFrame, reference: str, out_dir: Path) -> dict[str, Path]:
    """Draw the RMSE-by-IGBP bars per target and, with two or more models, the scatters and the heat map."""
    models = sorted(set(metrics["model"]))
    targets = [t for t in TARGETS if t in set(metrics["target"])]
    paths = {}
    for target in targets:
        paths[f"rmse_by_igbp_{target}"] = plots.rmse_by_igbp(
            metrics, sites, target, out_dir / f"rmse_by_igbp_{target}.png"
        )
    if len(models) < 2:
        return paths
    others = [m for m in models if m != reference]
    model_a = "tamrl" if "tamrl" in others else others[0]
    for target in targets:
        paths[f"site_scatter_{target}"] = plots.site_scatter(
            metrics, model_a, reference, target, out_dir / f"site_scatter_{target}.png"
        )
    paths["relative_rmse_heatmap"] = plots.relative_rmse_heatmap(
        metrics, sites, reference, out_dir / "relative_rmse_heatmap.png"
    )
    return paths


def _coverage_section(cover: pd.DataFrame, models: list[str]) -> list[str]:
    """The coverage part of the report: the overall table and a line per model without intervals."""
    overall = cover[cover["group_by"] == "overall"][["model", "target", "n_days", "coverage", "mean_width"]]
    lines = ["## 90% interval coverage",
             "Share of scored days whose observation lies within the calibrated 5th-95th percentile interval "
             "(0.90 when calibrated well) and the mean interval width in g C m-2 d-1; per IGBP class in "
             "coverage.csv."]  # fmt: skip
    if len(overall):
        lines.append(_md_table(overall.rename(columns={"n_days": "days", "mean_width": "mean width"})))
    lines += [f"{model}: no calibrated intervals." for model in models if model not in set(overall["model"])]
    return lines


def _markdown(
    summary: pd.DataFrame, comparisons: pd.DataFrame, cover: pd.DataFrame, reference: str, figures: dict[str, Path]
) -> str:
    """Assemble the report text from the stacked summary, the paired comparisons, the stacked coverage and the
    figure files."""
    overall = summary[summary["group_by"] == "overall"]
    overall = overall[["model", "target", "n_sites", "rmse_mean", "rmse_median", "r2_mean", "r2_median"]]
    overall = overall.rename(columns={"rmse_mean": "RMSE mean", "rmse_median": "RMSE median",
                                      "r2_mean": "R2 mean", "r2_median": "R2 median"})  # fmt: skip
    comparisons = comparisons.rename(columns={
        "model_a": "model", "model_b": "reference", "wins_a": "wins model", "wins_b": "wins reference",
        "rel_diff_pct": "mean diff %", "p_value": "Wilcoxon p",
    })  # fmt: skip
    parts = [
        "# Zero-shot evaluation",
        "Skill per held-out site on days with NEE QC == 1, then mean and median over sites. "
        "All models are scored on the same days: those where every model has a prediction "
        "(every day of every model is in predictions.csv). "
        "RMSE in g C m-2 d-1; R2 is the coefficient of determination.",
        "## Overall",
        _md_table(overall),
        "## RMSE by IGBP class (mean over sites)",
        _md_table(_group_table(summary, "igbp")),
        "## RMSE by Koppen group (mean over sites)",
        _md_table(_group_table(summary, "koppen")),
        f"## Paired comparison against {reference}",
        "Wins count sites where a model has the lower RMSE or the higher R2; mean diff % is "
        "(model - reference) / reference of the means over the shared sites.",
        _md_table(comparisons) if len(comparisons) else "Only one model; nothing to compare.",
        *_coverage_section(cover, sorted(set(summary["model"]))),
        "## Figures",
        *[f"![{name}]({path.name})" for name, path in sorted(figures.items())],
    ]
    return "\n\n".join(parts) + "\n"


def _stacked(overall: pd.DataFrame, groups: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Overall rows (group "all") and per-grouping rows (group: the class) in one table led by group_by, group."""
    parts = [overall.assign(group_by="overall", group="all")]
    parts += [frame.rename(columns={by: "group"}).assign(group_by=by) for by, frame in groups.items()]
    out = pd.concat(parts, ignore_index=True)
    return out[["group_by", "group", *out.columns.drop(["group_by", "group"])]]


def write_report(
    predictions: pd.DataFrame, sites: pd.DataFrame, out_dir: str | Path, reference: str = "xgboost"
) -> dict[str, Path]:
    """Write ``predictions.csv`` and, scored from it, CSV tables, PNG figures and ``summary.md`` into ``out_dir``.

    ``predictions.csv`` holds every row of ``predictions`` with a finite observation (PREDICTION_COLUMNS, all
    NEE QC values). Scores, coverage and figures use the days of that table that ``same_days`` keeps. Models are
    compared against ``reference``, or against the first model (alphabetically) when it is absent. Returns the
    written files by name (``predictions``, ``site_metrics``, ``summary``, ``coverage``, ``report`` and one per
    figure).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _require(predictions, PREDICTION_COLUMNS, "predictions")
    table = predictions.loc[np.isfinite(predictions["observed"].astype(float)), list(PREDICTION_COLUMNS)]
    table = _sorted(table, ["model", "site", "date", "target"])
    scored = same_days(table)
    metrics = site_metrics(scored)
    if reference not in set(metrics["model"]):
        reference = sorted(set(metrics["model"]))[0]
    summary = _stacked(summarise(metrics, sites), {by: summarise(metrics, sites, by) for by in GROUPINGS})
    cover = _stacked(coverage(scored), {"igbp": coverage(scored, "igbp", sites)})

    paths = {name: out_dir / f"{name}.csv" for name in ("predictions", "site_metrics", "summary", "coverage")}
    table.to_csv(paths["predictions"], index=False, float_format="%.4f", date_format="%Y-%m-%d")
    metrics.to_csv(paths["site_metrics"], index=False)
    summary.to_csv(paths["summary"], index=False)
    cover.to_csv(paths["coverage"], index=False)
    figures = _figures(metrics, sites, reference, out_dir)
    paths["report"] = out_dir / "summary.md"
    paths["report"].write_text(_markdown(summary, _comparisons(metrics, reference), cover, reference, figures))
    return dict(sorted({**paths, **figures}.items()))
