"""jobs.modis: MOD09GA QA decoding checked against the real tower `clear` flag; MOD09CMG and MOD09GA to drivers."""

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
from conftest import MODIS
from rasterio.transform import from_origin

from jobs import grid
from jobs.modis import clear_from_state, mod09cmg_to_drivers, mod09ga_to_drivers
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


# Format fixtures, not data: windows of MOD09GA tiles written as the documented GeoTIFF per layer (raw int16
# reflectance, uint16 state_1km at 1 km, uint32 QC_500m) in the MODIS sinusoidal CRS at the real tile geometry.
# Tile h18v04 spans y 5559752.6 .. 4447802.1 m (lat 50 .. 40 N, as lat = y / R) and x 0 .. 1111950.5 m (lon 0 E
# eastwards, as lon = x / (R cos lat)); its first 240 rows are exactly lat 50 .. 49 N, 12 rows to a 0.05 deg cell.
SINUSOIDAL = "+proj=sinu +lon_0=0 +x_0=0 +y_0=0 +R=6371007.181 +units=m +no_defs"
R_SPHERE = 6371007.181
TILE_M = 1111950.5197665554
X_ORIGIN, Y_ORIGIN = -20015109.354, 10007554.677
PIXEL_M = TILE_M / 2400  # 463.31271653 m
N = 240  # window rows and columns at 500 m
GA_BANDS = [f"sur_refl_b{i:02d}" for i in range(1, 8)]
CLOUDY_ADJACENT = 0b0010_0000_0000_1000  # land, adjacent to cloud


def _geotiff(path, values, x0, y0, pixel):
    profile = {"driver": "GTiff", "height": values.shape[0], "width": values.shape[1], "count": 1}
    transform = from_origin(x0, y0, pixel, pixel)
    with rasterio.open(path, "w", **profile, dtype=values.dtype, crs=SINUSOIDAL, transform=transform) as dst:
        dst.write(values, 1)


