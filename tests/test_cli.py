"""The ``tamrl`` command end to end on the real test sites: train, predict, evaluate, and its errors."""

import numpy as np
import pandas as pd
import pytest
from conftest import FLUXNET, MODIS

from service.cli import main as tamrl
from tamrl.cli import main
from tamrl.features import TARGETS
from tamrl.predict import Predictor, read_drivers

TINY = ["--seeds", "2", "--hidden", "16", "--epochs", "1", "--epochs-stage2", "1", "--max-steps-per-epoch", "2",
        "--quiet"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "tamrl.pt"
    held = tmp_path_factory.mktemp("cli") / "held.txt"
    held.write_text("AU-Fog\n")
    assert main(["train", "--model", "tamrl", "--feature-set", "modis_met", "--data", str(FLUXNET),
                 "--modis", str(MODIS), "--exclude-sites-file", str(held), "--out", str(path), *TINY]) == 0
    return path


def test_train_writes_a_checkpoint_without_the_excluded_site(checkpoint):
    import torch

    bundle = torch.load(checkpoint, weights_only=True)
    used = set(bundle["training_sites"]) | set(bundle["validation_sites"])
    assert "AU-Fog" not in used and len(used) == 4


def test_predict_from_drivers_alone(checkpoint, sites, tmp_path):
    site = next(s for s in sites if s.site_id == "AU-Fog")
    drivers = site.frame.drop(columns=[*TARGETS, "NEE_QC"]).reset_index()
    drivers.to_csv(tmp_path / "drivers.csv", index=False)
    out = tmp_path / "pred.csv"
    assert main(["predict", "--checkpoint", str(checkpoint), "--drivers", str(tmp_path / "drivers.csv"),
                 "--lat", str(site.lat), "--lon", str(site.lon), "--igbp", site.igbp, "--koppen", site.koppen,
                 "--out", str(out)]) == 0
    pred = pd.read_csv(out, index_col="date", parse_dates=True)
    assert len(pred) == len(site.frame)
    assert list(pred.columns) == ["GPP", "RECO", "NEE", "GPP_std", "RECO_std", "NEE_std"]
    assert (pred[["GPP", "RECO"]] >= 0).all().all()
    assert pred["GPP_std"].max() > 0


def test_negative_latitude_and_longitude_are_read_as_numbers(checkpoint, sites, tmp_path):
    site = next(s for s in sites if s.site_id == "AR-Vir")  # 28.2 S, 56.2 W
    path, out = tmp_path / "drivers.csv", tmp_path / "pred.csv"
    site.frame.drop(columns=[*TARGETS, "NEE_QC"]).reset_index().to_csv(path, index=False)
    assert tamrl(["predict", "--checkpoint", str(checkpoint), "--drivers", str(path), "--lat", "-28.23982",
                  "--lon", "-56.18821", "--igbp", "ENF", "--koppen", "C", "--out", str(out)]) == 0  # fmt: skip
    predictor, drivers = Predictor.load(checkpoint), read_drivers(path)
    expected = predictor.predict_frame(drivers, -28.23982, -56.18821, "ENF", "C")
    got = pd.read_csv(out, index_col="date", parse_dates=True)
    np.testing.assert_allclose(got.values, expected[got.columns].values, rtol=0, atol=1e-4)
    north = predictor.predict_frame(drivers, 28.23982, -56.18821, "ENF", "C")  # the sign matters
    assert np.abs(got.values - north[got.columns].values).max() > 1e-3


def test_evaluate_scores_held_out_sites(checkpoint, tmp_path):
    held = tmp_path / "held.txt"
    held.write_text("AU-Fog\n")
    out = tmp_path / "report"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--label", "tamrl", "--data", str(FLUXNET),
                 "--modis", str(MODIS), "--sites-file", str(held), "--out", str(out)]) == 0
    metrics = pd.read_csv(out / "site_metrics.csv")
    assert set(metrics["site"]) == {"AU-Fog"}
    assert set(metrics["target"]) == set(TARGETS)
    assert (metrics["n_days"] > 0).all() and (metrics["rmse"] > 0).all()
    assert "RMSE" in (out / "summary.md").read_text()


def test_evaluate_refuses_training_sites(checkpoint, tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(FLUXNET), "--modis", str(MODIS),
                 "--out", str(tmp_path / "r")]) == 2
    assert "were used to train" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sites-file", "{unknown}"], "unknown site(s): XX-Nope"),
        (["--feature-set", "modis_met", "--modis", "{missing}"], "MODIS reflectance file"),
        (["--data", "{missing}"], "sites.csv not found"),
        (["--config", "{badconfig}"], "Extra inputs are not permitted"),
    ],
)
def test_train_errors_are_one_line(args, message, tmp_path, capsys):
    files = {"unknown": tmp_path / "s.txt", "missing": tmp_path / "nowhere", "badconfig": tmp_path / "c.toml"}
    files["unknown"].write_text("XX-Nope\n")
    files["badconfig"].write_text("seeds = 1\nlearning_rate = 3\n")
    args = [a.format(**files) for a in args]
    base = ["train", "--data", str(FLUXNET), "--feature-set", "met", "--out", str(tmp_path / "x.pt"), *TINY]
    assert main([*base, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_predict_with_a_checkpoint_the_drivers_cannot_feed(checkpoint, tmp_path, capsys):
    pd.DataFrame({"date": pd.date_range("2010-01-01", periods=60), "TA": 10.0, "SW_IN": 200.0,
                  "VPD": 5.0}).to_csv(tmp_path / "met.csv", index=False)
    assert main(["predict", "--checkpoint", str(checkpoint), "--drivers", str(tmp_path / "met.csv"),
                 "--lat", "50", "--lon", "10", "--igbp", "ENF", "--koppen", "D"]) == 2
    assert "missing B01" in capsys.readouterr().err


def test_train_on_carbonbench_tables(tmp_path):
    import torch
    from conftest import DATA

    out = tmp_path / "cb.pt"
    assert main(["train", "--model", "tamrl", "--feature-set", "carbonbench", "--data", str(DATA / "carbonbench"),
                 "--out", str(out), *TINY]) == 0
    bundle = torch.load(out, weights_only=True)
    assert bundle["feature_set"] == "carbonbench"
    assert "sur_refl_b01" in bundle["features"]["dynamic"] and "LON_SIN" in bundle["features"]["static"]
