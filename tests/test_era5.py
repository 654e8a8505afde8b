"""jobs.era5 on real ERA5 / ERA5-Land files as the CDS delivers them (tests/data/era5, see its README).

Expected values are computed here with numpy from the raw arrays, independently of the code under test.
"""

from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from jobs.era5 import daily_drivers, open_drivers
from tamrl.errors import ConfigError, DataError

ERA5 = Path(__file__).parent / "data" / "era5"
POINT = ERA5 / "era5_ssrd_t2m_d2m_hourly_25.19N_80.64W_2019-01_2019-02.nc"  # ERA5: valid_time, ssrd per hour
UK = ERA5 / "era5_t2m_uk_2019-03_hourly_0p25deg_52.75-51N_1W-0.75E.nc"  # ERA5 grid: time, latitude descending
LAND = ERA5 / "era5_t2m_tp_ssrd_hourly_41.36N_106.25W_1998-12_1999-02.nc"  # ERA5-Land: ssrd since 00 UTC
FLUX = ERA5 / "era5_single_point_55.69N_12.49E_2020_hourly.nc"  # netCDF3, mean fluxes in W m-2


def raw(path: Path) -> xr.Dataset:
    """The file exactly as stored (original names and layout), in memory."""
    with xr.open_dataset(path) as ds:
        return ds.load()


def series(ds: xr.Dataset, name: str) -> np.ndarray:
    """A one-point variable as a float64 time series."""
    return ds[name].values.reshape(-1).astype(np.float64)


def magnus(t_c: np.ndarray) -> np.ndarray:
    """Saturation vapour pressure [hPa] at t_c [degC], written out here independently of jobs.era5."""
    return 6.1094 * np.exp(17.625 * t_c / (t_c + 243.04))


def by_day(values: np.ndarray) -> np.ndarray:
    """Hourly values starting at 00 UTC as (day, hour)."""
    return values.reshape(-1, 24, *values.shape[1:])


def test_era5_point_matches_hand_computation():
    src = raw(POINT)
    t2m, d2m, ssrd = (series(src, v) for v in ("t2m", "d2m", "ssrd"))
    assert pd.Timestamp(src.valid_time.values[0]) == pd.Timestamp("2019-01-01 00:00") and len(t2m) == 59 * 24

    out = daily_drivers(open_drivers(str(POINT))).compute()

    assert dict(out.sizes) == {"time": 58, "lat": 1, "lon": 1}  # to 2019-02-27: the partial last day is dropped
    assert out.lat.item() == pytest.approx(25.19) and out.lon.item() == pytest.approx(-80.64)
    np.testing.assert_allclose(out.TA.values.ravel(), by_day(t2m)[:58].mean(axis=1) - 273.15, atol=1e-4)
    vpd = by_day(magnus(t2m - 273.15) - magnus(d2m - 273.15))[:58].mean(axis=1)
    np.testing.assert_allclose(out.VPD.values.ravel(), vpd, rtol=1e-5)
    # Each ssrd value covers the hour ending at its stamp: day D is the sum of 01 UTC of D .. 00 UTC of D+1.
    sw = by_day(ssrd[1 : 1 + 58 * 24]).sum(axis=1) / 86400
    np.testing.assert_allclose(out.SW_IN.values.ravel(), sw, rtol=1e-5)
    assert out.attrs["trimmed"] == (
        "dropped 2019-02-28, the partial last day of the hourly record 2019-01-01 00:00..2019-02-28 23:00 UTC: "
        "SW_IN needs 2019-02-28 01:00..2019-03-01 00:00 UTC"
    )
    assert out.SW_IN.attrs["accumulation"] == "hourly" and out.SW_IN.attrs["accumulation_decision"].startswith("auto")
    assert {v: out[v].attrs["units"] for v in out} == {"TA": "degC", "VPD": "hPa", "SW_IN": "W m-2"}
    assert all(out[v].attrs["source"] for v in out)


