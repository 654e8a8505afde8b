"""The gridded engine end to end on a tiny region: drivers, tiles, resume, errors, and agreement with predict.

The checkpoint and drivers are conftest's tiny ones, so each run takes about a second.
"""

import json
import logging
import math
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from conftest import GARDA as BBOX  # two tiles
from conftest import upscale_job

from jobs import cluster, compute, engine, grid, static
from jobs.compute import run_dates, support_dates
from jobs.drivers import GridDrivers
from jobs.outputs import DAILY, MEMBERS, OUTPUTS, VARIABLES, members_of
from jobs.synthetic import synthetic_drivers
from jobs.tiles import Tile
from jobs.writer import Cube, CubeSpec
from service.cli import main
from tamrl.calibration import cube_bounds
from tamrl.checkpoint import load_bundle, save_bundle
from tamrl.errors import ConfigError, DataError
from tamrl.features import BANDS, CLEAR, TARGETS
from tamrl.predict import Predictor

CHUNK = (None, 4, 4)  # tiles of 2 x 2 chunks = 8 x 8 cells
START, END = "2020-03-01", "2020-04-29"  # 60 days; with the 90-day spin-up the decoder starts 2019-12-02
# writing the drivers' consolidated metadata (so they open without a fallback warning) makes zarr warn instead
pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part:UserWarning")
ERA5_UK = Path(__file__).parent / "data" / "era5" / "era5_t2m_uk_2019-03_hourly_0p25deg_52.75-51N_1W-0.75E.nc"
# ERA5 at US-TaS as the CDS delivers the year files 2019 and 2020: 2019-01-01 00 UTC to 2020-12-31 23 UTC
ERA5_YEARS = Path(__file__).parent / "data" / "era5" / "era5_ssrd_t2m_d2m_hourly_25.19N_80.64W_2019-2020.nc"
EVERGLADES = (-80.7, 25.15, -80.6, 25.25)  # 2 x 2 cells around US-TaS, three of them land (permanent wetland)


def run(checkpoint, drivers, out, start=START, end=END, **kw):
    """The tiny job in this process (``drivers`` a URL or a list of them)."""
    kw = {"workers": 0, "chunk": CHUNK, "progress": False} | kw
    return upscale_job(checkpoint, drivers, BBOX, start, end, out, **kw)


@pytest.fixture(scope="module")
def cube(checkpoint, drivers, tmp_path_factory) -> tuple[xr.Dataset, engine.Summary]:
    out = tmp_path_factory.mktemp("cube") / "cube.zarr"
    summary = run(checkpoint, drivers, out)
    return xr.open_zarr(out).load(), summary


def test_cube_layout_attributes_and_values(cube):
    ds, summary = cube
    assert dict(ds.GPP.sizes) == {"time": 60, "lat": 8, "lon": 16}
    assert ds.indexes["time"][0] == pd.Timestamp(START) and ds.indexes["time"][-1] == pd.Timestamp(END)
    assert np.all(np.diff(ds.lat) < 0) and ds.lat.max() < 45.8 and ds.lon.min() > 10.4
    assert ds.attrs["Conventions"] == "CF-1.8" and ds.attrs["synthetic"] == 1 and "SYNTHETIC" in ds.attrs["comment"]
    assert ds.attrs["tamrl_complete"] == 1 and ds.attrs["support_years"] == [2019]
    assert ds.GPP.attrs["standard_name"] == "gross_primary_productivity_of_biomass_expressed_as_carbon"
    assert all(ds[v].attrs["units"] == "g m-2 d-1" for v in VARIABLES)
    land = ds.land_mask.values == 1
    assert land.sum() == summary.land_pixels == summary.pixels_computed == 109 and (~land).sum() == 19
    assert np.isfinite(ds.GPP.values[:, land]).all() and np.isnan(ds.GPP.values[:, ~land]).all()
    assert (ds.GPP.values[:, land] >= 0).all() and (ds.RECO.values[:, land] >= 0).all()
    assert ds.GPP_std.values[:, land].max() > 0  # three members disagree
    assert summary.tiles == summary.tiles_computed == 2 and Path(summary.quicklook).stat().st_size > 10_000


