"""jobs.synthetic: the demo's synthetic drivers are plausible, labelled synthetic, deterministic, and ERA5-shaped.

Small 2 x 2 deg boxes keep it fast: the Alps (47 N: ENF, DBF, croplands, grasslands), south-east Australia (35 S),
the Amazon (3 S: evergreen broadleaf) and Taimyr (75 N: polar night in December).
"""

from functools import cache

import numpy as np
import pytest
import xarray as xr

from jobs import grid, static
from jobs.era5 import daily_drivers
from jobs.synthetic import SOURCE, synthetic_drivers
from tamrl.errors import DataError
from tamrl.features import BANDS, CLEAR

NORTH = (10, 46, 12, 48)
SOUTH = (145, -36, 147, -34)
AMAZON = (-62, -4, -60, -2)
POLAR = (100, 74, 102, 76)
YEAR = ("2019-01-01", "2019-12-31")
ENF, EBF, DBF, CRO = 1, 2, 4, 12


@cache
def drivers(bbox: tuple, start: str = YEAR[0], end: str = YEAR[1], seed: int = 0) -> xr.Dataset:
    """The synthetic drivers of one box and period, generated once per module."""
    return synthetic_drivers(bbox, start, end, seed=seed)


def monthly(da: xr.DataArray) -> np.ndarray:
    """Mean over all cells and days of each calendar month (NaN ignored)."""
    return da.groupby("time.month").mean(...).to_numpy()


def ndvi(ds: xr.Dataset) -> xr.DataArray:
    """NDVI on clear days, NaN otherwise."""
    return ((ds.B02 - ds.B01) / (ds.B02 + ds.B01)).where(ds.CLEAR == 1)


def test_layout_is_the_grid_of_the_bbox():
    ds = drivers(NORTH)
    rows, cols = grid.bbox_slices(NORTH)
    np.testing.assert_array_equal(ds.lat, grid.lat_coords()[rows])  # descending
    np.testing.assert_array_equal(ds.lon, grid.lon_coords()[cols])
    assert dict(ds.sizes) == {"time": 365, "lat": 40, "lon": 40}
    assert str(ds.time[0].dt.date.item()) == "2019-01-01" and str(ds.time[-1].dt.date.item()) == "2019-12-31"
    assert set(ds.data_vars) == {"t2m", "d2m", "ssrd", *BANDS, CLEAR}
    for name, da in ds.data_vars.items():
        assert da.dims == ("time", "lat", "lon") and da.dtype == np.float32, name


def test_values_are_physically_plausible():
    for bbox in (NORTH, SOUTH, AMAZON):
        ds = drivers(bbox)
        met = daily_drivers(ds)
        assert -60 < float(met.TA.min()) and float(met.TA.max()) < 50, bbox
        assert 0 <= float(met.SW_IN.min()) and float(met.SW_IN.max()) < 450, bbox
        assert bool((ds.d2m < ds.t2m).all()), bbox
        assert 0 < float(met.VPD.min()) and float(met.VPD.max()) < 80, bbox
        for band in BANDS:
            assert 0 <= float(ds[band].min()) and float(ds[band].max()) <= 1, (bbox, band)
        assert set(np.unique(ds.CLEAR)) == {0, 1}, bbox
        assert 0.15 <= float(ds.CLEAR.mean()) <= 0.5, bbox
    # The wet tropics are cloudier than the subtropics of south-east Australia.
    assert float(drivers(AMAZON).CLEAR.mean()) < float(drivers(SOUTH).CLEAR.mean())


def test_polar_night_is_dark_and_never_clear():
    ds = drivers(POLAR, "2019-12-01", "2019-12-31")
    assert float(daily_drivers(ds).SW_IN.max()) < 1
    assert int(ds.CLEAR.sum()) == 0


def test_seasons_are_opposite_in_the_two_hemispheres():
    north, south = daily_drivers(drivers(NORTH)), daily_drivers(drivers(SOUTH))
    jan, jul = 0, 6
    ta_n, ta_s = monthly(north.TA), monthly(south.TA)
    sw_n, sw_s = monthly(north.SW_IN), monthly(south.SW_IN)
    assert ta_n[jul] > ta_n[jan] + 10 and sw_n[jul] > 2 * sw_n[jan]
    assert ta_s[jan] > ta_s[jul] + 5 and sw_s[jan] > 2 * sw_s[jul]
    # The warmest month comes after the solstice month: July or August in the north, January or February south.
    assert int(np.argmax(ta_n)) in (6, 7) and int(np.argmax(ta_s)) in (0, 1)