def test_partial_days_at_the_ends_are_dropped_and_days_missing_hours_inside_are_nan():
    ds = open_drivers(str(POINT))
    full = daily_drivers(ds).compute()
    late = daily_drivers(ds.isel(time=slice(6, None))).compute()  # starts 2019-01-01 06 UTC
    gap = daily_drivers(ds.drop_sel(time=pd.Timestamp("2019-01-10 12:00"))).compute()

    assert late.indexes["time"][0] == pd.Timestamp("2019-01-02")
    assert late.attrs["trimmed"] == (
        "dropped 2019-01-01, the partial first day of the hourly record 2019-01-01 06:00..2019-02-28 23:00 UTC: "
        "TA needs 2019-01-01 00:00..2019-01-01 23:00 UTC, VPD needs 2019-01-01 00:00..2019-01-01 23:00 UTC, "
        "SW_IN needs 2019-01-01 01:00..2019-01-02 00:00 UTC; dropped 2019-02-28, the partial last day of the hourly "
        "record 2019-01-01 06:00..2019-02-28 23:00 UTC: SW_IN needs 2019-02-28 01:00..2019-03-01 00:00 UTC"
    )
    assert gap.indexes["time"].equals(full.indexes["time"]) and "trimmed" in gap.attrs  # only the last day
    for name in ("TA", "VPD", "SW_IN"):
        xr.testing.assert_allclose(late[name], full[name].isel(time=slice(1, None)))
        assert np.isnan(gap[name].sel(time="2019-01-10")).all()
        assert np.isfinite(gap[name].sel(time="2019-01-11")).all()
    with pytest.raises(DataError, match=r"\(2019-01-01 06:00..2019-01-02 05:00 UTC\) hold no whole UTC day"):
        daily_drivers(ds.isel(time=slice(6, 30)), accumulation="hourly")


def test_longitudes_0_360_and_cds_auxiliary_coords_are_normalised(tmp_path):
    src = raw(POINT)
    shifted = src.assign_coords(
        longitude=src.longitude % 360, number=0, expver=("valid_time", np.full(src.sizes["valid_time"], "0001"))
    )
    assert shifted.longitude.item() == pytest.approx(279.36)
    shifted.to_netcdf(tmp_path / "point_0_360.nc", engine="h5netcdf")

    ds = open_drivers(str(tmp_path / "point_0_360.nc"))

    assert ds.lon.item() == pytest.approx(-80.64)
    assert set(ds.coords) == {"time", "lat", "lon"}
    xr.testing.assert_equal(ds.t2m, open_drivers(str(POINT)).t2m)


def test_uk_grid_matches_hand_computation():
    src = raw(UK)
    ds = open_drivers(str(UK))
    out = daily_drivers(ds).compute()

    assert list(out.data_vars) == ["TA"] and out.TA.dims == ("time", "lat", "lon")
    assert np.all(np.diff(out.lat.values) < 0) and np.all(np.diff(out.lon.values) > 0)
    assert out.lon.min() >= -10 and out.lon.max() <= 2
    np.testing.assert_allclose(
        out.TA.values, by_day(src.t2m.values.astype(np.float64)).mean(axis=1) - 273.15, atol=1e-4
    )
    pixel = src.t2m.sel(latitude=52.0, longitude=0.0, time=slice("2019-03-15", "2019-03-15T23")).values
    assert out.TA.sel(lat=52.0, lon=0.0, time="2019-03-15").item() == pytest.approx(pixel.mean() - 273.15, abs=1e-4)


def test_grid_stored_south_up_and_0_360_comes_out_the_same(tmp_path):
    src = raw(UK)
    flipped = src.assign_coords(longitude=src.longitude % 360).sortby(["latitude", "longitude"])
    assert flipped.latitude[0] < flipped.latitude[-1] and flipped.longitude.values[0] == 0.0
    flipped.to_netcdf(tmp_path / "uk_flipped.nc", engine="h5netcdf")

    xr.testing.assert_equal(open_drivers(str(tmp_path / "uk_flipped.nc")).t2m, open_drivers(str(UK)).t2m)


