"""Gap filling on hand cases, and the feature schema on real tower data and on (time, pixel) blocks."""

import numpy as np
import pandas as pd
import pytest

from tamrl.errors import DataError
from tamrl.features import (
    BANDS,
    CLEAR,
    FEATURE_SETS,
    IGBP_CLASSES,
    KOPPEN_GROUPS,
    MAX_CLEAR_GAP,
    MET,
    check_drivers,
    dynamic_features,
    feature_set,
    static_features,
)
from tamrl.gapfill import fill_over_time

NAN = np.nan
INF = np.inf

# ---------------------------------------------------------------------------------------------- fill_over_time


def test_fill_interpolates_linearly_and_holds_the_edges():
    values = np.array([NAN, NAN, 2.0, NAN, NAN, 8.0, NAN, 5.0, NAN])
    filled, gap = fill_over_time(values, np.isfinite(values))
    np.testing.assert_allclose(filled, [2, 2, 2, 4, 6, 8, 6.5, 5, 5])
    np.testing.assert_array_equal(gap, [2, 1, 0, 1, 1, 0, 1, 0, 1])
    assert filled.dtype == np.float32 and gap.dtype == np.float32


def test_fill_uses_the_mask_not_the_values():
    # Cloudy days carry (wrong) numbers: the mask decides what is trusted, and valid days are kept exactly.
    values = np.array([1.0, 99.0, 99.0, 99.0, 0.2, 7.25], dtype=np.float32)
    valid = np.array([True, False, False, False, True, True])
    filled, gap = fill_over_time(values, valid)
    np.testing.assert_allclose(filled, [1.0, 0.8, 0.6, 0.4, 0.2, 7.25], rtol=1e-6)
    assert filled[0] == values[0] and filled[4] == values[4] and filled[5] == values[5]
    np.testing.assert_array_equal(gap, [0, 1, 2, 1, 0, 0])


def test_gap_is_the_distance_to_the_nearest_valid_day():
    valid = np.zeros(12, dtype=bool)
    valid[[3, 10]] = True
    _, gap = fill_over_time(np.arange(12.0), valid)
    np.testing.assert_array_equal(gap, [3, 2, 1, 0, 1, 2, 3, 3, 2, 1, 0, 1])


def test_single_valid_day_fills_the_whole_series():
    valid = np.zeros(5, dtype=bool)
    valid[2] = True
    filled, gap = fill_over_time(np.array([0, 0, 3.5, 0, 0]), valid)
    np.testing.assert_array_equal(filled, np.full(5, 3.5, dtype=np.float32))
    np.testing.assert_array_equal(gap, [2, 1, 0, 1, 2])


def test_all_invalid_series_is_nan_with_infinite_gap():
    filled, gap = fill_over_time(np.array([1.0, 2.0, NAN]), np.zeros(3, dtype=bool))
    assert np.isnan(filled).all()
    assert np.isposinf(gap).all()


def _random_case(rng, shape, p_valid=0.3):
    values = rng.normal(size=shape).astype(np.float32)
    valid = rng.random(shape[:2]) < p_valid
    valid[:, 0] = False  # an all-invalid series
    valid[:, 1] = False
    valid[-1, 1] = True  # only the last day valid
    valid[:, 2] = True  # all valid
    return values, valid


def test_fill_on_time_pixel_blocks_matches_per_series():
    values, valid = _random_case(np.random.default_rng(0), (40, 7))
    filled, gap = fill_over_time(values, valid)
    assert filled.shape == gap.shape == (40, 7)
    for p in range(7):
        f1, g1 = fill_over_time(values[:, p], valid[:, p])
        np.testing.assert_array_equal(filled[:, p], f1)
        np.testing.assert_array_equal(gap[:, p], g1)
    assert np.isnan(filled[:, 0]).all() and np.isposinf(gap[:, 0]).all()
    np.testing.assert_array_equal(filled[:, 1], np.full(40, values[-1, 1]))
    np.testing.assert_array_equal(filled[:, 2], values[:, 2])


