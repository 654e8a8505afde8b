"""Evaluation arithmetic checked against hand computation on tiny hand-made frames."""

import logging

import numpy as np
import pandas as pd
import pytest
from conftest import FLUXNET
from scipy.stats import wilcoxon

from tamrl import plots
from tamrl.checkpoint import load_bundle, save_bundle
from tamrl.cli import main
from tamrl.data import join_sites
from tamrl.errors import DataError
from tamrl.evaluate import coverage, paired_comparison, same_days, site_metrics, summarise, write_report

SITES = pd.DataFrame({"site": ["S1", "S2", "S3"], "igbp": ["ENF", "ENF", "GRA"], "koppen": ["C", "D", "C"]})


def _series(obs, pred, qc=None, model="tamrl", site="S1", target="GPP", p05=np.nan, p95=np.nan) -> pd.DataFrame:
    """One model/site/target series on consecutive days; no interval unless ``p05`` and ``p95`` are given."""
    n = len(obs)
    return pd.DataFrame({
        "model": model, "site": site, "date": pd.date_range("2010-01-01", periods=n), "target": target,
        "observed": np.asarray(obs, dtype=float), "predicted": np.asarray(pred, dtype=float),
        "p05": p05, "p95": p95, "nee_qc": np.ones(n) if qc is None else np.asarray(qc, dtype=float),
    })  # fmt: skip


def _metrics(rows: list[tuple[str, str, float, float]], target: str = "GPP") -> pd.DataFrame:
    """A metrics frame from (model, site, rmse, r2) rows; bias and nmae are filler."""
    frame = pd.DataFrame(rows, columns=["model", "site", "rmse", "r2"])
    return frame.assign(target=target, bias=0.0, nmae=0.0, n_days=10)


def test_site_metrics_matches_hand_computation():
    # The last two days are excluded: QC 0.9 (not exactly 1) and a missing observation.
    frame = _series([1, 2, 3, 4, 10, np.nan], [1.5, 2, 2, 5, 0, 3], qc=[1, 1, 1, 1, 0.9, 1])
    row = site_metrics(frame).iloc[0]
    assert row["n_days"] == 4
    assert row["rmse"] == pytest.approx(0.75)  # sqrt(mean([0.25, 0, 1, 1]))
    assert row["r2"] == pytest.approx(0.55)  # 1 - 2.25 / 5
    assert row["bias"] == pytest.approx(0.125)  # mean([0.5, 0, -1, 1])
    assert row["nmae"] == pytest.approx(0.25)  # 0.625 / 2.5


def test_site_metrics_undefined_scores_are_nan():
    frame = pd.concat([
        _series([2, 2, 2], [1, 2, 3], site="S1"),  # constant obs: SST == 0
        _series([0, 0], [1, -1], site="S2"),  # zero obs: no NMAE
        _series([3], [4], site="S3"),  # a single day: no R2
    ])  # fmt: skip
    out = site_metrics(frame).set_index("site")
    assert np.isnan(out.loc["S1", "r2"]) and out.loc["S1", "rmse"] == pytest.approx(np.sqrt(2 / 3))
    assert np.isnan(out.loc["S2", "nmae"]) and out.loc["S2", "bias"] == pytest.approx(0.0)
    assert np.isnan(out.loc["S3", "r2"]) and out.loc["S3", "nmae"] == pytest.approx(1 / 3)


def test_site_metrics_drops_series_without_qualifying_days(caplog):
    frame = pd.concat([_series([1, 2], [1, 2], site="S1"), _series([1, 2], [1, 2], qc=[0.5, 0.9], site="S2")])
    with caplog.at_level(logging.WARNING, logger="tamrl.evaluate"):
        out = site_metrics(frame)
    assert list(out["site"]) == ["S1"]
    assert "1 of 2" in caplog.text