def since_00(ds: xr.Dataset) -> xr.Dataset:
    """ds with ssrd re-accumulated as ERA5-Land delivers it: since 00 UTC, the 00 UTC value ending the day before."""
    times = ds.indexes["time"]
    hourly = pd.Series(ds.ssrd.values.reshape(-1).astype(np.float64), index=times)
    total = hourly.groupby((times - pd.Timedelta(hours=1)).floor("D")).cumsum()
    return ds.assign(ssrd=ds.ssrd.copy(data=total.to_numpy(np.float32).reshape(ds.ssrd.shape)))


def test_since_00_accumulation_gives_the_hourly_result_and_both_are_detected():
    hourly = open_drivers(str(POINT)).load()
    accumulated = since_00(hourly)
    assert accumulated.ssrd.sel(time="2019-01-02T00").item() == pytest.approx(
        hourly.ssrd.sel(time=slice("2019-01-01T01", "2019-01-02T00")).sum().item(), rel=1e-6
    )

    reference = daily_drivers(hourly, accumulation="hourly").SW_IN
    for convention in ("since_00", "auto"):
        result = daily_drivers(accumulated, accumulation=convention).SW_IN
        xr.testing.assert_allclose(result, reference, rtol=1e-5)
        assert result.attrs["accumulation"] == "since_00"
    assert daily_drivers(hourly, accumulation="auto").SW_IN.attrs["accumulation"] == "hourly"


def test_real_era5_land_is_detected_as_since_00():
    src = raw(LAND)
    ssrd, t2m = series(src, "ssrd"), series(src, "t2m")

    out = daily_drivers(open_drivers(str(LAND))).compute()

    assert sorted(out.data_vars) == ["SW_IN", "TA"]  # no d2m, so no VPD
    assert out.SW_IN.attrs["accumulation"] == "since_00"
    # Day D is the 00 UTC value of D+1; the last day's is beyond the file, so that day is dropped.
    np.testing.assert_allclose(out.SW_IN.values.ravel(), by_day(ssrd)[1:, 0] / 86400, rtol=1e-6)
    assert out.attrs["trimmed"].endswith("1999-02-28 23:00 UTC: SW_IN needs 1999-03-01 00:00 UTC")
    np.testing.assert_allclose(out.TA.values.ravel(), by_day(t2m)[:-1].mean(axis=1) - 273.15, atol=1e-4)


