"""`tamrl ingest`: MODIS files as delivered into the canonical drivers store, values worked out by hand.

The HDF4-EOS fixtures in tests/data/modis_hdf are written by tests/make_modis_hdf_fixture.py in the real layout
(SDS names, scale, fill and valid range, the grids in StructMetadata.0) on small windows; its docstring says how
they differ from real granules and which values it sets.
"""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from pyhdf.SD import SD, SDC

from jobs import grid
from jobs.drivers import GridDrivers
from jobs.hdfeos import read_field
from service.cli import main

HDF = Path(__file__).parent / "data" / "modis_hdf"
GA_182 = HDF / "MOD09GA.A2019182.h18v04.061.2020296001211.hdf"
GA_183 = HDF / "MOD09GA.A2019183.h18v04.061.2020296001211.hdf"
CMG = HDF / "MOD09CMG.A2019182.061.2020296001211.hdf"
GA_BBOX = "0,49.9,0.2,50"  # 2 x 4 cells at the north-west corner of tile h18v04
LAYERS = [*(f"sur_refl_b0{k}_1" for k in range(1, 8)), "state_1km_1", "QC_500m_1"]


def ingested(files, out, *options) -> xr.Dataset:
    assert main(["ingest", *map(str, files), "--bbox", GA_BBOX, "--out", str(out), "--quiet", *options]) == 0
    return xr.open_zarr(out).load()


def test_mod09ga_granules_give_the_cell_values_worked_out_by_hand(tmp_path):
    ds = ingested([GA_183, GA_182], tmp_path / "ga.zarr")  # any order: days come out sorted
    assert list(ds.time.dt.strftime("%Y-%m-%d").values) == ["2019-07-01", "2019-07-02"]  # A2019182, A2019183
    assert set(ds.data_vars) == {"B01", "B02", "B03", "B04", "B05", "B06", "B07", "CLEAR"}
    # Cell 49.975 N 0.025 E spans lat 50..49.95 = y 5559752.6..5554192.8 m (lat = y / R): 500 m rows 0-11. At lat
    # 50 its east edge 0.05 E lies at x = R cos(50) 0.05 pi / 180 = 3573.7 m = 7.71 pixels of 463.31 m (7.72 at
    # 49.95 N), so the pixel centres (j + 0.5) 463.31 m of columns 0-7 are inside: 12 x 8 = 96 pixels.
    # B01 (raw 1037, scale_factor 1e-4): pixel (0, 0) is fill, (0, 1) 20000 is above valid_range, (5, 5) is 3437.
    cell = ds.sel(lat=49.975, lon=0.025, time="2019-07-01")
    assert float(cell.B01) == pytest.approx((93 * 1037 + 3437) / 94 * 1e-4, abs=1e-7)
    assert float(cell.B02) == pytest.approx(0.2037, abs=1e-7)  # 95 valid pixels of 2037: (11, 7) is fill
    assert [float(cell[f"B0{k}"]) for k in range(3, 8)] == pytest.approx([(1000 * k + 37) * 1e-4 for k in range(3, 8)])
    # CLEAR: of the 96 pixels, 4 have no state QA (1 km pixel (3, 3) is fill), leaving 92; not clear are 4 cloudy
    # (1 km (0, 0)), 4 adjacent to cloud (1 km (1, 0)), 1 with MODLAND QA 01 (4, 4), 1 without B02 (11, 7): 82 of
    # 92 are clear, at least half, so CLEAR is 1.
    assert float(cell.CLEAR) == 1
    cloudy = ds.sel(lat=49.975, lon=0.075, time="2019-07-01")  # columns 8-14, under the cloudy 1 km columns 4-7
    assert float(cloudy.CLEAR) == 0 and float(cloudy.B01) == pytest.approx(0.1037, abs=1e-7)
    day_183 = ds.sel(time="2019-07-02")
    for k in range(1, 8):
        np.testing.assert_allclose(day_183[f"B0{k}"].values, (1000 * k + 137) * 1e-4, atol=1e-7)
    assert (day_183.CLEAR.values == 1).all()
    rows, cols = grid.bbox_slices((0, 49.9, 0.2, 50))  # the store is a canonical store the engine reads as is
    read = GridDrivers([str(tmp_path / "ga.zarr")]).read(rows, cols, pd.DatetimeIndex(ds.indexes["time"]))
    np.testing.assert_array_equal(read["B01"], ds.B01.values)


