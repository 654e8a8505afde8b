"""jobs.modis: MOD09GA QA decoding checked against the real tower `clear` flag, and MOD09CMG to canonical drivers."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import MODIS

from jobs import grid
from jobs.modis import clear_from_state, mod09cmg_to_drivers
from tamrl.errors import DataError
from tamrl.features import BANDS, CLEAR

TOWER = MODIS / "fluxnet2015_mod09ga_daily_2000_2014.csv.gz"


def test_decoder_reproduces_the_real_tower_clear_flag():
    """Real MOD09GA QA of the five test sites (8,023 site-days): decoder + b01/b02 present == the file's `clear`."""
    rows = pd.read_csv(TOWER, usecols=["state_1km", "qc_500m", "refl_b01", "refl_b02", "clear"])
    decoded = clear_from_state(rows["state_1km"].to_numpy(), rows["qc_500m"].to_numpy())
    decoded &= rows["refl_b01"].notna().to_numpy() & rows["refl_b02"].notna().to_numpy()
    expected = rows["clear"].to_numpy().astype(bool)
    mismatches = int((decoded != expected).sum())
    assert mismatches == 0, f"{mismatches} of {len(rows)} rows disagree with the tower clear flag"
    assert expected.sum() == 2289 and len(rows) == 8023  # both classes are well represented
    assert not decoded[rows["state_1km"].isna().to_numpy()].any()  # rows without QA are never clear


@pytest.mark.parametrize(
    ("state", "qc", "clear"),
    [
        (0b0000_0000_0000_1000, 0, True),  # land (bits 3-5 = 001), everything else zero: clear
        (0b0000_0000_0100_1000, 0, True),  # low aerosol is fine
        (0b0000_0000_1000_1000, 0, True),  # average aerosol is fine
        (0b0000_0000_1100_1000, 0, False),  # high aerosol
        (0b0000_0000_0000_1001, 0, False),  # cloudy
        (0b0000_0000_0000_1010, 0, False),  # mixed
        (0b0000_0000_0000_1011, 0, False),  # not set, assumed clear: not clear
        (0b0000_0000_0000_1100, 0, False),  # cloud shadow
        (0b0000_0001_0000_1000, 0, False),  # small cirrus
        (0b0000_0100_0000_1000, 0, False),  # internal cloud
        (0b0000_1000_0000_1000, 0, True),  # internal fire (bit 11) is not part of the definition
        (0b0001_0000_0000_1000, 0, False),  # MOD35 snow/ice
        (0b0010_0000_0000_1000, 0, False),  # adjacent to cloud
        (0b0100_0000_0000_1000, 0, True),  # salt pan (bit 14) is not part of the definition
        (0b1000_0000_0000_1000, 0, False),  # internal snow mask
        (0b0000_0000_0000_1000, 1, False),  # MODLAND QA less than ideal
        (0b0000_0000_0000_1000, 0b100, True),  # other qc_500m bits do not matter
    ],
)
def test_each_bit_field(state, qc, clear):
    assert clear_from_state(np.array([state]), np.array([qc]))[0] == clear
    assert clear_from_state(np.array([state], dtype=np.uint16))[0] == (clear or qc == 1)


def test_missing_qa_is_not_clear_and_bad_input_is_named():
    assert not clear_from_state(np.array([np.nan, -1.0, 8.5])).any()
    assert clear_from_state(np.array([8.0]), np.array([0.0]))[0]
    with pytest.raises(DataError, match="qc_500m has shape"):
        clear_from_state(np.zeros(3), np.zeros(2))
    with pytest.raises(DataError, match="state_1km must hold integer"):
        clear_from_state(np.array(["a"]))


# Format fixture, not data: a 3 x 4-cell MOD09CMG window built by hand with the documented layout (int16
# reflectance, scale 1e-4, fill -28672; uint16 State QA; uint32 QA), to test the conversion, not MODIS itself.
LAT = np.array([40.025, 40.075, 40.125])  # ascending on purpose: the output must run north to south
LON = np.array([359.925, 359.975, 0.025, 0.075])  # 0-360 across the prime meridian: must become -0.075 .. 0.075
CLEAR_STATE, CLOUDY_STATE = 0b1000, 0b1001