def test_weather_is_persistent_and_spatially_smooth():
    ta = daily_drivers(drivers(NORTH)).TA.to_numpy().astype(np.float64)
    day = np.arange(ta.shape[0])
    # Remove the seasonal cycle with a per-cell fit of the annual and semi-annual harmonics.
    w = 2 * np.pi * day / 365.25
    design = np.column_stack([np.ones_like(w), np.cos(w), np.sin(w), np.cos(2 * w), np.sin(2 * w)])
    cells = ta.reshape(len(day), -1)
    anomaly = cells - design @ np.linalg.lstsq(design, cells, rcond=None)[0]
    lag1 = np.mean([np.corrcoef(a[:-1], a[1:])[0, 1] for a in anomaly.T[::37]])
    assert 0.5 < lag1 < 0.9
    assert 1 < anomaly.std() < 6  # a few K
    # Neighbouring cells share their weather.
    grid_anomaly = anomaly.reshape(ta.shape)
    assert np.corrcoef(grid_anomaly[:, 10, 10], grid_anomaly[:, 10, 11])[0, 1] > 0.95


def test_vegetation_greens_up_in_summer_and_evergreens_barely_change():
    ds = drivers(NORTH)
    codes = static.igbp(NORTH).to_numpy()
    index = ndvi(ds)
    summer = index.sel(time=slice("2019-06-01", "2019-08-31")).mean("time").to_numpy()
    winter = index.sel(time=slice("2019-01-01", "2019-02-28")).mean("time").to_numpy()
    swing = summer - winter
    deciduous = np.isin(codes, [DBF, CRO])
    assert deciduous.sum() > 20 and (codes == ENF).sum() > 20
    assert np.nanmean(swing[deciduous]) > 0.2
    assert 0 < np.nanmean(swing[codes == ENF]) < 0.5 * np.nanmean(swing[deciduous])
    forest = static.igbp(AMAZON).to_numpy() == EBF
    tropical = monthly(ndvi(drivers(AMAZON)).where(forest))
    assert np.nanmax(tropical) - np.nanmin(tropical) < 0.1 and np.nanmin(tropical) > 0.7


def test_cloudy_days_are_bright_and_flat():
    ds = drivers(NORTH)
    cloudy = ds.CLEAR == 0
    for band in ("B01", "B03", "B04"):
        assert float(ds[band].where(cloudy).min()) > 0.3
        assert float(ds[band].where(~cloudy).mean()) < 0.15
    np.testing.assert_array_equal(ds.B01.where(cloudy), ds.B03.where(cloudy))


def test_everything_is_labelled_synthetic():
    ds = drivers(NORTH)
    assert ds.attrs["synthetic"] == 1 and ds.attrs["source"] == SOURCE and ds.attrs["seed"] == 0
    for name, da in ds.data_vars.items():
        assert da.attrs["synthetic"] == "true", name
        assert da.attrs["units"] and da.attrs["long_name"] and da.attrs["comment"], name
    assert ds.t2m.attrs["units"] == "K" and ds.ssrd.attrs["units"] == "J m-2"


def test_same_seed_same_values_other_seed_other_values():
    first = drivers(NORTH, "2019-06-01", "2019-06-30")
    xr.testing.assert_identical(first, synthetic_drivers(NORTH, "2019-06-01", "2019-06-30", seed=0))
    other = synthetic_drivers(NORTH, "2019-06-01", "2019-06-30", seed=1)
    for name in first.data_vars:
        assert not np.array_equal(first[name], other[name]), name


def test_a_cell_does_not_depend_on_the_bbox_it_was_generated_in():
    whole = drivers(NORTH, "2019-06-01", "2019-06-30")
    part = synthetic_drivers((11, 47, 12, 48), "2019-06-01", "2019-06-30")
    xr.testing.assert_allclose(part, whole.sel(lat=part.lat, lon=part.lon), rtol=1e-5)


def test_era5_daily_drivers_take_it_unchanged():
    ds = drivers(NORTH, "2019-06-01", "2019-06-30")
    met = daily_drivers(ds)
    np.testing.assert_array_equal(met.TA, ds.t2m - 273.15)
    np.testing.assert_array_equal(met.SW_IN, ds.ssrd / 86400)
    assert met.TA.attrs["units"] == "degC" and met.SW_IN.attrs["units"] == "W m-2" and met.VPD.attrs["units"] == "hPa"


@pytest.mark.parametrize(
    ("bbox", "start", "end", "seed"),
    [
        (NORTH, "2019-02-01", "2019-01-01", 0),  # reversed dates
        (NORTH, "not a date", "2019-01-01", 0),
        ((10, 48, 12, 46), *YEAR, 0),  # south above north
        ((10, 46, 190, 48), *YEAR, 0),  # east beyond 180
        ((10.01, 46.01, 10.02, 46.02), *YEAR, 0),  # holds no cell centre
        (NORTH, *YEAR, -1),
    ],
)
def test_bad_input_raises_data_error(bbox, start, end, seed):
    with pytest.raises(DataError):
        synthetic_drivers(bbox, start, end, seed=seed)