def test_appeears_geotiffs_give_the_values_of_the_granules(tmp_path):
    """The same layers as AppEEARS delivers them in the native projection: one GeoTIFF per layer and day."""
    folder = tmp_path / "appeears"
    folder.mkdir()
    for granule, doy in ((GA_182, "2019182"), (GA_183, "2019183")):
        for layer in LAYERS:
            read_field(str(granule), layer).rio.to_raster(folder / f"MOD09GA.061_{layer}_doy{doy}_aid0001.tif")
    from_tiffs = ingested([folder], tmp_path / "tif.zarr")
    xr.testing.assert_identical(from_tiffs, ingested([GA_182, GA_183], tmp_path / "hdf.zarr"))


def test_mod09cmg_granule_cells_worked_out_by_hand(tmp_path):
    """The granule covers 45.2-45.0 N, 10.0-10.3 E (StructMetadata.0 corners in packed degrees); the bbox reaches
    10.4 E. Band k of its cell (i, j) is raw 1000 k + 10 (6 i + j), scale_factor 1e-4."""
    out = tmp_path / "cmg.zarr"
    assert main(["ingest", str(CMG), "--bbox", "10,45,10.4,45.2", "--out", str(out), "--quiet"]) == 0
    ds = xr.open_zarr(out).isel(time=0).load()
    assert list(ds.lat.values) == [45.175, 45.125, 45.075, 45.025]
    assert list(ds.lon.values) == pytest.approx([10.025 + 0.05 * j for j in range(8)])
    assert float(ds.B07.sel(lat=45.175, lon=10.075)) == pytest.approx(0.7010, abs=1e-7)  # 7000 + 10 * 1
    assert float(ds.B01.sel(lat=45.125, lon=10.125)) == pytest.approx(0.1080, abs=1e-7)  # 1000 + 10 * 8
    assert np.isnan(ds.B03.sel(lat=45.125, lon=10.125)) and float(ds.CLEAR.sel(lat=45.125, lon=10.125)) == 1
    assert np.isnan(ds.B01.sel(lat=45.175, lon=10.025)) and float(ds.CLEAR.sel(lat=45.175, lon=10.025)) == 0
    assert float(ds.CLEAR.sel(lat=45.075, lon=10.175)) == 0  # State QA cloudy
    assert float(ds.CLEAR.sel(lat=45.025, lon=10.275)) == 0  # MODLAND QA 01
    assert int(ds.CLEAR.sum()) == 24 - 3
    beyond = ds.sel(lon=[10.325, 10.375])  # outside the granule: no data, not clear
    assert beyond.B01.isnull().all() and (beyond.CLEAR == 0).all()


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    damaged = tmp_path / GA_182.name
    damaged.write_bytes(b"not an HDF4 file")
    stray = tmp_path / "notes.txt"
    stray.write_text("")
    bare = tmp_path / "bare" / GA_183.name  # a granule's name, but no StructMetadata.0 and only one SDS
    bare.parent.mkdir()
    sd = SD(str(bare), SDC.WRITE | SDC.CREATE)
    sd.create("sur_refl_b01_1", SDC.INT16, (2, 2)).endaccess()
    sd.end()
    cases = [
        ([damaged], [], "cannot read .* as HDF4"),
        ([bare], [], "has no StructMetadata.0 attribute: it is not an HDF-EOS grid granule"),
        ([stray], [], "is not a MODIS file tamrl reads"),
        ([GA_182, CMG], [], "the files are of mod09ga and mod09cmg; ingest one product"),
        ([GA_182], ["--options", '{"mod09ga": {"qc": false}}'], "mod09ga.qc: Extra inputs are not permitted"),
        ([GA_182], ["--options", "qc_500m=false"], "is not JSON"),
        ([tmp_path / "missing.hdf"], [], "does not exist"),
    ]
    for files, options, message in cases:
        out = tmp_path / "out.zarr"
        assert main(["ingest", *map(str, files), "--bbox", GA_BBOX, "--out", str(out), "--quiet", *options]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("tamrl ingest: error: "), err
        assert re.search(message, err), err
        assert not out.exists() and not out.with_name("out.zarr.partial").exists()
    ingested([GA_182], tmp_path / "once.zarr")
    assert main(["ingest", str(GA_182), "--bbox", GA_BBOX, "--out", str(tmp_path / "once.zarr")]) == 2
    assert "exists; give a new --out" in capsys.readouterr().err