def _tile(folder, h, v, refl, state=None, qc=None, col0=0, row0=0, day="A2019182"):
    """Write a window of tile hHHvVV from 500 m pixel (``row0``, ``col0``): ``refl`` (7, rows, cols) raw, ``state``
    at 1 km (default clear), ``qc`` (default ideal); returns the tile's ``{layer}`` pattern."""
    refl = np.asarray(refl, dtype=np.int16)
    rows, cols = refl.shape[1:]
    state = np.full((rows // 2, cols // 2), CLEAR_STATE, dtype=np.uint16) if state is None else state
    qc = np.zeros((rows, cols), dtype=np.uint32) if qc is None else qc
    x0, y0 = X_ORIGIN + h * TILE_M + col0 * PIXEL_M, Y_ORIGIN - v * TILE_M - row0 * PIXEL_M
    pattern = str(folder / f"MOD09GA.{day}.h{h:02d}v{v:02d}.061.{{layer}}.tif")
    for name, values in zip(GA_BANDS, refl, strict=True):
        _geotiff(pattern.format(layer=name), values, x0, y0, PIXEL_M)
    _geotiff(pattern.format(layer="state_1km"), state, x0, y0, 2 * PIXEL_M)
    _geotiff(pattern.format(layer="QC_500m"), qc, x0, y0, PIXEL_M)
    return pattern


def _constant(rows=N, cols=N):
    """Band i holds 1000 i + 37 everywhere (B01 = 0.1037)."""
    return np.stack([np.full((rows, cols), 1000 * i + 37) for i in range(1, 8)])


def _centre_cells(h, v, col0, rows, cols):
    """Global row and column of the 0.05 deg cell holding each pixel centre, by the sinusoidal formula."""
    x = X_ORIGIN + h * TILE_M + (col0 + np.arange(cols) + 0.5) * PIXEL_M
    y = Y_ORIGIN - v * TILE_M - (np.arange(rows) + 0.5) * PIXEL_M
    lat = np.degrees(y / R_SPHERE)[:, None]
    lon = np.degrees(x[None, :] / (R_SPHERE * np.cos(np.radians(lat))))
    cols = np.floor((lon + 180) * 20).astype(int)
    return np.broadcast_to(np.floor((90 - lat) * 20).astype(int), cols.shape), cols


def _cell_means(values, cells, out):
    """Mean of ``values`` per output cell, from the pixel centres' cells; NaN for a cell without a pixel."""
    row0, col0 = grid.cell_index(float(out.lat[0]), float(out.lon[0]))
    rows, cols = cells[0] - row0, cells[1] - col0
    inside = (rows >= 0) & (rows < out.sizes["lat"]) & (cols >= 0) & (cols < out.sizes["lon"])
    sums, counts = np.zeros((out.sizes["lat"], out.sizes["lon"])), np.zeros((out.sizes["lat"], out.sizes["lon"]))
    np.add.at(sums, (rows[inside], cols[inside]), values[inside])
    np.add.at(counts, (rows[inside], cols[inside]), 1)
    return np.where(counts > 0, sums / np.where(counts > 0, counts, 1), np.nan)


def test_mod09ga_constant_window_lands_on_the_cells_it_covers(tmp_path):
    out = mod09ga_to_drivers(_tile(tmp_path, 18, 4, _constant()))
    assert set(out.data_vars) == {*BANDS, CLEAR}
    assert out.B01.dims == ("time", "lat", "lon") and out.B01.dtype == np.float32
    assert list(out.time.dt.strftime("%Y-%m-%d").values) == ["2019-07-01"]  # A2019182
    # lat 50 .. 49 N; lon from 0 E to 1.5557 E (the window's east edge, 111195 m, at lat 50: 111195 / (R cos 50))
    rows, cols = grid.bbox_slices((0, 49, 1.6, 50))
    np.testing.assert_array_equal(out.lat.values, grid.lat_coords()[rows])
    np.testing.assert_array_equal(out.lon.values, grid.lon_coords()[cols])
    for i, band in enumerate(BANDS, start=1):
        values = out[band].values[0]
        np.testing.assert_array_equal(values[np.isfinite(values)], np.float32((1000 * i + 37) * 1e-4))
    finite = np.isfinite(out.B01.values[0])
    assert finite[:, out.lon.values < 1.55].all()  # the east edge lies past 1.52 E even at lat 49
    assert finite[:2, -1].all() and not finite[2:, -1].any()  # only north of 49.92 N does it reach past 1.55 E
    expected = np.isfinite(_cell_means(np.ones((N, N)), _centre_cells(18, 4, 0, N, N), out))
    np.testing.assert_array_equal(finite, expected)
    np.testing.assert_array_equal(out.CLEAR.values[0], finite.astype(np.float32))
    assert out.B01.attrs["units"] == "1 (reflectance)" and "doi:10.5067/MODIS/MOD09GA.006" in out.attrs["source"]
    assert "at least half of the 500 m pixels clear" in out.CLEAR.attrs["long_name"]


def test_mod09ga_halves_and_gradients_land_on_the_right_cells(tmp_path):
    refl = _constant()
    refl[0, :, N // 2 :] = 3037  # B01: 0.1037 west of x = 55597.5 m (0.7776 E at lat 50, 0.7619 E at lat 49)
    refl[1] = 500 + 10 * np.arange(N)[:, None]  # B02 grows southwards, row by row
    refl[2] = np.random.default_rng(0).integers(0, 10000, (N, N))  # B03 noise
    out = mod09ga_to_drivers(_tile(tmp_path, 18, 4, refl)).isel(time=0)
    lon = out.lon.values
    b01 = out.B01.values
    np.testing.assert_array_equal(b01[:, lon < 0.75], np.float32(0.1037))
    np.testing.assert_array_equal(b01[:, (lon > 0.8) & (lon < 1.5)], np.float32(0.3037))
    mixed = b01[:, (lon > 0.75) & (lon < 0.8)][:, 0]
    assert (mixed > 0.1037).all() and (mixed < 0.3037).all() and mixed[-1] > mixed[0]  # the edge leans west southward
    # B02: cell row k holds pixel rows 12 k .. 12 k + 11, so about their mean (the cells' sheared edges weigh the
    # rows a little unevenly) and 0.012 off its neighbours' means
    expected_rows = (500 + 10 * (12 * np.arange(20) + 5.5)) * 1e-4
    np.testing.assert_allclose(out.B02.values[:, lon < 1.5], np.repeat(expected_rows[:, None], 30, 1), atol=5e-4)
    cells = _centre_cells(18, 4, 0, N, N)
    for band in ("B01", "B02", "B03"):
        raw = refl[BANDS.index(band)]
        np.testing.assert_allclose(out[band].values, _cell_means(raw * 1e-4, cells, out), rtol=1e-6)


def test_mod09ga_fill_is_nan_and_clear_needs_b01_and_b02(tmp_path):
    refl = _constant()
    refl[2, :12] = -28672  # B03 fill on the first cell row
    refl[0, 12:24, : N // 2] = -28672  # B01 fill on the west half of the second
    refl[1, 24:36] = -28672  # B02 fill on the third
    out = mod09ga_to_drivers(_tile(tmp_path, 18, 4, refl), bbox=(0, 49, 1.5, 50)).isel(time=0)
    west = out.lon.values < 0.75
    assert np.isnan(out.B03.values[0]).all() and np.isfinite(out.B03.values[1:]).all()
    assert np.isnan(out.B01.values[1, west]).all() and np.isfinite(out.B01.values[[0, 2]]).all()
    assert np.isnan(out.B02.values[2]).all()
    assert (out.CLEAR.values[0] == 1).all()  # B03 missing does not matter
    assert (out.CLEAR.values[1, west] == 0).all() and (out.CLEAR.values[1, out.lon.values > 0.8] == 1).all()
    assert (out.CLEAR.values[2] == 0).all() and (out.CLEAR.values[3:] == 1).all()


def test_mod09ga_clear_is_the_majority_of_the_500m_pixels(tmp_path):
    state = np.full((N // 2, N // 2), CLEAR_STATE, dtype=np.uint16)  # a cell row holds 6 rows of 1 km QA pixels
    state[6:9] = CLOUDY_STATE  # cell row 1: half its pixel rows cloudy -> clear where that makes half the pixels
    state[12:16] = CLOUDY_STATE  # cell row 2: two thirds cloudy -> not clear
    state[18:20] = CLOUDY_STATE  # cell row 3: one third cloudy -> clear
    state[24:30] = CLOUDY_ADJACENT  # cell row 4: all adjacent to cloud -> not clear
    qc = np.zeros((N, N), dtype=np.uint32)
    qc[60:72] = 1  # cell row 5: MODLAND QA not ideal -> not clear, unless QC_500m is left out
    pattern = _tile(tmp_path, 18, 4, _constant(), state=state, qc=qc)
    bbox = (0, 49, 1.5, 50)
    out = mod09ga_to_drivers(pattern, bbox=bbox).isel(time=0)
    rows, cols = grid.bbox_slices(bbox)
    np.testing.assert_array_equal(out.lat.values, grid.lat_coords()[rows])
    np.testing.assert_array_equal(out.lon.values, grid.lon_coords()[cols])
    expected = np.ones(20)
    expected[[2, 4, 5]] = 0
    clear_cut = [0, 2, 3, *range(4, 20)]
    np.testing.assert_array_equal(out.CLEAR.values[clear_cut], np.repeat(expected[clear_cut, None], 30, 1))
    # the sheared cells hold about, not exactly, as many pixels of each pixel row: count them by the formula
    clear_pixels = np.repeat(np.repeat(state == CLEAR_STATE, 2, axis=0), 2, axis=1) & (qc == 0)
    share = _cell_means(clear_pixels, _centre_cells(18, 4, 0, N, N), out)
    np.testing.assert_array_equal(out.CLEAR.values, (share >= 0.5).astype(np.float32))
    assert out.CLEAR.values[share == 0.5].all() and (share[1] == 0.5).sum() >= 5 and (share[1] < 0.5).any()
    np.testing.assert_array_equal(out.B01.values, np.float32(0.1037))  # reflectance is kept on cloudy cells
    (tmp_path / "MOD09GA.A2019182.h18v04.061.QC_500m.tif").unlink()
    without_qc = mod09ga_to_drivers(pattern, bbox=bbox, qc_500m=False).isel(time=0)
    expected[5] = 1
    np.testing.assert_array_equal(without_qc.CLEAR.values[:, 0], expected)
    assert "MODLAND" not in without_qc.CLEAR.attrs["long_name"]


def test_mod09ga_adjacent_tiles_mosaic_without_a_seam(tmp_path):
    """The east edge of h18v04 meets h19v04 at x = 1111950.5 m, i.e. 15.56 E at lat 50 and 15.24 E at lat 49."""
    (tmp_path / "west").mkdir(), (tmp_path / "east").mkdir(), (tmp_path / "both").mkdir()
    refl = np.concatenate([_constant(), _constant() + 2000], axis=2)  # 0.1037 in h18, 0.3037 in h19 (B01)
    refl[2] = np.random.default_rng(1).integers(0, 10000, (N, 2 * N))
    west = _tile(tmp_path / "west", 18, 4, refl[:, :, :N], col0=2400 - N)
    east = _tile(tmp_path / "east", 19, 4, refl[:, :, N:])
    both = _tile(tmp_path / "both", 18, 4, refl, col0=2400 - N)  # one raster across the edge: the seamless truth
    mosaic = mod09ga_to_drivers([west, east])
    xr.testing.assert_allclose(mosaic, mod09ga_to_drivers(both))
    xr.testing.assert_allclose(mosaic, mod09ga_to_drivers([east, west]))
    b01 = mosaic.B01.values[0]
    straddling = (b01 > 0.1037) & (b01 < 0.3037)  # cells holding pixels of both tiles
    assert straddling.sum() >= 20 and (mosaic.CLEAR.values[0][straddling] == 1).all()
    inside = (mosaic.lon.values > 14.1) & (mosaic.lon.values < 16.7)
    assert np.isfinite(mosaic.to_array().values[..., inside]).all()  # no gap anywhere between the tiles
    on_edge = mod09ga_to_drivers(west, bbox=(15.2, 49, 15.6, 50)).B01.values[0]
    assert np.isfinite(on_edge).any() and np.isnan(on_edge).any()  # one tile alone covers the edge cells partly


def test_mod09ga_drops_pixels_beyond_the_sinusoidal_edge(tmp_path):
    """h35v08's last window (lat 1 .. 0 N, x past 19.9e6 m) reaches the 180 E edge, x = pi R cos(lat)."""
    out = mod09ga_to_drivers(_tile(tmp_path, 35, 8, _constant(), col0=2400 - N, row0=2400 - N))
    assert out.lon.values.min() > 178.9  # PROJ would wrap the pixels past the edge to about 180 W
    assert np.isfinite(out.B01.values[0, :, -1]).all()  # ... while those inside reach the last cell
    with pytest.raises(DataError, match="no pixel on the globe"):
        mod09ga_to_drivers(_tile(tmp_path, 35, 7, _constant(), col0=2400 - N))  # lat 20 .. 19 N: all beyond


def test_mod09ga_errors_name_what_is_missing(tmp_path):
    pattern = _tile(tmp_path, 18, 4, _constant())
    (tmp_path / "MOD09GA.A2019182.h18v04.061.state_1km.tif").unlink()
    with pytest.raises(DataError, match="MOD09GA layer state_1km is missing"):
        mod09ga_to_drivers(pattern)
    pattern = _tile(tmp_path, 18, 4, _constant())
    (tmp_path / "MOD09GA.A2019182.h18v04.061.QC_500m.tif").unlink()
    with pytest.raises(DataError, match="MOD09GA layer QC_500m is missing"):
        mod09ga_to_drivers(pattern)
    with pytest.raises(DataError, match=r"has no \{layer\}"):
        mod09ga_to_drivers(str(tmp_path / "MOD09GA.A2019182.h18v04.061.tif"))
    with pytest.raises(DataError, match="hold no pixel in bbox"):
        mod09ga_to_drivers(pattern, bbox=(10, 10, 11, 11), qc_500m=False)
    undated = _tile(tmp_path, 18, 4, _constant(), day="2019-07-01")
    with pytest.raises(DataError, match="pass date="):
        mod09ga_to_drivers(undated)
    assert str(mod09ga_to_drivers(undated, date="2019-07-01").time.values[0])[:10] == "2019-07-01"
    other_day = _tile(tmp_path, 18, 4, _constant(), day="A2019183")
    with pytest.raises(DataError, match="of 2 days"):
        mod09ga_to_drivers([undated.replace("2019-07-01", "A2019182"), other_day], qc_500m=False)
    _geotiff(tmp_path / "float.sur_refl_b01.tif", np.zeros((N, N), np.float32), 0, 5559752.598, PIXEL_M)
    with pytest.raises(DataError, match="raw integer sur_refl_b01"):
        mod09ga_to_drivers(str(tmp_path / "float.{layer}.tif"), date="2019-07-01")


def test_mod09ga_output_passes_through_the_engine_drivers(tmp_path):
    from jobs.drivers import GridDrivers

    out = mod09ga_to_drivers(_tile(tmp_path, 18, 4, _constant()), bbox=(0, 49, 1.5, 50))
    path = tmp_path / "mod09ga.nc"
    out.to_netcdf(path)
    rows, cols = grid.bbox_slices((0, 49, 1.5, 50))
    read = GridDrivers(str(path)).read(rows, cols, pd.DatetimeIndex(out.indexes["time"]), [*BANDS, CLEAR])
    np.testing.assert_array_equal(read["B07"], out.B07.values)
    np.testing.assert_array_equal(read[CLEAR], out.CLEAR.values)