def test_fill_on_time_pixel_band_blocks_matches_per_series():
    values, valid = _random_case(np.random.default_rng(1), (30, 5, 7))
    filled, gap = fill_over_time(values, valid)
    assert filled.shape == (30, 5, 7) and gap.shape == (30, 5)
    for p in range(5):
        for b in range(7):
            f1, g1 = fill_over_time(values[:, p, b], valid[:, p])
            np.testing.assert_array_equal(filled[:, p, b], f1)
            np.testing.assert_array_equal(gap[:, p], g1)
    # The (time, band) form of one pixel agrees too.
    f2, g2 = fill_over_time(values[:, 3], valid[:, 3])
    np.testing.assert_array_equal(f2, filled[:, 3])
    np.testing.assert_array_equal(g2, gap[:, 3])


def test_fill_rejects_misaligned_shapes():
    with pytest.raises(ValueError, match="do not line up"):
        fill_over_time(np.zeros((5, 3)), np.ones(4, dtype=bool))
    with pytest.raises(ValueError, match="do not line up"):
        fill_over_time(np.zeros((5, 3, 2, 2)), np.ones(5, dtype=bool))


# -------------------------------------------------------------------------------------------- dynamic_features

MODIS_MET = feature_set("modis_met")
DYNAMIC = ["TA", "SW_IN", "VPD", *BANDS, "DOY_SIN", "DOY_COS", "CLEAR_GAP"]


def _site(sites, site_id):
    return next(s for s in sites if s.site_id == site_id)


def _drivers(fs, frame):
    return {name: frame[name].to_numpy() for name in fs.required}


@pytest.fixture(scope="module")
def tower(sites):
    """AR-Vir with modis_met features, and its clear days (CLEAR and all bands finite)."""
    site = _site(sites, "AR-Vir")
    x = dynamic_features(MODIS_MET, _drivers(MODIS_MET, site.frame), site.dates)
    clear = (site.frame[CLEAR] > 0).to_numpy() & site.frame[list(BANDS)].notna().all(axis=1).to_numpy()
    return site, x, clear


def test_modis_met_names_and_shape(tower):
    site, x, _ = tower
    assert MODIS_MET.dynamic_names == DYNAMIC
    assert MODIS_MET.required == (*MET, *BANDS, CLEAR)
    assert x.shape == (len(site.frame), len(DYNAMIC)) and x.dtype == np.float32
    assert np.isfinite(x).all()
    # Each named column holds its variable: the meteorology is complete at AR-Vir, so it is passed through.
    for name in MET:
        np.testing.assert_array_equal(x[:, DYNAMIC.index(name)], site.frame[name].to_numpy())


def test_reflectance_is_kept_on_clear_days_and_interpolated_between_them(tower):
    site, x, clear = tower
    assert 100 < clear.sum() < len(clear)
    days = np.arange(len(clear))
    for band in BANDS:
        raw = site.frame[band].to_numpy()
        column = x[:, DYNAMIC.index(band)]
        np.testing.assert_array_equal(column[clear], raw[clear])
        # Cloudy days: linear in time between the clear neighbours, held beyond the first / last clear day.
        expected = np.interp(days, days[clear], raw[clear].astype(np.float64))
        np.testing.assert_allclose(column, expected, rtol=1e-5, atol=1e-6)
    # One cloudy day by hand: the first cloudy day with clear days on both sides.
    d = next(i for i in range(1, len(clear)) if not clear[i] and clear[:i].any() and clear[i:].any())
    p = np.flatnonzero(clear[:d])[-1]
    n = d + np.flatnonzero(clear[d:])[0]
    b01 = site.frame["B01"].to_numpy()
    assert x[d, DYNAMIC.index("B01")] == pytest.approx(b01[p] + (b01[n] - b01[p]) * (d - p) / (n - p), rel=1e-5)


def test_clear_gap_is_log1p_of_days_to_the_nearest_clear_day(tower):
    _, x, clear = tower
    days = np.arange(len(clear))
    distance = np.abs(days[:, None] - days[clear][None, :]).min(axis=1)
    gap = x[:, DYNAMIC.index("CLEAR_GAP")]
    np.testing.assert_allclose(gap, np.log1p(np.minimum(distance, MAX_CLEAR_GAP)), rtol=1e-6)
    assert (gap[clear] == 0).all() and (gap[~clear] >= np.log1p(1) - 1e-7).all()


