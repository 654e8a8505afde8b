"""The science core on real data: windows, loss, weights, training, checkpoints and prediction."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from tamrl.checkpoint import SCHEMA_VERSION, load_bundle, save_bundle
from tamrl.config import load_config
from tamrl.dataset import build_arrays, fit_scalers, sample_batch, site_arrays
from tamrl.errors import CheckpointError, DataError
from tamrl.features import TARGETS, feature_set
from tamrl.loss import flux_balance, flux_loss
from tamrl.predict import Predictor, finish
from tamrl.train import batch_loss, train
from tamrl.windows import WINDOW, overlaps, sample_episode, window_starts

TINY = dict(seeds=2, hidden=16, embedding=8, epochs=2, epochs_stage2=2, max_steps_per_epoch=3,
            sites_per_batch=4, queries_per_site=4, support_windows=4)


@pytest.fixture(scope="module")
def tamrl_bundle(sites, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tamrl.pt"
    return train(load_config(model="tamrl", **TINY), sites, path, progress=False), path


def test_support_windows_never_overlap_their_queries(sites):
    fs = feature_set("modis_met")
    x_scaler, y_scaler = fit_scalers(fs, sites)
    rng = np.random.default_rng(1)
    for arrays in build_arrays(fs, sites, x_scaler, y_scaler, None):
        for _ in range(50):
            query, support = sample_episode(arrays.query_starts, arrays.support_starts, 8, 8, rng)
            assert len(query) >= 1 and len(support) >= 1
            days_q = {d for s in query for d in range(s, s + WINDOW)}
            days_s = {d for s in support for d in range(s, s + WINDOW)}
            assert not days_q & days_s
            assert not overlaps(support, query).any()


def test_window_starts_skip_windows_with_invalid_days():
    valid = np.ones(200, bool)
    valid[50] = False
    starts = window_starts(valid)
    assert list(starts) == [0, 60, 75, 90, 105, 120, 135, 150]
    assert all(not (s <= 50 < s + WINDOW) for s in starts)


def test_flux_balance_is_zero_only_when_nee_equals_reco_minus_gpp():
    gpp, reco = torch.tensor([5.0, 2.0, 0.0]), torch.tensor([3.0, 2.5, 1.0])
    balanced = torch.stack([gpp, reco, reco - gpp], dim=-1)
    assert flux_balance(balanced).item() == 0.0
    off = balanced.clone()
    off[1, 2] += 0.5
    assert flux_balance(off).item() == pytest.approx(0.25 / 3)


def test_flux_penalty_is_computed_in_physical_units():
    mean, std = torch.tensor([3.0, 2.0, -1.0]), torch.tensor([4.0, 3.0, 2.0])
    zero_weight = torch.zeros(1, 3)
    physical = torch.tensor([[6.0, 4.0, -2.0]])  # balanced in g C m-2 d-1
    scaled = (physical - mean) / std
    assert flux_loss(scaled, scaled, zero_weight, mean, std).item() == 0.0
    # Balanced in standardised units (0 = 1 - 1) is not balanced in physical ones: 5 - 7 != -1.
    z_balanced = torch.tensor([[1.0, 1.0, 0.0]])
    assert flux_loss(z_balanced, z_balanced, zero_weight, mean, std).item() == pytest.approx(0.1 * 1.0)


def test_qc_zero_days_carry_no_weight(sites):
    fs = feature_set("met")
    x_scaler, y_scaler = fit_scalers(fs, sites)
    site = sites[0]
    arrays = site_arrays(fs, site, x_scaler, y_scaler, None)
    qc = site.frame["NEE_QC"].to_numpy()
    assert (qc == 0).any()
    assert (arrays.weight[qc == 0] == 0).all()
    measured = (qc > 0) & site.frame["GPP"].notna().to_numpy()
    np.testing.assert_allclose(arrays.weight[measured, 0], qc[measured], rtol=1e-6)
    # Changing a QC-0 day's target leaves the loss unchanged.
    pred = torch.zeros(1, len(qc), 3)
    y = torch.from_numpy(np.nan_to_num(arrays.y))[None]
    w = torch.from_numpy(arrays.weight)[None]
    mean, std = torch.from_numpy(y_scaler.mean), torch.from_numpy(y_scaler.std)
    before = flux_loss(pred, y, w, mean, std)
    y[0, np.flatnonzero(qc == 0)[0]] += 100
    assert flux_loss(pred, y, w, mean, std).item() == pytest.approx(before.item())


def test_training_lowers_the_loss(sites):
    from tamrl.predict import build_network

    cfg = load_config(model="tamrl", hidden=16, embedding=8, sites_per_batch=4, queries_per_site=4,
                      support_windows=4)
    fs = feature_set(cfg.feature_set)
    x_scaler, y_scaler = fit_scalers(fs, sites)
    arrays = build_arrays(fs, sites, x_scaler, y_scaler, None)
    torch.manual_seed(0)
    net = build_network(cfg, arrays[0].x.shape[1], len(arrays[0].static), len(arrays[0].clim))
    batch = sample_batch(arrays, 4, 4, 4, np.random.default_rng(0))
    mean, std = torch.from_numpy(y_scaler.mean), torch.from_numpy(y_scaler.std)
    optimiser = torch.optim.AdamW(net.parameters(), lr=3e-3)
    net.train()
    losses = []
    for _ in range(30):
        loss = batch_loss(net, batch, True, mean, std, 0.1)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_checkpoint_is_self_describing_and_round_trips_bit_identically(tamrl_bundle, sites, tmp_path):
    _, path = tamrl_bundle
    loaded = torch.load(path, weights_only=True)
    assert loaded["schema_version"] == SCHEMA_VERSION
    assert len(loaded["members"]) == 2
    assert loaded["feature_set"] == "modis_met_context"
    assert loaded["calibration"] is None  # calibrated later, from cross-validation (bench/cv_report.py)
    assert set(loaded["training_sites"]) | set(loaded["validation_sites"]) == {s.site_id for s in sites}
    assert loaded["inference"]["mode"] in ("stateful", "windowed")
    assert "FLUXNET" in loaded["attribution"]
    first = Predictor.load(path).predict_site(sites[0])
    copy = save_bundle({k: v for k, v in loaded.items()}, tmp_path / "copy.pt")
    again = Predictor.load(copy).predict_site(sites[0])
    pd.testing.assert_frame_equal(first, again, check_exact=True)
    assert (first[["GPP", "RECO"]] >= 0).all().all()
    assert (first[["GPP_std", "RECO_std", "NEE_std"]] >= 0).all().all()
    assert first["GPP_std"].max() > 0  # two members that differ


def test_checkpoint_errors(tamrl_bundle, tmp_path):
    _, path = tamrl_bundle
    bundle = torch.load(path, weights_only=True)
    future = tmp_path / "future.pt"
    torch.save({**bundle, "schema_version": SCHEMA_VERSION + 1}, future)
    with pytest.raises(CheckpointError, match="schema version"):
        load_bundle(future)
    partial = tmp_path / "partial.pt"
    torch.save({k: v for k, v in bundle.items() if k != "scalers"}, partial)
    with pytest.raises(CheckpointError, match="missing scalers"):
        load_bundle(partial)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_bundle(junk)
    with pytest.raises(CheckpointError, match="not found"):
        load_bundle(tmp_path / "absent.pt")


def test_predict_refuses_drivers_without_the_checkpoint_features(tamrl_bundle, sites):
    _, path = tamrl_bundle
    predictor = Predictor.load(path)
    met_only = sites[0].frame[["TA", "SW_IN", "VPD"]]
    with pytest.raises(DataError, match="missing B01"):
        predictor.predict_frame(met_only, 0.0, 0.0, "ENF", "C")


def test_finish_clips_and_balances():
    members = np.array([[[[-1.0, 2.0, 0.5]]], [[[3.0, -1.0, 0.0]]]])
    mean, std = finish(members, "balance")
    np.testing.assert_allclose(mean[0, 0], [1.5, 1.0, -0.5])
    mean_head, _ = finish(members, "head")
    np.testing.assert_allclose(mean_head[0, 0], [1.5, 1.0, 0.25])
    assert std[0, 0, 0] == pytest.approx(1.5)


@pytest.mark.parametrize("model", ["tamlstm", "ctlstm", "xgboost"])
def test_every_registered_model_trains_and_predicts(model, sites, tmp_path):
    cfg = load_config(model=model, feature_set="met_context", xgb_rounds=20, val_fraction=0.2, **TINY)
    bundle = train(cfg, sites, tmp_path / f"{model}.pt", progress=False)
    out = Predictor.load(tmp_path / f"{model}.pt").predict_site(sites[1])
    assert list(out.columns[:3]) == list(TARGETS)
    assert np.isfinite(out.to_numpy()).all()
    assert bundle["validation_sites"] and not set(bundle["validation_sites"]) & set(bundle["training_sites"])
    if model == "xgboost":  # predicting uses the threads the process gives torch (a Dask worker's share), not all
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            boosters = Predictor.load(tmp_path / "xgboost.pt").ensemble.members[0].values()
            assert {json.loads(b.save_config())["learner"]["generic_param"]["nthread"] for b in boosters} == {"1"}
        finally:
            torch.set_num_threads(threads)
    else:
        assert [h["epoch"] for h in bundle["history"][0]] == list(range(len(bundle["history"][0])))
        assert all(np.isfinite(h["validation"]) for h in bundle["history"][0])