def test_mean_flux_netcdf3_point():
    src = raw(FLUX)
    flux, t2m = series(src, "msdwswrf"), series(src, "t2m")

    out = daily_drivers(open_drivers(str(FLUX))).compute()

    assert out.sizes["time"] == 365 and sorted(out.data_vars) == ["SW_IN", "TA"]  # 2020-12-31 lacks 00 UTC of 01-01
    assert out.attrs["trimmed"].startswith("dropped 2020-12-31, the partial last day")
    np.testing.assert_allclose(out.SW_IN.values.ravel(), by_day(flux[1 : 1 + 365 * 24]).mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(out.TA.values.ravel(), by_day(t2m)[:-1].mean(axis=1) - 273.15, atol=1e-6)


def test_daily_input_is_only_converted():
    src = raw(POINT)
    t2m, d2m, ssrd = (by_day(series(src, v)) for v in ("t2m", "d2m", "ssrd"))
    days = pd.date_range("2019-01-01", periods=len(t2m), freq="D", name="time")
    daily = xr.Dataset(
        {
            "t2m": (("time", "lat", "lon"), t2m.mean(axis=1)[:, None, None], {"units": "K"}),
            "d2m": (("time", "lat", "lon"), d2m.mean(axis=1)[:, None, None], {"units": "K"}),
            "ssrd": (("time", "lat", "lon"), ssrd.sum(axis=1)[:, None, None], {"units": "J m**-2"}),
        },
        coords={"time": days, "lat": [25.19], "lon": [-80.64]},
    )

    out = daily_drivers(daily)

    assert out.indexes["time"].equals(days)
    np.testing.assert_allclose(out.TA.values, daily.t2m.values - 273.15)
    np.testing.assert_allclose(out.SW_IN.values, daily.ssrd.values / 86400)
    np.testing.assert_allclose(out.VPD.values, magnus(daily.t2m.values - 273.15) - magnus(daily.d2m.values - 273.15))


def test_zarr_and_fsspec_urls_open_like_netcdf(tmp_path):
    expected = open_drivers(str(POINT))
    raw(POINT).to_zarr(tmp_path / "point.zarr", zarr_format=2, consolidated=True)
    (tmp_path / "point.zarr").rename(tmp_path / "store")  # a directory without the .zarr suffix
    memory = fsspec.filesystem("memory")
    memory.pipe("/era5/point.nc", POINT.read_bytes())
    try:
        for url in (
            str(tmp_path / "store"),
            f"file://{tmp_path / 'store'}",
            f"file://{POINT}",
            "memory://era5/point.nc",
        ):
            xr.testing.assert_equal(open_drivers(url), expected)
    finally:
        memory.rm("/era5", recursive=True)


def test_files_split_by_variable_and_time_are_combined(tmp_path):
    src = raw(POINT)
    paths = []
    for kind, names in (("accum", ["ssrd"]), ("instant", ["t2m", "d2m"])):
        for month in ("2019-01", "2019-02"):
            paths.append(tmp_path / f"{kind}_{month}.nc")
            src[names].sel(valid_time=month).to_netcdf(paths[-1], engine="h5netcdf")

    xr.testing.assert_equal(open_drivers([str(p) for p in paths]), open_drivers(str(POINT))[["ssrd", "t2m", "d2m"]])
    with pytest.raises(DataError, match="cannot combine"):
        open_drivers([str(POINT), str(UK)])


def test_expver_dimension_takes_the_first_value_present(tmp_path):
    src = raw(POINT).rename(valid_time="time")
    early = src.time < np.datetime64("2019-02-01")
    layered = xr.concat([src.where(early), src.where(~early)], dim=pd.Index([1, 5], name="expver"))
    layered.to_netcdf(tmp_path / "expver.nc", engine="h5netcdf")

    ds = open_drivers(str(tmp_path / "expver.nc"))

    assert "expver" not in ds.dims and "expver" not in ds.coords
    xr.testing.assert_equal(ds.t2m, open_drivers(str(POINT)).t2m)


def test_missing_inputs_are_named():
    with pytest.raises(DataError, match=r"missing t2m .* ssrd"):
        daily_drivers(open_drivers(str(LAND))[["tp"]])


def test_unopenable_and_unusable_files_raise_data_errors(tmp_path):
    (tmp_path / "notes.nc").write_text("not a NetCDF file")
    (tmp_path / "empty.zarr").mkdir()
    for path in (tmp_path / "missing.nc", tmp_path / "notes.nc", tmp_path / "empty.zarr"):
        with pytest.raises(DataError, match="cannot open driver file"):
            open_drivers(str(path))

    raw(POINT).squeeze().drop_vars(["latitude", "longitude"]).to_netcdf(tmp_path / "no_grid.nc", engine="h5netcdf")
    with pytest.raises(DataError, match=r"lacks the dimension.*lat, lon"):
        open_drivers(str(tmp_path / "no_grid.nc"))

    members = xr.concat([raw(POINT)] * 2, dim=pd.Index([0, 1], name="number"))
    members.to_netcdf(tmp_path / "members.nc", engine="h5netcdf")
    with pytest.raises(DataError, match=r"number \(2 values\)"):
        open_drivers(str(tmp_path / "members.nc"))


def test_bad_time_steps_units_and_options_are_refused():
    ds = open_drivers(str(POINT))
    with pytest.raises(DataError, match="03:00:00"):
        daily_drivers(ds.isel(time=slice(None, None, 3)))
    with pytest.raises(DataError, match="t2m has units 'degC'"):
        daily_drivers(ds.assign(t2m=ds.t2m.assign_attrs(units="degC")))
    with pytest.raises(DataError, match="accumulation='hourly'"):
        daily_drivers(ds.assign(ssrd=ds.ssrd * 0), accumulation="auto")
    with pytest.raises(ConfigError, match="since_00"):
        daily_drivers(ds, accumulation="daily")