def test_day_of_year_columns(tower):
    site, x, _ = tower
    angle = 2 * np.pi * (site.dates.day_of_year.to_numpy() - 1) / 365.25
    np.testing.assert_allclose(x[:, DYNAMIC.index("DOY_SIN")], np.sin(angle), atol=1e-6)
    np.testing.assert_allclose(x[:, DYNAMIC.index("DOY_COS")], np.cos(angle), atol=1e-6)
    jan1 = site.dates.get_loc(pd.Timestamp("2010-01-01"))
    assert x[jan1, DYNAMIC.index("DOY_SIN")] == pytest.approx(0.0) and x[jan1, DYNAMIC.index("DOY_COS")] == 1.0


def test_missing_meteorology_is_interpolated():
    dates = pd.date_range("2010-01-01", periods=6)
    ta = np.array([NAN, 1.0, NAN, NAN, 4.0, NAN], dtype=np.float32)
    drivers = {"TA": ta, "SW_IN": np.arange(6.0), "VPD": np.ones(6)}
    x = dynamic_features(feature_set("met"), drivers, dates)
    assert x.shape == (6, 5) and feature_set("met").dynamic_names == ["TA", "SW_IN", "VPD", "DOY_SIN", "DOY_COS"]
    np.testing.assert_allclose(x[:, 0], [1, 1, 2, 3, 4, 4])
    np.testing.assert_array_equal(x[:, 1], np.arange(6.0))


def test_pixel_blocks_give_the_same_numbers_as_sites(sites):
    """The gridded engine's contract: a (time, pixel) block equals per-location calls on the same dates."""
    chosen = [_site(sites, s) for s in ("AR-Vir", "AU-Emr", "DE-RuS", "AU-Fog")]
    n = min(len(s.frame) for s in chosen)
    dates = chosen[0].dates[:n]
    columns = [{k: v[:n] for k, v in _drivers(MODIS_MET, s.frame).items()} for s in chosen]
    cloudy = dict(columns[0])
    cloudy[CLEAR] = np.zeros(n, dtype=np.float32)  # a pixel never seen clear
    columns.append(cloudy)
    block = {name: np.stack([c[name] for c in columns], axis=1) for name in MODIS_MET.required}
    x = dynamic_features(MODIS_MET, block, dates)
    assert x.shape == (n, len(columns), len(DYNAMIC))
    for p, drivers in enumerate(columns):
        np.testing.assert_array_equal(x[:, p], dynamic_features(MODIS_MET, drivers, dates), err_msg=f"pixel {p}")
    never = x[:, -1]
    assert np.isnan(never[:, [DYNAMIC.index(b) for b in BANDS]]).all()
    np.testing.assert_allclose(never[:, DYNAMIC.index("CLEAR_GAP")], np.log1p(MAX_CLEAR_GAP))
    np.testing.assert_array_equal(never[:, : len(MET)], x[:, 0, : len(MET)])


def test_pixel_blocks_met_set(sites):
    fs = feature_set("met")
    chosen = [_site(sites, s) for s in ("AU-Emr", "CA-TPD")]
    dates = chosen[0].dates
    block = {name: np.stack([s.frame[name].to_numpy() for s in chosen], axis=1) for name in fs.required}
    x = dynamic_features(fs, block, dates)
    for p, s in enumerate(chosen):
        np.testing.assert_array_equal(x[:, p], dynamic_features(fs, _drivers(fs, s.frame), dates))


def test_dynamic_features_checks_drivers_and_dates(tower):
    site, _, _ = tower
    drivers = _drivers(MODIS_MET, site.frame)
    with pytest.raises(DataError, match=f"drivers have {len(site.dates)} days but 10 dates"):
        dynamic_features(MODIS_MET, drivers, site.dates[:10])
    del drivers["B05"], drivers[CLEAR]
    with pytest.raises(DataError, match="missing B05, CLEAR"):
        dynamic_features(MODIS_MET, drivers, site.dates)


# --------------------------------------------------------------------------------------------- static_features


