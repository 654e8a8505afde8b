"""Inference shortcuts and precision of the shipped checkpoint on real sites: exact where claimed, bounded where not."""

import numpy as np
import pandas as pd
import pytest
import torch

from tamrl.checkpoint import resolve
from tamrl.errors import ConfigError
from tamrl.model import modulates
from tamrl.predict import PRECISION_TOLERANCE, Predictor, check_precision

FLUXES = ["GPP", "RECO", "NEE"]


@pytest.fixture(scope="module")
def shipped() -> Predictor:
    return Predictor.load(resolve("default"))


def test_members_whose_film_is_the_identity_skip_the_encoder_with_identical_results(sites):
    met = Predictor.load(resolve("met"))  # schema-1 ensemble: its gate kept the joint stage for 1 of 3 seeds
    modulating = met.ensemble.modulating
    assert 0 < sum(modulating) < len(modulating)
    for net, flag in zip(met.ensemble.networks, modulating, strict=True):
        assert flag == bool(net.generator.mlp[-1].weight.abs().sum() > 0)
    fast = met.predict_site(sites[0])
    met.ensemble.modulating = [True] * len(modulating)  # run every encoder and FiLM, identity or not
    try:
        full = met.predict_site(sites[0])
    finally:
        met.ensemble.modulating = modulating
    pd.testing.assert_frame_equal(fast, full, check_exact=True)


def test_a_decoder_only_model_never_modulates():
    from tamrl.model import TamLSTM

    assert not modulates(TamLSTM(4, 2, 8, 4, 0.0))


def test_bfloat16_stays_within_the_stated_tolerance_of_float32(shipped, sites):
    mixed = Predictor(shipped.bundle, precision="bfloat16")
    for site in sites[:2]:
        exact, approx = shipped.predict_site(site)[FLUXES], mixed.predict_site(site)[FLUXES]
        diff = (exact - approx).abs()
        assert diff.to_numpy().max() < PRECISION_TOLERANCE
        assert diff.to_numpy().max() > 0  # autocast really ran in bfloat16
        assert (approx[["GPP", "RECO"]] >= 0).all().all()


@pytest.mark.parametrize(
    ("precision", "model", "message"),
    [
        ("float64", "tamrl", "choose one of float32, bfloat16, float16"),
        ("float16", "tamrl", "needs a GPU"),
        ("bfloat16", "xgboost", "xgboost runs in float32"),
    ],
)
def test_unsupported_precisions_are_refused(precision, model, message):
    with pytest.raises(ConfigError, match=message):
        check_precision(precision, model, torch.device("cpu"))


def test_predict_cli_takes_a_precision(shipped, sites, tmp_path):
    from service.cli import main

    frame = sites[0].frame[list(shipped.fs.required)].iloc[:200]
    frame.index.name = "date"
    frame.to_csv(tmp_path / "drivers.csv")
    s = sites[0]
    common = ["predict", "--drivers", str(tmp_path / "drivers.csv"), "--lat", str(s.lat), "--lon", str(s.lon),
              "--igbp", s.igbp, "--koppen", s.koppen]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "f32.csv")]) == 0
    assert main([*common, "--precision", "bfloat16", "--out", str(tmp_path / "bf16.csv")]) == 0
    f32 = pd.read_csv(tmp_path / "f32.csv", index_col=0)[FLUXES].to_numpy()
    bf16 = pd.read_csv(tmp_path / "bf16.csv", index_col=0)[FLUXES].to_numpy()
    assert np.abs(f32 - bf16).max() < PRECISION_TOLERANCE
    assert not np.array_equal(f32, bf16)