def test_site_metrics_rejects_bad_input():
    with pytest.raises(DataError, match=r"predictions lacks column\(s\) nee_qc"):
        site_metrics(_series([1], [1]).drop(columns="nee_qc"))
    with pytest.raises(DataError, match="empty"):
        site_metrics(_series([], []))
    with pytest.raises(DataError, match="no day"):
        site_metrics(_series([1, 2], [1, 2], qc=[0, 0]))


def test_summarise_mean_and_median_over_sites():
    metrics = _metrics([("a", "S1", 1.0, 0.5), ("a", "S2", 2.0, 0.7), ("a", "S3", 6.0, 0.0)])
    overall = summarise(metrics, SITES).iloc[0]
    assert overall["n_sites"] == 3
    assert overall["rmse_mean"] == pytest.approx(3.0)
    assert overall["rmse_median"] == pytest.approx(2.0)
    assert overall["r2_mean"] == pytest.approx(0.4)

    by_igbp = summarise(metrics, SITES, by="igbp").set_index("igbp")
    assert by_igbp.loc["ENF", "rmse_mean"] == pytest.approx(1.5)
    assert by_igbp.loc["ENF", "n_sites"] == 2
    assert by_igbp.loc["GRA", "rmse_median"] == pytest.approx(6.0)
    with pytest.raises(DataError, match="sites lacks"):
        summarise(metrics, SITES.iloc[:2], by="koppen")


def test_site_classes_join_only_from_a_table_that_describes_every_site_once(tmp_path):
    metrics = _metrics([("a", "S1", 1.0, 0.5), ("a", "S3", 6.0, 0.0)])
    joined = join_sites(metrics, SITES, ("igbp",))
    assert joined["igbp"].tolist() == ["ENF", "GRA"] and "koppen" not in joined
    assert join_sites(metrics, SITES.drop(columns="koppen"), ("igbp",))["igbp"].tolist() == ["ENF", "GRA"]
    twice = pd.concat([SITES, SITES.iloc[[0]].assign(igbp="GRA")])
    with pytest.raises(DataError, match=r"sites describes some site twice with different igbp$"):
        join_sites(metrics, twice, ("igbp",))
    with pytest.raises(DataError, match="sites describes some site twice with different igbp or koppen"):
        summarise(metrics, twice, by="igbp")
    with pytest.raises(DataError, match=r"sites lacks 1 evaluated sites, e.g. \['S3'\]"):
        plots.rmse_by_igbp(metrics, SITES.iloc[:2], "GPP", tmp_path / "rmse.png")
    with pytest.raises(DataError, match=r"sites lacks column\(s\) koppen"):
        summarise(metrics, SITES.drop(columns="koppen"), by="igbp")


def test_paired_comparison_counts_wins():
    metrics = _metrics([
        ("a", "S1", 1.0, 0.9), ("a", "S2", 2.0, 0.5), ("a", "S3", 3.0, 0.1),
        ("b", "S1", 2.0, 0.8), ("b", "S2", 1.0, 0.6), ("b", "S3", 4.0, 0.2), ("b", "S4", 9.0, 0.0),
    ])  # fmt: skip
    rmse = paired_comparison(metrics, "a", "b", "GPP")
    assert (rmse["n_sites"], rmse["wins_a"], rmse["wins_b"]) == (3, 2, 1)  # S4 has no pair
    assert rmse["rel_diff_pct"] == pytest.approx((2 - 7 / 3) / (7 / 3) * 100)
    assert rmse["p_value"] == pytest.approx(wilcoxon([1, 2, 3], [2, 1, 4]).pvalue)

    r2 = paired_comparison(metrics, "a", "b", "GPP", metric="r2")  # higher is better
    assert (r2["wins_a"], r2["wins_b"]) == (1, 2)
    with pytest.raises(DataError, match="not in metrics"):
        paired_comparison(metrics, "a", "c", "GPP")