def test_static_features_one_hots_and_latitude():
    fs = feature_set("modis_met")
    s = static_features(fs, -45.0, 120.0, "CRO", "D")
    assert s.dtype == np.float32 and len(s) == len(fs.static_names) == 1 + 16 + 5
    assert s[0] == pytest.approx(-0.5)
    igbp, koppen = s[1:17], s[17:]
    np.testing.assert_array_equal(igbp, np.eye(16)[IGBP_CLASSES.index("CRO")])
    np.testing.assert_array_equal(koppen, [0, 0, 0, 1, 0])
    assert fs.static_names[1 + IGBP_CLASSES.index("CRO")] == "IGBP_CRO" and fs.static_names[-2] == "KOPPEN_D"


def test_static_features_with_longitude():
    fs = feature_set("carbonbench")
    s = static_features(fs, 90.0, 90.0, "ENF", "E")
    assert fs.static_names[:3] == ["LAT", "LON_SIN", "LON_COS"] and len(s) == len(fs.static_names) == 3 + 16 + 5
    np.testing.assert_allclose(s[:3], [1.0, 1.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(static_features(fs, 0.0, -180.0, "ENF", "A")[:3], [0.0, 0.0, -1.0], atol=1e-7)
    assert s[3] == 1 and s[3 + 16 + 4] == 1 and s.sum() == pytest.approx(1 + 1 + 0 + 1 + 1)


def test_static_features_of_the_test_sites(sites):
    for site in sites:
        s = static_features(MODIS_MET, site.lat, site.lon, site.igbp, site.koppen)
        assert s[0] == pytest.approx(site.lat / 90)
        assert MODIS_MET.static_names[int(np.argmax(s[1:17])) + 1] == f"IGBP_{site.igbp}"
        assert MODIS_MET.static_names[int(np.argmax(s[17:])) + 17] == f"KOPPEN_{site.koppen}"


def test_unknown_classes_list_the_valid_values():
    fs = feature_set("met")
    with pytest.raises(DataError, match="unknown IGBP class 'XYZ'") as err:
        static_features(fs, 10.0, 10.0, "XYZ", "C")
    assert all(c in str(err.value) for c in IGBP_CLASSES)
    with pytest.raises(DataError, match="unknown Koppen group 'F'") as err:
        static_features(fs, 10.0, 10.0, "ENF", "F")
    assert "A, B, C, D, E" in str(err.value) and len(KOPPEN_GROUPS) == 5


def test_location_outside_the_globe():
    with pytest.raises(DataError, match="outside the globe"):
        static_features(feature_set("met"), 95.0, 10.0, "ENF", "C")
    with pytest.raises(DataError, match="outside the globe"):
        static_features(feature_set("met"), NAN, 10.0, "ENF", "C")


# ---------------------------------------------------------------------------------------- check_drivers & sets


def test_check_drivers_names_every_missing_variable():
    fs = feature_set("carbonbench")
    available = [v for v in fs.required if v not in ("sur_refl_b02", "SolarAzimuth", "total_evaporation_sum")]
    with pytest.raises(DataError) as err:
        check_drivers(fs, available, "the grid")
    message = str(err.value)
    assert "the grid cannot supply feature set 'carbonbench'" in message
    assert "missing sur_refl_b02, SolarAzimuth, total_evaporation_sum" in message
    check_drivers(fs, list(fs.required), "the grid")  # all present: no error


def test_check_drivers_needs_the_clear_flag_for_reflectance():
    with pytest.raises(DataError, match="missing CLEAR"):
        check_drivers(MODIS_MET, [*MET, *BANDS], "a tower")
    check_drivers(feature_set("met"), list(MET), "a tower")


def test_feature_set_lookup():
    assert set(FEATURE_SETS) == {"met", "modis_met", "met_context", "modis_met_context", "carbonbench"}
    with pytest.raises(DataError, match="unknown feature set 'modis'; choose one of met, modis_met, met_context"):
        feature_set("modis")


def test_carbonbench_features_on_the_fixture():
    from pathlib import Path

    from tamrl.data import load_carbonbench

    fs = feature_set("carbonbench")
    for site in load_carbonbench(Path(__file__).parent / "data" / "carbonbench"):
        x = dynamic_features(fs, _drivers(fs, site.frame), site.dates)
        assert x.shape == (len(site.frame), len(fs.dynamic_names)) == (547, 18 + 2)
        assert np.isfinite(x).all()
        t2m = fs.dynamic_names.index("temperature_2m")
        np.testing.assert_array_equal(x[:, t2m], site.frame["temperature_2m"].to_numpy())
