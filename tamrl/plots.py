"""Paper-style figures of per-site skill (from ``tamrl.evaluate.site_metrics``), written as PNG files.

Figures are drawn on the Agg canvas directly, without pyplot, so nothing needs a display and no global figure
state builds up across calls.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tamrl.data import join_sites
from tamrl.errors import DataError
from tamrl.features import TARGETS

FLUX_UNITS = "g C m$^{-2}$ d$^{-1}$"
R2_FLOOR = -1.0  # R2 at the worst sites can be far below 0; clip so the scatter stays readable


def _save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG to ``path`` (creating its folder) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120)
    return path


def _target_rows(metrics: pd.DataFrame, target: str) -> pd.DataFrame:
    """Rows of ``metrics`` for one target; DataError when there are none."""
    rows = metrics[metrics["target"] == target]
    if rows.empty:
        raise DataError(f"metrics has no rows for target {target!r}")
    return rows


def rmse_by_igbp(metrics: pd.DataFrame, sites: pd.DataFrame, target: str, path: str | Path) -> Path:
    """Grouped bars of mean site RMSE per IGBP class (x) and model (bars), n sites per class in the labels."""
    rows = join_sites(_target_rows(metrics, target), sites, ("igbp",))
    means = rows.pivot_table(index="igbp", columns="model", values="rmse", aggfunc="mean")
    n_sites = rows.groupby("igbp")["site"].nunique()
    x = np.arange(len(means))
    width = 0.8 / means.shape[1]

    fig = Figure(figsize=(max(6.0, 0.5 * len(means) * (1 + 0.3 * means.shape[1])), 4.5), layout="constrained")
    ax = fig.subplots()
    for i, model in enumerate(means.columns):
        ax.bar(x + (i - (means.shape[1] - 1) / 2) * width, means[model], width, label=model)
    ax.set_xticks(x, [f"{c}\n(n={n_sites[c]})" for c in means.index])
    ax.set_ylabel(f"mean site RMSE ({FLUX_UNITS})")
    ax.set_title(f"{target}: mean site RMSE by IGBP class")
    fig.legend(loc="outside right upper")
    return _save(fig, path)


def site_scatter(metrics: pd.DataFrame, model_a: str, model_b: str, target: str, path: str | Path) -> Path:
    """Per-site RMSE and R2 of ``model_a`` (y) against ``model_b`` (x), with the 1:1 line and win counts."""
    rows = _target_rows(metrics, target)
    for model in (model_a, model_b):
        if model not in set(rows["model"]):
            raise DataError(f"model {model!r} has no {target} metrics")

    fig = Figure(figsize=(10, 4.8), layout="constrained")
    wins = []
    for ax, metric, name in zip(fig.subplots(1, 2), ("rmse", "r2"), ("RMSE", "R2"), strict=True):
        pairs = rows.pivot(index="site", columns="model", values=metric)[[model_a, model_b]].dropna()
        a, b = pairs[model_a], pairs[model_b]
        wins.append(f"{name} at {int((a > b).sum() if metric == 'r2' else (a < b).sum())}/{len(pairs)}")
        unit = f"({FLUX_UNITS})"
        if metric == "r2":
            a, b = a.clip(lower=R2_FLOOR), b.clip(lower=R2_FLOOR)
            unit = f"(clipped at {R2_FLOOR:g})"
        both = pd.concat([a, b])
        ax.plot([both.min(), both.max()], [both.min(), both.max()], "k--", linewidth=1)
        ax.scatter(b, a, s=16, alpha=0.7)
        ax.set_xlabel(f"{model_b} {name} {unit}")
        ax.set_ylabel(f"{model_a} {name} {unit}")
    fig.suptitle(f"{target}: {model_a} better than {model_b} in {wins[0]} and {wins[1]} sites")
    return _save(fig, path)


def relative_rmse_heatmap(
    metrics: pd.DataFrame, sites: pd.DataFrame, reference: str, path: str | Path
) -> Path:
    """Heat map of each model's RMSE difference (%) to ``reference``, per target and IGBP class.

    Cells compare mean RMSE over the sites both models share: (model - reference) / reference * 100, so
    negative (blue) means lower error than the reference.
    """
    ref = metrics.loc[metrics["model"] == reference, ["site", "target", "rmse"]]
    others = metrics[metrics["model"] != reference]
    if ref.empty or others.empty:
        raise DataError(f"a heat map against {reference!r} needs that model and at least one other")
    paired = join_sites(others.merge(ref, on=["site", "target"], suffixes=("", "_ref")), sites, ("igbp",))
    means = paired.groupby(["model", "target", "igbp"])[["rmse", "rmse_ref"]].mean()
    table = ((means["rmse"] - means["rmse_ref"]) / means["rmse_ref"] * 100).unstack(["target", "igbp"])
    table = table[sorted(table.columns, key=lambda c: (TARGETS.index(c[0]), c[1]))]
    values = table.to_numpy(dtype=float)
    limit = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0

    fig = Figure(
        figsize=(max(6.0, 0.55 * table.shape[1] + 2), 1.5 + 0.5 * table.shape[0]), layout="constrained"
    )
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(values), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            color = "white" if abs(value) > 0.6 * limit else "black"
            ax.text(j, i, f"{value:+.0f}", ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(table.shape[1]), [f"{t}\n{c}" for t, c in table.columns], fontsize=7)
    ax.set_yticks(range(table.shape[0]), table.index)
    ax.set_title(f"RMSE relative to {reference} (%); negative is better")
    fig.colorbar(image, ax=ax, label="%")
    return _save(fig, path)