def _cmg(sep: str = " ", time: bool = True) -> xr.Dataset:
    days = pd.to_datetime(["2019-07-01 10:30", "2019-07-02 10:30"])
    shape = (len(days), len(LAT), len(LON))
    raw = np.arange(np.prod(shape) * 7, dtype=np.int16).reshape(7, *shape) * 10 + 100
    raw[0, 0, 0, 0] = -28672  # B01 fill at (day 0, lat 40.025, lon 359.925)
    raw[1, 1, 2, 3] = -28672  # B02 fill at (day 1, lat 40.125, lon 0.075)
    state = np.full(shape, CLEAR_STATE, dtype=np.uint16)
    state[0, 1, 1] = CLOUDY_STATE
    qa = np.zeros(shape, dtype=np.uint32)
    qa[1, 0, 2] = 1  # less than ideal
    name = f"Coarse{sep}Resolution{sep}"
    variables = {f"{name}Surface{sep}Reflectance{sep}Band{sep}{i + 1}": raw[i] for i in range(7)}
    variables[f"{name}State{sep}QA"] = state
    variables[f"{name}QA"] = qa
    dims = ("time", "lat", "lon")
    ds = xr.Dataset({k: (dims, v) for k, v in variables.items()}, coords={"time": days, "lat": LAT, "lon": LON})
    return ds if time else ds.isel(time=0, drop=True)


def test_mod09cmg_scale_fill_coordinates_and_clear():
    src = _cmg()
    out = mod09cmg_to_drivers(src)
    assert set(out.data_vars) == {*BANDS, CLEAR}
    assert out.B01.dims == ("time", "lat", "lon") and out.B01.dtype == np.float32
    rows, cols = grid.bbox_slices((-0.1, 40.0, 0.1, 40.15))
    np.testing.assert_array_equal(out.lat.values, grid.lat_coords()[rows])  # exact grid values, north to south
    np.testing.assert_array_equal(out.lon.values, grid.lon_coords()[cols])
    assert list(out.time.dt.strftime("%Y-%m-%d").values) == ["2019-07-01", "2019-07-02"]
    # a value is the raw integer times 1e-4, at the same place after reordering
    raw = src["Coarse Resolution Surface Reflectance Band 4"].sel(lat=40.125, lon=0.025).values
    np.testing.assert_allclose(out.B04.sel(lat=40.125, lon=0.025).values, raw * 1e-4, rtol=1e-6)
    assert np.isnan(out.B01.sel(lat=40.025, lon=-0.075).values[0])
    assert np.isnan(out.B02.sel(lat=40.125, lon=0.075).values[1])
    assert int(np.isnan(out.to_array()).sum()) == 2
    assert out.B01.attrs["units"] == "1 (reflectance)" and "MOD09CMG" in out.attrs["source"]
    # CLEAR: 0 where cloudy, MODLAND QA not ideal, or B01/B02 missing; 1 elsewhere
    not_clear = [(0, 40.075, 0.025 - 0.05), (1, 40.025, 0.025), (0, 40.025, -0.075), (1, 40.125, 0.075)]
    expected = np.ones(out.CLEAR.shape, dtype=np.float32)
    for day, lat, lon in not_clear:
        expected[day, list(out.lat.values).index(lat), int(np.argmin(np.abs(out.lon.values - lon)))] = 0
    np.testing.assert_array_equal(out.CLEAR.values, expected)


def test_mod09cmg_underscore_names_no_time_and_decoded_floats():
    src = _cmg("_", time=False)
    for i in range(1, 8):  # as xarray decodes a file with scale_factor/_FillValue: floats 0-1, NaN for fill
        name = f"Coarse_Resolution_Surface_Reflectance_Band_{i}"
        src[name] = src[name].where(src[name] != -28672) * 1e-4
    with pytest.raises(DataError, match="no time dimension"):
        mod09cmg_to_drivers(src)
    out = mod09cmg_to_drivers(src, date="2019-07-01")
    expected = mod09cmg_to_drivers(_cmg()).isel(time=[0])
    xr.testing.assert_allclose(out, expected)


def test_mod09cmg_errors_name_what_is_missing():
    src = _cmg().drop_vars(["Coarse Resolution State QA", "Coarse Resolution Surface Reflectance Band 5"])
    with pytest.raises(DataError, match=r"Band 5.*State QA"):
        mod09cmg_to_drivers(src)
    with pytest.raises(DataError, match=r"not a 0\.05 deg cell centre"):
        mod09cmg_to_drivers(_cmg().assign_coords(lat=LAT + 0.01))
    with pytest.raises(DataError, match="full 3600 x 7200"):
        mod09cmg_to_drivers(_cmg().drop_vars(["lat", "lon"]))


def test_mod09cmg_output_passes_through_the_engine_drivers(tmp_path):
    from jobs.drivers import GridDrivers

    out = mod09cmg_to_drivers(_cmg())
    path = tmp_path / "mod09cmg.nc"
    out.to_netcdf(path)
    drivers = GridDrivers(str(path))
    assert set(BANDS) | {CLEAR} <= set(drivers.variables)
    rows, cols = grid.bbox_slices((-0.1, 40.0, 0.1, 40.15))
    read = drivers.read(rows, cols, pd.DatetimeIndex(out.indexes["time"]), [*BANDS, CLEAR])
    np.testing.assert_array_equal(read["B03"], out.B03.values)
    np.testing.assert_array_equal(read[CLEAR], out.CLEAR.values)