def test_write_report_writes_tables_figures_and_markdown(tmp_path):
    # Constant offsets make RMSE = |offset|: tamrl 0.5, 1, 2 and xgboost 1, 0.5, 3 at S1, S2, S3.
    obs = [1.0, 2.0, 3.0, 4.0]
    offsets = {"tamrl": (0.5, 1.0, 2.0), "xgboost": (1.0, 0.5, 3.0)}
    predictions = pd.concat(
        _series(obs, np.add(obs, offset), model=model, site=site)
        for model, values in offsets.items()
        for site, offset in zip(["S1", "S2", "S3"], values, strict=True)
    )
    paths = write_report(predictions, SITES, tmp_path / "report")

    figures = {"rmse_by_igbp_GPP", "site_scatter_GPP", "relative_rmse_heatmap"}
    assert set(paths) == {"predictions", "site_metrics", "summary", "coverage", "report", *figures}
    for path in paths.values():
        assert path.is_file() and path.stat().st_size > 0

    summary = pd.read_csv(paths["summary"]).set_index(["group_by", "group", "model"])
    assert set(summary.index.get_level_values("group_by")) == {"overall", "igbp", "koppen"}
    assert summary.loc[("overall", "all", "tamrl"), "rmse_mean"] == pytest.approx(3.5 / 3)
    assert summary.loc[("igbp", "ENF", "xgboost"), "rmse_mean"] == pytest.approx(0.75)

    text = paths["report"].read_text()
    assert "| tamrl | GPP | 3 | 1.167 | 1.000 |" in text  # overall: mean and median RMSE
    assert "| GPP | ENF | 2 | 0.750 | 0.750 |" in text  # RMSE by IGBP class: tamrl, xgboost
    assert "| GPP | D | 1 | 1.000 | 0.500 |" in text  # RMSE by Koppen group
    assert "| tamrl | xgboost | GPP | rmse | 3 | 2 | 1 | -22.222 |" in text  # paired, against xgboost
    assert "![relative_rmse_heatmap](relative_rmse_heatmap.png)" in text
    assert "All models are scored on the same days" in text
    assert "tamrl: no calibrated intervals." in text and "xgboost: no calibrated intervals." in text


def test_write_report_writes_every_observed_day_to_predictions_csv(tmp_path):
    # Day 2 has a partial NEE QC (kept in the file, not scored); day 3 has no observation (left out).
    frame = _series([1.0, 2.0, np.nan], [1.5, 2.25, 3.0], qc=[1, 0.5, 1], p05=0.5, p95=np.nan)
    frame = frame[["nee_qc", *frame.columns.drop("nee_qc")]]  # column order of the input does not matter
    paths = write_report(frame, SITES, tmp_path / "report")
    assert paths["predictions"] == tmp_path / "report" / "predictions.csv"
    assert paths["predictions"].read_text().splitlines() == [
        "model,site,date,target,observed,predicted,p05,p95,nee_qc",
        "tamrl,S1,2010-01-01,GPP,1.0000,1.5000,0.5000,,1.0000",
        "tamrl,S1,2010-01-02,GPP,2.0000,2.2500,0.5000,,0.5000",
    ]
    metrics = pd.read_csv(paths["site_metrics"])
    assert metrics.loc[0, "n_days"] == 1 and metrics.loc[0, "rmse"] == pytest.approx(0.5)


def test_coverage_matches_hand_computation():
    # GPP at S1: 3 of 4 qualifying days inside [p05, p95] (the bounds count as inside); the QC 0.5 day is ignored.
    s1 = _series(
        [1, 2, 3, 9, 100], [1, 2, 3, 4, 5], qc=[1, 1, 1, 1, 0.5], p05=[0, 1, 3, 5, 0], p95=[2, 4, 4, 8, 1], site="S1"
    )
    s3 = _series([5, 6], [5, 6], site="S3", p05=[4, 7], p95=[6, 8])  # 1 of 2 inside, widths 2 and 1
    frame = pd.concat([s1, s3])
    overall = coverage(frame).iloc[0]
    assert overall["n_days"] == 6
    assert overall["coverage"] == pytest.approx(4 / 6)
    assert overall["mean_width"] == pytest.approx((2 + 3 + 1 + 3 + 2 + 1) / 6)

    by_igbp = coverage(frame, by="igbp", sites=SITES).set_index("igbp")
    assert by_igbp.loc["ENF", "n_days"] == 4 and by_igbp.loc["ENF", "coverage"] == pytest.approx(0.75)
    assert by_igbp.loc["ENF", "mean_width"] == pytest.approx(2.25)
    assert by_igbp.loc["GRA", "coverage"] == pytest.approx(0.5) and by_igbp.loc["GRA", "mean_width"] == 1.5
    with pytest.raises(DataError, match="coverage by 'igbp'"):
        coverage(frame, by="igbp")


