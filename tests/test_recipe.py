"""The training recipe's parts against hand computations: temporal context, calibration, weight averaging, the z-off
control, support sets built alike in training and inference, and version 1 checkpoints."""


import numpy as np
import pandas as pd
import pytest
import torch

from tamrl.calibration import bounds, fit_calibration, sigma_factor
from tamrl.checkpoint import load_bundle
from tamrl.config import load_config
from tamrl.features import (
    FEATURE_SETS,
    climatology,
    days_since,
    dynamic_features,
    feature_set,
    trailing_mean,
    vegetation_indices,
)  # fmt: skip
from tamrl.predict import Predictor, build_network
from tamrl.train import WeightAverage
from tamrl.windows import sample_episode, spread_support


def test_trailing_mean_by_hand():
    values = np.arange(1, 8, dtype=np.float32)
    np.testing.assert_allclose(trailing_mean(values, 3), [1, 1.5, 2, 3, 4, 5, 6])
    block = np.stack([values, 10 * values], axis=1)  # (time, pixels): each pixel on its own
    np.testing.assert_allclose(trailing_mean(block, 2)[:, 1], [10, 15, 25, 35, 45, 55, 65])


def test_days_since_and_indices_by_hand():
    clear = np.array([False, True, False, False, True, False])
    np.testing.assert_array_equal(days_since(clear), [365, 0, 1, 2, 0, 1])
    bands = np.zeros(7, np.float32)
    bands[:3] = 0.05, 0.4, 0.02  # red, NIR, blue
    ndvi, evi, nirv = vegetation_indices(bands)
    assert ndvi == pytest.approx(0.35 / 0.45)
    assert evi == pytest.approx(2.5 * 0.35 / (0.4 + 0.3 - 0.15 + 1))
    assert nirv == pytest.approx(0.35 / 0.45 * 0.4)


def test_context_features_never_look_ahead(sites):
    fs = feature_set("modis_met_context")
    site = sites[0]
    drivers = {name: site.frame[name].to_numpy().copy() for name in fs.required}
    before = dynamic_features(fs, drivers, site.dates)
    drivers["TA"][400:] += 10
    drivers["CLEAR"][400:] = 1
    after = dynamic_features(fs, drivers, site.dates)
    causal = [i for i, n in enumerate(fs.dynamic_names) if n.startswith("TA_MEAN") or n == "DAYS_SINCE_CLEAR"]
    np.testing.assert_array_equal(before[:400, causal], after[:400, causal])
    mean7 = fs.dynamic_names.index("TA_MEAN7")
    assert after[406, mean7] == pytest.approx(before[406, mean7] + 10, abs=1e-4)
    # the base features are the first columns, unchanged, so the context sets extend met and modis_met
    base = FEATURE_SETS["modis_met"]
    assert fs.dynamic_names[: len(base.dynamic_names)] == base.dynamic_names
    np.testing.assert_array_equal(
        before[:, : len(base.dynamic_names)],
        dynamic_features(base, {n: site.frame[n].to_numpy() for n in base.required}, site.dates),
    )


def test_climatology_is_the_monthly_mean_of_the_scaled_channels():
    fs = feature_set("met")
    dates = pd.date_range("2010-01-01", "2010-12-31")
    raw = dynamic_features(fs, {"TA": dates.month.to_numpy() * 1.0, "SW_IN": np.ones(365), "VPD": np.zeros(365)},
                           dates)[None]
    clim = climatology(raw, raw, fs).reshape(12, 3)
    # the months come from the DOY features (365.25 / 12-day bins), so a month's edge days may fall in a neighbour
    assert np.abs(clim[:, 0] - np.arange(1, 13)).max() < 0.2
    np.testing.assert_allclose(clim[:, 1], 1)


def _oof(residuals: list[float], spread: float) -> pd.DataFrame:
    rows = [{"site": f"S{i % 5}", "target": target, "observed": 2.0 + r, "predicted": 2.0, "spread": spread,
             "nee_qc": 1.0} for i, r in enumerate(residuals) for target in ("GPP", "RECO", "NEE")]
    return pd.DataFrame([*rows, {**rows[0], "nee_qc": 0.0, "observed": 99.0}])  # not a QC == 1 day: ignored