def test_cube_equals_tamrl_predict_at_pixels(cube, checkpoint, drivers):
    ds, _ = cube
    predictor = Predictor.load(checkpoint)
    raw = xr.open_zarr(drivers)
    land = np.argwhere(ds.land_mask.values == 1)
    for i, j in land[[0, len(land) // 2, -1]]:
        lat, lon = float(ds.lat[i]), float(ds.lon[j])
        cell = raw.sel(lat=lat, lon=lon)
        igbp = static.igbp_names(ds.igbp.values[i, j])
        koppen = static.koppen_letters(static.koppen(BBOX).sel(lat=lat, lon=lon).values)
        run_frame = pixel_frame(cell, run_dates(pd.Timestamp(START), pd.Timestamp(END)))
        support = pixel_frame(cell, support_dates([2019]))
        expected = predictor.predict_frame(run_frame, lat, lon, str(igbp), str(koppen), support).loc[START:END]
        for name in DAILY:
            np.testing.assert_allclose(ds[name].values[:, i, j], expected[name].values, rtol=1e-5, atol=1e-5)
        for target in TARGETS:  # the cube's documented calibration gives tamrl predict's 90% interval
            lo, hi = cube_bounds(ds.isel(lat=[i], lon=[j]), target)  # from the float32 mean and spread of the cube
            np.testing.assert_allclose(lo.values[:, 0, 0], expected[f"{target}_p05"].values, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(hi.values[:, 0, 0], expected[f"{target}_p95"].values, rtol=1e-4, atol=1e-4)


def test_the_members_monthly_means_are_laid_out_as_the_contract_says(cube):
    ds, summary = cube
    march, april = pd.Timestamp("2020-03-01"), pd.Timestamp("2020-04-01")
    assert list(ds.indexes["month"]) == [march, april]
    assert ds.month.attrs == {"long_name": "month", "bounds": "month_bnds"}
    end = pd.Timestamp(END) + pd.Timedelta(days=1)  # bounds end exclusive: the day after the last cube day
    np.testing.assert_array_equal(ds.month_bnds.values, np.array([[march, april], [april, end]], "datetime64[ns]"))
    assert ds.member.values.tolist() == [0, 1, 2] and ds.member.dtype == np.int32
    assert ds.member.attrs["long_name"] == "ensemble member (checkpoint member index)"
    raw = xr.open_zarr(summary.url, decode_times=False)
    assert raw.month.attrs["units"] == raw.time.attrs["units"] == f"days since {START}" and raw.month.dtype == np.int32
    assert raw.month.values.tolist() == [0, 31] and raw.month_bnds.values.tolist() == [[0, 31], [31, 60]]
    for target in TARGETS:
        members = ds[members_of(target)]
        assert members.name == f"{target}_members" and members.name in MEMBERS
        assert members.dims == ("month", "member", "lat", "lon") and members.dtype == np.float32
        assert members.encoding["chunks"] == (2, 3, *CHUNK[1:]) and np.isnan(members.encoding["_FillValue"])
        assert members.attrs["units"] == ds[target].attrs["units"] and members.attrs["cell_methods"] == "month: mean"
        assert "per ensemble member" in members.attrs["long_name"] and "totals" in members.attrs["comment"]


def test_the_mean_of_the_members_monthly_means_is_the_monthly_mean_of_the_daily_flux(cube):
    ds, _ = cube
    for target in TARGETS:
        members = ds[members_of(target)].values  # (month, member, lat, lon)
        daily = ds[target].values
        assert (np.isnan(members) == np.isnan(daily[0])).all()  # NaN exactly where the daily flux is not computed
        land = ds.land_mask.values == 1
        assert np.isfinite(members[:, :, land]).all() and members[:, :, land].std(axis=1).max() > 0
        monthly = np.stack([daily[:31].mean(axis=0), daily[31:].mean(axis=0)])  # March; April to the 29th
        np.testing.assert_allclose(members.mean(axis=1)[:, land], monthly[:, land], rtol=1e-5, atol=1e-6)


def test_the_members_monthly_means_equal_a_hand_computation_from_the_raw_members(cube, checkpoint, drivers):
    ds, _ = cube
    predictor = Predictor.load(checkpoint)
    assert ds.attrs["nee_rule"] == predictor.inference["nee"] == "head"  # NEE is the model's NEE head, not clipped
    raw = xr.open_zarr(drivers)
    land = np.argwhere(ds.land_mask.values == 1)
    i, j = land[len(land) // 3]
    lat, lon = float(ds.lat[i]), float(ds.lon[j])
    cell = raw.sel(lat=lat, lon=lon)
    igbp = str(static.igbp_names(ds.igbp.values[i, j]))
    koppen = str(static.koppen_letters(static.koppen(BBOX).sel(lat=lat, lon=lon).values))
    run_days = run_dates(pd.Timestamp(START), pd.Timestamp(END))
    x, statics = predictor.features(pixel_frame(cell, run_days), lat, lon, igbp, koppen)
    support = predictor.features(pixel_frame(cell, support_dates([2019])), lat, lon, igbp, koppen)[0]
    members = predictor.members(x[None], statics[None], support_raw=support[None])[:, 0].astype(np.float64)
    members[..., :2] = np.maximum(members[..., :2], 0)  # (member, day, target): GPP and RECO clipped at zero
    kept = run_days >= pd.Timestamp(START)  # the spin-up is not the cube's
    march, april = members[:, kept & (run_days.month == 3)], members[:, kept & (run_days.month == 4)]
    assert march.shape[1] == 31 and april.shape[1] == 29
    for t, target in enumerate(TARGETS):
        expected = np.stack([march[..., t].mean(axis=1), april[..., t].mean(axis=1)])  # (month, member)
        np.testing.assert_allclose(ds[members_of(target)].values[:, :, i, j], expected, rtol=1e-5, atol=1e-5)


def test_members_follow_the_balance_nee_rule(checkpoint, drivers, tmp_path):
    bundle = load_bundle(checkpoint)
    bundle = {k: v for k, v in bundle.items() if k not in ("path", "sha256")}
    bundle["inference"] = {**bundle["inference"], "nee": "balance"}
    balance = save_bundle(bundle, tmp_path / "balance.pt")
    summary = run(balance, drivers, tmp_path / "cube.zarr", end="2020-03-10")
    ds = xr.open_zarr(summary.url).load()
    assert ds.attrs["nee_rule"] == "balance" and ds.sizes["month"] == 1
    land = ds.land_mask.values == 1
    gpp, reco, nee = (ds[members_of(t)].values[..., land] for t in TARGETS)
    assert (gpp >= 0).all() and (reco >= 0).all() and np.isfinite(nee).all()
    np.testing.assert_allclose(nee, reco - gpp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(nee.mean(axis=1)[0], ds.NEE.values[:, land].mean(axis=0), rtol=1e-5, atol=1e-6)


def stored_bytes(url: str, name: str) -> int:
    """Bytes of the chunk objects of variable ``name`` in the local Zarr store at ``url``."""
    return sum(f.stat().st_size for f in (Path(url) / name / "c").rglob("*") if f.is_file())


def test_the_members_take_at_most_half_the_bytes_of_the_daily_variables(cube):
    """Uncompressed, the member arrays are members x months / (2 x days) of the daily ones (3 variables of members x
    months values per cell against 6 of days): at most half as long as members x months <= days. The tiny cube
    (3 members, 2 months, 60 days) is well inside; the demo cube (10 members, 12 months, 365 days) is measured in
    docs/BENCHMARKS.md."""
    ds, summary = cube
    members, daily = (sum(stored_bytes(summary.url, name) for name in names) for names in (MEMBERS, DAILY))
    raw = {name: math.prod(ds[name].shape) * np.dtype(OUTPUTS[name].dtype).itemsize for name in VARIABLES}
    assert sum(raw[n] for n in MEMBERS) / sum(raw[n] for n in DAILY) == 3 * 2 / (2 * 60)
    assert 0 < members <= 0.5 * daily, (members, daily)


def pixel_frame(cell: xr.Dataset, dates: pd.DatetimeIndex) -> pd.DataFrame:
    """A pixel's daily drivers as `tamrl predict` reads them, converted by hand from the synthetic ERA5 fields."""
    c = cell.sel(time=dates).load()
    ta, td = c.t2m.values - 273.15, c.d2m.values - 273.15
    magnus = lambda t: 6.1094 * np.exp(17.625 * t / (t + 243.04))  # noqa: E731
    columns = {"TA": ta, "SW_IN": c.ssrd.values / 86400.0, "VPD": magnus(ta) - magnus(td)}
    columns |= {b: c[b].values for b in (*BANDS, "CLEAR")}
    return pd.DataFrame(columns, index=dates)


def test_resume_after_a_crash_skips_finished_tiles_and_gives_the_same_cube(
    cube, checkpoint, drivers, tmp_path, monkeypatch
):
    out = tmp_path / "resumed.zarr"
    computed, real = [], engine.compute_part

    def crash_after_one(part, job):
        if computed:
            raise RuntimeError("simulated crash")
        computed.append(part.tile.id)
        return real(part, job)

    monkeypatch.setattr(engine, "compute_part", crash_after_one)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(checkpoint, drivers, out)
    spec = CubeSpec.model_validate_json(xr.open_zarr(out, consolidated=False).attrs["tamrl_spec"])
    assert Cube(str(out), spec).finished() == set(computed)

    def counting(part, job):
        computed.append(part.tile.id)
        return real(part, job)

    monkeypatch.setattr(engine, "compute_part", counting)
    summary = run(checkpoint, drivers, out)
    assert len(computed) == 2 and computed[0] != computed[1]  # the finished tile was not computed again
    assert summary.tiles_computed == 1 and summary.tiles == 2
    resumed = xr.open_zarr(out)
    assert resumed.attrs["tamrl_complete"] == 1
    for name in VARIABLES:
        np.testing.assert_array_equal(resumed[name].values, cube[0][name].values)


def test_other_parameters_on_an_existing_cube_are_refused(checkpoint, drivers, tmp_path):
    out = tmp_path / "cube.zarr"
    run(checkpoint, drivers, out, end="2020-03-10")
    with pytest.raises(ConfigError, match=r"end: '2020-03-10' -> '2020-03-11'.*--overwrite"):
        run(checkpoint, drivers, out, end="2020-03-11")
    assert run(checkpoint, drivers, out, end="2020-03-10").tiles_computed == 0  # same parameters: nothing to do


def test_drivers_lacking_a_variable_are_named(checkpoint, drivers, tmp_path):
    store = tmp_path / "no_b03.zarr"
    xr.open_zarr(drivers).drop_vars("B03").to_zarr(store, zarr_format=3, consolidated=True)
    with pytest.raises(DataError, match="missing B03"):
        run(checkpoint, [str(store)], tmp_path / "cube.zarr")
    assert not (tmp_path / "cube.zarr").exists()


def test_drivers_not_covering_the_days_name_their_coverage(checkpoint, drivers, tmp_path):
    with pytest.raises(DataError, match=r"do not cover 2020-04-02..2020-07-01.*TA 2019-01-01..2020-04-30"):
        run(checkpoint, drivers, tmp_path / "a.zarr", start="2020-07-01", end="2020-07-01")
    with pytest.raises(DataError, match=r"do not cover the support years 2018, 2019: .*2019-01-01..2020-04-30"):
        run(checkpoint, drivers, tmp_path / "b.zarr", support_years=[2019, 2018])
    assert not (tmp_path / "a.zarr").exists() and not (tmp_path / "b.zarr").exists()


def test_cli_prints_domain_errors_on_one_line(checkpoint, drivers, tmp_path, capsys):
    code = main(["upscale", "--checkpoint", str(checkpoint), "--drivers", drivers, "--bbox", "10.4,45.4,11.2,45.8",
                 "--start", START, "--end", "2020-05-31", "--out", str(tmp_path / "c.zarr")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith("tamrl upscale: error: the drivers do not cover") and "2020-04-30" in err
    assert main(["upscale", "--drivers", drivers, "--bbox", "10,45", "--start", START, "--end", END,
                 "--out", str(tmp_path / "d.zarr")]) == 2  # fmt: skip
    assert "--bbox '10,45' must be 4" in capsys.readouterr().err


def test_cli_upscale_writes_the_cube_and_reports(cube, checkpoint, drivers, tmp_path, capsys):
    out = tmp_path / "cli.zarr"
    assert main(["upscale", "--checkpoint", str(checkpoint), "--drivers", drivers, "--bbox", "10.4,45.4,11.2,45.8",
                 "--start", START, "--end", END, "--out", str(out), "--workers", "0", "--support-years", "2019",
                 "--quiet"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "109 land pixels x 60 days" in printed and "pixel-days/s" in printed and f"{out}.png" in printed
    got = xr.open_zarr(out).load()
    assert got.attrs["support_years"] == [2019] and got.attrs["tamrl_complete"] == 1
    assert got.GPP.shape == (60, 50, 50)  # default 50 x 50 chunks: the bbox padded to a whole chunk
    inside = got.sel(lat=cube[0].lat, lon=cube[0].lon)
    np.testing.assert_allclose(inside.GPP.values, cube[0].GPP.values, rtol=1e-5, atol=1e-6)
    padding = (got.land_mask == 1) & ~(got.lat.isin(cube[0].lat) & got.lon.isin(cube[0].lon))
    assert padding.sum() > 1000 and got.GPP.isel(time=0).where(padding).isnull().all()  # outside the bbox: NaN


def test_era5_ta_is_the_bilinear_interpolation_at_a_cell():
    lat, lon = 51.925, -0.375  # a 0.05 deg cell centre between ERA5 points 52.0/51.75 N and 0.5/0.25 W
    row, col = grid.cell_index(lat, lon)
    assert (grid.lat_coords()[row], grid.lon_coords()[col]) == (lat, lon)
    source = GridDrivers([str(ERA5_UK)])
    assert source.variables == ("TA",) and not source.synthetic
    days = pd.date_range("2019-03-01", "2019-03-31")
    got = source.read(slice(row, row + 1), slice(col, col + 1), days)["TA"][:, 0, 0]

    with xr.open_dataset(ERA5_UK) as raw:
        t2m, lats, lons = raw.t2m.values, list(raw.latitude.values), list(raw.longitude.values)
    daily = t2m.reshape(31, 24, 8, 8).astype(np.float64).mean(axis=1) - 273.15  # (day, lat, lon)
    i, j = lats.index(52.0), lons.index(-0.5)  # the other corners: 51.75 N at i + 1, 0.25 W at j + 1
    wy, wx = (52.0 - lat) / 0.25, (lon + 0.5) / 0.25
    expected = ((1 - wy) * (1 - wx) * daily[:, i, j] + (1 - wy) * wx * daily[:, i, j + 1]
                + wy * (1 - wx) * daily[:, i + 1, j] + wy * wx * daily[:, i + 1, j + 1])  # fmt: skip
    np.testing.assert_allclose(got, expected, atol=1e-4)


@pytest.fixture(scope="module")
def year_files(tmp_path_factory) -> tuple[Path, Path]:
    """Real hourly ERA5 (ERA5_YEARS) on a 0.25 deg grid cell around EVERGLADES, and synthetic reflectance there.

    The file holds one ERA5 grid point; its series is put at the four corners of a grid cell so that the engine's
    bilinear interpolation gives every cell of the bbox exactly the point's values.
    """
    folder = tmp_path_factory.mktemp("year_files")
    with xr.open_dataset(ERA5_YEARS) as point:
        corners = point.load().isel(latitude=[0, 0], longitude=[0, 0])
    corners.assign_coords(latitude=[25.25, 25.0], longitude=[-80.75, -80.5]).to_netcdf(folder / "era5.nc")
    reflectance = synthetic_drivers(EVERGLADES, "2019-01-01", "2020-12-31", seed=1)[[*BANDS, CLEAR]]
    reflectance.to_zarr(folder / "reflectance.zarr", zarr_format=3, consolidated=True)
    return folder / "era5.nc", folder / "reflectance.zarr"


def test_the_partial_last_day_of_era5_year_files_is_dropped_with_a_note(checkpoint, year_files, tmp_path, caplog):
    era5, reflectance = year_files
    drivers = [str(era5), str(reflectance)]
    job = {"workers": 0, "chunk": CHUNK, "progress": False}
    with caplog.at_level(logging.WARNING, logger="jobs.engine"):
        summary = upscale_job(checkpoint, drivers, EVERGLADES, "2019-06-01", "2019-06-30", tmp_path / "a.zarr", **job)

    note = (
        f"{era5}: dropped 2020-12-31, the partial last day of the hourly record 2019-01-01 00:00..2020-12-31 23:00 "
        "UTC: SW_IN needs 2020-12-31 01:00..2021-01-01 00:00 UTC"
    )
    assert summary.notes == (note,) and str(summary).endswith(f"\nnote: {note}") and note in caplog.messages
    got = xr.open_zarr(tmp_path / "a.zarr").load()
    assert got.attrs["tamrl_complete"] == 1 and got.attrs["support_years"] == [2019]  # 2020 is no longer whole
    finite = np.isfinite(got.GPP.values)
    assert summary.pixels_computed == finite.all(axis=0).sum() == finite.any(axis=0).sum() == 3
    upscale_job(checkpoint, drivers, EVERGLADES, "2019-06-01", "2019-06-30", tmp_path / "b.zarr", support_years=[2019],
            **job)  # fmt: skip
    reference = xr.open_zarr(tmp_path / "b.zarr").load()
    for name in VARIABLES:
        np.testing.assert_array_equal(got[name].values, reference[name].values)
    with pytest.raises(DataError, match=r"do not cover 2020-10-02..2020-12-31 .*SW_IN 2019-01-01..2020-12-30"):
        upscale_job(checkpoint, drivers, EVERGLADES, "2020-12-31", "2020-12-31", tmp_path / "c.zarr", **job)


def test_hours_missing_inside_the_era5_record_still_fail_the_job(checkpoint, year_files, tmp_path):
    era5, reflectance = year_files
    with xr.open_dataset(era5) as full:
        full.load().drop_sel(valid_time=pd.Timestamp("2019-05-10 12:00")).to_netcdf(tmp_path / "damaged.nc")
    with pytest.raises(DataError, match=r"the drivers' TA has gaps \(NaN\) at 3 land cell\(s\) .*first on 2019-05-10"):
        upscale_job(checkpoint, [str(tmp_path / "damaged.nc"), str(reflectance)], EVERGLADES, "2019-06-01",
                    "2019-06-30", tmp_path / "d.zarr", workers=0, chunk=CHUNK, progress=False)  # fmt: skip


def test_reflectance_and_clear_are_taken_at_the_cell_never_interpolated(tmp_path):
    lat, lon = np.array([46.0, 45.75, 45.5]), np.array([10.5, 10.75, 11.0])  # a coarse 0.25 deg store
    days = pd.date_range("2020-01-01", periods=2)
    values = np.arange(18, dtype=np.float32).reshape(2, 3, 3)
    ds = xr.Dataset({name: (("time", "lat", "lon"), values) for name in ("TA", "B01", "CLEAR")},
                    coords={"time": days, "lat": lat, "lon": lon})  # fmt: skip
    ds.to_zarr(tmp_path / "coarse.zarr", zarr_format=3, consolidated=True)
    row, col = grid.cell_index(45.675, 10.575)  # a cell centre; the nearest source point is 45.75 N, 10.5 E
    got = GridDrivers([str(tmp_path / "coarse.zarr")]).read(slice(row, row + 1), slice(col, col + 1), days)
    np.testing.assert_array_equal(got["CLEAR"][:, 0, 0], values[:, 1, 0])
    np.testing.assert_array_equal(got["B01"][:, 0, 0], values[:, 1, 0])
    wy, wx = (45.75 - 45.675) / 0.25, (10.575 - 10.5) / 0.25
    bilinear = (1 - wy) * ((1 - wx) * values[:, 1, 0] + wx * values[:, 1, 1]) + wy * (
        (1 - wx) * values[:, 2, 0] + wx * values[:, 2, 1]
    )
    np.testing.assert_allclose(got["TA"][:, 0, 0], bilinear, rtol=1e-6)


def test_a_local_cluster_gives_the_in_process_cube(cube, checkpoint, drivers, tmp_path):
    out = tmp_path / "cluster.zarr"
    summary = run(checkpoint, drivers, out, workers=2)
    assert summary.tiles_computed == 2
    got = xr.open_zarr(out)
    assert json.loads(got.attrs["tamrl_spec"]) == json.loads(cube[0].attrs["tamrl_spec"])
    for name in VARIABLES:
        np.testing.assert_allclose(got[name].values, cube[0][name].values, rtol=1e-5, atol=1e-6)


def test_a_job_of_one_tile_is_split_so_both_workers_compute_and_gives_the_same_cube(checkpoint, drivers, tmp_path):
    one_tile = {"chunk": (None, 8, 8), "tile_chunks": 2}  # the 16 x 8 cells of GARDA in one 16 x 16 tile
    alone = run(checkpoint, drivers, tmp_path / "alone.zarr", end="2020-03-10", **one_tile)
    tile = Tile("t", slice(0, 16), slice(0, 16), slice(0, 16), slice(0, 16))
    assert engine.parts([tile], slots=2) == 4  # 3 tasks per slot wanted; 256 cells allow 4 parts of 64
    split = run(checkpoint, drivers, tmp_path / "split.zarr", end="2020-03-10", workers=2, **one_tile)
    assert split.tiles_computed == 1 and split.slots == 2 and split.pixels_computed == alone.pixels_computed == 109
    assert 0 < split.model_seconds < split.seconds * 2
    a, b = xr.open_zarr(tmp_path / "alone.zarr"), xr.open_zarr(tmp_path / "split.zarr")
    for name in VARIABLES:
        np.testing.assert_allclose(b[name].values, a[name].values, rtol=1e-5, atol=1e-6)


def test_land_cells_without_a_koppen_group_take_the_nearest_one_or_are_skipped(monkeypatch):
    tile = Tile("t", slice(1000, 1004), slice(4000, 4004), slice(0, 4), slice(0, 4))
    pad = compute.KOPPEN_SEARCH  # the Koppen window reaches this many cells beyond the tile
    codes = np.zeros((4 + 2 * pad, 4 + 2 * pad), np.uint8)  # the window; the tile is [pad : pad + 4] both ways

    def fake_koppen(bbox):
        assert grid.bbox_slices(bbox) == (slice(1000 - pad, 1004 + pad), slice(4000 - pad, 4004 + pad))
        return xr.DataArray(codes.copy())

    monkeypatch.setattr(compute.static, "koppen", fake_koppen)
    codes[pad, pad - 3], codes[pad, pad + 1] = 2, 3  # B 3 cells west of tile cell (0, 0), C at tile cell (0, 1)
    filled = compute._koppen(tile)
    assert filled[0, 1] == 3 and filled[0, 0] == 3  # nearest: C at 1 cell rather than B at 3
    assert filled[3, 3] == 3  # C is 3.6 cells away, B 6.7
    codes[:] = 0
    codes[0, 0] = 2  # the window's corner: 14 cells from the nearest tile cell, beyond KOPPEN_SEARCH
    assert (compute._koppen(tile) == 0).all()


def test_a_cube_at_a_url_holds_its_quicklook(checkpoint, drivers):
    url = "memory://tamrl-engine-test/cube.zarr"
    summary = run(checkpoint, drivers, url, end="2020-03-05")
    assert summary.quicklook == f"{url}/quicklook.png"
    with fsspec.open(summary.quicklook, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert xr.open_zarr(url).attrs["tamrl_complete"] == 1


def test_progress_is_reported_and_stop_ends_the_job_between_tiles(cube, checkpoint, drivers, tmp_path):
    out, seen = tmp_path / "stopped.zarr", []
    report = lambda done, total: seen.append((done, total))  # noqa: E731
    with pytest.raises(engine.Cancelled, match="run it again to resume"):
        run(checkpoint, drivers, out, hooks=engine.JobHooks(on_progress=report, stop=lambda: len(seen) > 1))  # 1 tile
    assert seen == [(0, 2), (1, 2)], seen
    assert xr.open_zarr(out, consolidated=False).attrs["tamrl_complete"] == 0  # not marked complete
    seen.clear()
    summary = run(checkpoint, drivers, out, hooks=engine.JobHooks(on_progress=report))
    assert seen == [(1, 2), (2, 2)] and summary.tiles_computed == 1
    np.testing.assert_array_equal(xr.open_zarr(out).GPP.values, cube[0].GPP.values)


def test_a_precision_other_than_the_cube_s_is_refused(checkpoint, drivers, tmp_path):
    out = tmp_path / "cube.zarr"
    run(checkpoint, drivers, out, end="2020-03-05")
    assert xr.open_zarr(out).attrs["precision"] == "float32"
    with pytest.raises(ConfigError, match=r"precision: 'float32' -> 'bfloat16'"):
        run(checkpoint, drivers, out, end="2020-03-05", precision="bfloat16")


def test_canonical_drivers_in_other_units_are_refused(drivers, tmp_path):
    canonical = xr.Dataset({"TA": xr.open_zarr(drivers).t2m.isel(time=slice(0, 10)).load()})
    canonical["TA"].attrs = {"units": "K"}
    canonical.to_netcdf(tmp_path / "ta_kelvin.nc")
    with pytest.raises(DataError, match=r"TA in .* has units 'K'; the canonical drivers need degC"):
        GridDrivers([str(tmp_path / "ta_kelvin.nc")])
    canonical["TA"].attrs = {"units": "degree_Celsius"}
    canonical.to_netcdf(tmp_path / "ta_celsius.nc")
    assert "TA" in GridDrivers([str(tmp_path / "ta_celsius.nc")]).variables


def test_a_driver_url_whose_protocol_is_not_installed_is_a_one_line_error():
    with pytest.raises(DataError, match="install the fsspec package for its protocol"):
        GridDrivers(["gs://no-such-bucket/era5.nc"])


def test_devices_cuda_and_auto_run_where_there_is_a_gpu_and_fail_clearly_where_not(cube, checkpoint, drivers, tmp_path):
    with pytest.raises(ConfigError, match="float16 needs a GPU"):
        run(checkpoint, drivers, tmp_path / "half.zarr", device="cpu", precision="float16")
    if torch.cuda.is_available():  # a GPU machine: the cube on it agrees with the CPU's to float32 tolerance
        gpu = run(checkpoint, drivers, tmp_path / "gpu.zarr", device="cuda")
        np.testing.assert_allclose(xr.open_zarr(gpu.url).GPP.values, cube[0].GPP.values, rtol=1e-4, atol=1e-4)
    else:
        with pytest.raises(DataError, match="torch sees no GPU; use --device cpu"):
            run(checkpoint, drivers, tmp_path / "gpu.zarr", device="cuda")
        auto = run(checkpoint, drivers, tmp_path / "auto.zarr", device="auto")  # falls back to the CPU
        np.testing.assert_array_equal(xr.open_zarr(auto.url).GPP.values, cube[0].GPP.values)


@pytest.mark.parametrize(("cpu_max", "expected"), [("max 100000", None), ("50000 100000", 1), ("150000 100000", 2)])
def test_cores_follow_a_container_cpu_quota(cpu_max, expected, tmp_path, monkeypatch):
    import os

    path = tmp_path / "cpu.max"
    path.write_text(cpu_max + "\n")
    monkeypatch.setattr(cluster, "CGROUP_CPU_MAX", str(path))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert cluster.cores() == (expected or 4)


def test_dry_run_plans_the_job_and_writes_nothing(checkpoint, drivers, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["upscale", "--checkpoint", str(checkpoint), "--drivers", drivers, "--bbox", "10.4,45.4,11.2,45.8",
                 "--start", START, "--end", END, "--dry-run", "--workers", "4"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "tiles: 1; land pixels: 109" in printed and "days: 60 (6,540 pixel-days)" in printed
    # 16 x 8 cells of 11 driver variables, float32, over 90 + 60 run days and the support year 2019 (30 days shared)
    assert f"read: {16 * 8 * 11 * (150 + 365 - 30) * 4 / 1e6:,.1f} MB of daily driver values" in printed
    assert "estimated wall time with 4 worker(s):" in printed and "pixel-days/s per worker" in printed
    assert list(tmp_path.iterdir()) == []
    assert main(["upscale", "--checkpoint", str(checkpoint), "--drivers", drivers, "--bbox", "10.4,45.4,11.2,45.8",
                 "--start", START, "--end", END]) == 2  # fmt: skip
    assert "give --out" in capsys.readouterr().err


def test_a_bbox_west_or_south_of_zero_is_read_as_numbers(checkpoint, year_files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dry_run = ["upscale", "--checkpoint", str(checkpoint), "--drivers", *map(str, year_files), "--start", "2019-06-01",
               "--end", "2019-06-30", "--dry-run", "--workers", "1"]  # fmt: skip
    assert main([*dry_run, "--bbox", "-80.7,25.15,-80.6,25.25"]) == 0
    assert "tiles: 1; land pixels: 3 " in capsys.readouterr().out
    for bbox, cells in (("-180,-60,180,80", "lat -59.975..79.975, lon -179.975..179.975"),
                        ("-10,-5,-9,-4", "lat -4.975..-4.025, lon -9.975..-9.025")):  # fmt: skip
        assert main([*dry_run, "--bbox", bbox]) == 2  # parsed; the drivers cover Florida only
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"not the cells of {cells}; give drivers that cover the bbox" in err, err
    assert main([*dry_run, "--bbox", "-10,-5,-9"]) == 2
    assert capsys.readouterr().err == "tamrl upscale: error: --bbox '-10,-5,-9' must be 4 comma-separated numbers\n"
    assert list(tmp_path.iterdir()) == []


def test_a_job_s_dask_client_is_not_the_process_default():
    import dask.base
    import distributed

    with cluster.job_client(1, None) as client:
        assert client.status == "running"
        with pytest.raises(ValueError, match="No clients found"):
            distributed.default_client()
        assert dask.base.get_scheduler() is None  # queries in this process keep dask's own schedulers


def test_a_demo_tile_matches_the_engine_before_the_refactor(tmp_path):
    """The shipped checkpoint (2 members) over one demo tile of the demo's synthetic drivers, in this process,
    against the values the engine of commit 092df85 (before the job request and the split into parts) wrote, at
    100 cells for 30 days (tests/make_demo_tile_reference.py). On one machine the two engines agree bit for bit;
    across machines the CPU's float kernels change the last places, far below the tolerance."""
    import make_demo_tile_reference as reference

    ds = reference.compute(tmp_path, old_engine=False)
    expected = np.load(Path(__file__).parent / "data" / "demo_tile_reference.npz")
    assert set(expected.files) == set(DAILY)
    for name in DAILY:
        got = ds[name].values[reference.SAMPLE]
        assert np.isfinite(got).sum() == np.isfinite(expected[name]).sum() > 2000, name
        np.testing.assert_allclose(got, expected[name], rtol=0, atol=1e-4, err_msg=name)