def test_coverage_skips_models_without_intervals(tmp_path):
    frame = pd.concat([
        _series([1, 2, 3, 4], [1, 2, 3, 4], model="tamrl", p05=[0, 0, 0, 0], p95=[1, 1, 1, 1]),
        _series([1, 2, 3, 4], [1, 2, 3, 4], model="xgboost"),
    ])  # fmt: skip
    cover = coverage(frame)
    assert list(cover["model"]) == ["tamrl"]
    assert cover.loc[0, "coverage"] == pytest.approx(0.25)

    paths = write_report(frame, SITES, tmp_path / "report")
    stacked = pd.read_csv(paths["coverage"])
    assert list(stacked.columns) == ["group_by", "group", "model", "target", "n_days", "coverage", "mean_width"]
    assert list(zip(stacked["group_by"], stacked["group"], stacked["model"], strict=True)) == [
        ("overall", "all", "tamrl"),
        ("igbp", "ENF", "tamrl"),
    ]
    text = paths["report"].read_text()
    assert "## 90% interval coverage" in text
    assert "| tamrl | GPP | 4 | 0.250 | 1.000 |" in text
    assert "xgboost: no calibrated intervals." in text and "tamrl: no calibrated" not in text


def test_all_models_are_scored_on_the_same_days(tmp_path):
    # xgboost has no prediction on day 2 and tamrl none on day 4 at S1: both days drop for both models.
    frame = pd.concat([
        _series([1, 2, 3, 4], [2, 2, 3, np.nan], model="tamrl"),
        _series([1, 2, 3, 4], [1, np.nan, 5, 4], model="xgboost"),
        _series([1, 2], [1, 2], model="tamrl", site="S2"),  # S2 has no xgboost row at all
    ])  # fmt: skip
    days = same_days(frame)
    assert sorted(days["date"].dt.day) == [1, 1, 3, 3]

    paths = write_report(frame, SITES, tmp_path / "report")
    metrics = pd.read_csv(paths["site_metrics"]).set_index("model")
    assert list(metrics["site"]) == ["S1", "S1"] and list(metrics["n_days"]) == [2, 2]
    assert metrics.loc["tamrl", "rmse"] == pytest.approx(np.sqrt(0.5))  # errors 1, 0
    assert metrics.loc["xgboost", "rmse"] == pytest.approx(np.sqrt(2))  # errors 0, 2
    assert len(pd.read_csv(paths["predictions"])) == 10  # the file keeps every observed day of every model
    with pytest.raises(DataError, match="prediction from all 2 models"):
        same_days(frame[frame["site"] == "S2"].assign(model=["a", "b"]))


def test_evaluate_refuses_sites_used_for_validation(tmp_path, capsys):
    # Sites that monitored training (early stopping, XGBoost's rounds) are not held out either.
    bundle = {k: v for k, v in load_bundle("met").items() if k not in ("path", "sha256")}
    checkpoint = save_bundle({**bundle, "training_sites": [], "validation_sites": ["AU-Fog"]}, tmp_path / "val.pt")
    held = tmp_path / "held.txt"
    held.write_text("AU-Fog\n")
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(FLUXNET), "--sites-file", str(held),
                 "--out", str(tmp_path / "r")]) == 2  # fmt: skip
    assert "1 evaluation site(s) were used to train or validate tamrl (e.g. AU-Fog)" in capsys.readouterr().err