def test_calibration_quantiles_and_bounds_by_hand():
    residuals = list(np.linspace(-4, 4, 101))
    table = _oof(residuals, spread=1 / sigma_factor(3))  # spreads of 3 members with sigma 1: floor 1
    cal = fit_calibration(table, "test", members=3)
    gpp = cal["targets"]["GPP"]
    assert gpp["floor"] == pytest.approx(1.0) and cal["members"] == 3 and cal["n_days"] == 101
    assert gpp["quantiles"] == pytest.approx([-1.8, 1.8])  # 5th/95th percentile of linspace(-2, 2, 101)
    mean = np.full((2, 1, 3), 1.0, np.float32)
    spread = np.full((2, 1, 3), 0.5 / sigma_factor(10), np.float32)  # a 10-member ensemble with sigma 0.5
    lo, hi = bounds(cal, mean, spread, members=10)
    assert lo[0, 0, 2] == pytest.approx(1 - 1.8 * 1.5) and hi[0, 0, 2] == pytest.approx(1 + 1.8 * 1.5)
    assert lo[0, 0, 0] < 0  # not clipped: the interval bounds what a tower measures, which can be below zero
    # the interval holds 90% of the calibration days: 91 of 101
    lo, hi = bounds(cal, np.full((101, 3), 2.0), np.full((101, 3), 1 / sigma_factor(3)), members=3)
    observed = 2.0 + np.array(residuals)
    assert ((observed >= lo[:, 2] - 1e-5) & (observed <= hi[:, 2] + 1e-5)).sum() == 91

def test_weight_average_ramps_up_then_decays():
    net = torch.nn.Linear(1, 1, bias=False)
    net.weight.data.fill_(0.0)
    average = WeightAverage(net, decay=0.9)
    net.weight.data.fill_(1.0)
    average.update(net)  # step 1: decay min(0.9, 2/11)
    assert average.state["weight"].item() == pytest.approx(1 - 2 / 11)
    for _ in range(200):
        average.update(net)
    assert average.state["weight"].item() == pytest.approx(1.0, abs=1e-6)
    with average.applied(net):
        net.weight.data.fill_(5.0)
    assert net.weight.item() == 1.0


def test_z_off_control_ignores_the_support_set(sites):
    cfg = load_config(model="tamrl", hidden=16, embedding=4, zero_embedding=True)
    fs = feature_set(cfg.feature_set)
    torch.manual_seed(0)
    net = build_network(cfg, len(fs.dynamic_names), len(fs.static_names), 12 * 4)
    torch.nn.init.normal_(net.generator.mlp[-1].weight)  # a FiLM that is not the identity
    support = torch.randn(2, 3, 45, len(fs.dynamic_names) + len(fs.static_names))
    z = net.embed(support, torch.ones(2, 3), torch.randn(2, 48))
    assert torch.equal(z, torch.zeros(2, 4))
    x, static = torch.randn(2, 10, len(fs.dynamic_names)), torch.randn(2, len(fs.static_names))
    assert not torch.allclose(net(x, static, z)[0], net(x, static, None)[0])  # the constant FiLM still applies


def test_training_supports_are_spread_like_inference_ones():
    starts = np.arange(0, 3000, 15)
    rng = np.random.default_rng(0)
    _, support = sample_episode(starts, starts, 4, 6, rng)
    assert len(support) == 6
    gaps = np.diff(support)
    assert gaps.min() > 0 and gaps.max() < 3 * 3000 / 6  # one window per sixth of the record, not a clump
    inference = spread_support(3000, 6)
    assert len(inference) == 6 and np.diff(inference).min() >= 45


def test_version_1_checkpoints_still_load_and_predict(sites):
    bundle = load_bundle("met")
    assert bundle["upgraded_from"] == 1 and bundle["calibration"] is None
    predictor = Predictor(bundle)
    assert not predictor.calibrated
    out = predictor.predict_site(sites[0])
    assert "GPP_p05" not in out.columns and np.isfinite(out["GPP"]).all()
