"""The readers on the real test data (tests/data): values, calendars, site selection and every bad-input error."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tamrl.data import (
    MODIS_FILE,
    load_carbonbench,
    load_fluxnet,
    read_site_list,
    read_sites_table,
    select_sites,
)
from tamrl.errors import DataError
from tamrl.features import BANDS, CARBONBENCH_ERA5, CARBONBENCH_MODIS, CLEAR, IGBP_CLASSES, KOPPEN_GROUPS

DATA = Path(__file__).parent / "data"
FLUXNET = DATA / "fluxnet2015"
MODIS = DATA / "modis" / MODIS_FILE
CARBONBENCH = DATA / "carbonbench"
SITE_IDS = ["AR-Vir", "AU-Emr", "AU-Fog", "CA-TPD", "DE-RuS"]  # the order of sites.csv
FLUX_COLUMNS = {"TA": "TA_F", "SW_IN": "SW_IN_F", "VPD": "VPD_F", "GPP": "GPP_NT_VUT_REF",
                "RECO": "RECO_NT_VUT_REF_APPROX", "NEE": "NEE_VUT_REF", "NEE_QC": "NEE_VUT_REF_QC"}  # fmt: skip


@pytest.fixture(scope="module")
def tower_sites():
    """The five test sites with tower meteorology only (no MODIS cut)."""
    return {s.site_id: s for s in load_fluxnet(FLUXNET)}


@pytest.fixture(scope="module")
def bench_sites():
    return {s.site_id: s for s in load_carbonbench(CARBONBENCH)}


def _table() -> pd.DataFrame:
    return pd.read_csv(FLUXNET / "sites.csv").set_index("site_id")


def _raw_daily(site_id: str) -> pd.DataFrame:
    """A daily file as written, -9999 kept, indexed by date."""
    raw = pd.read_csv(FLUXNET / _table().loc[site_id, "daily_file"])
    return raw.set_index(pd.to_datetime(raw["TIMESTAMP"].astype(str), format="%Y%m%d"))


def _copy_fluxnet(tmp_path: Path) -> Path:
    """A writable copy of tests/data/fluxnet2015 (the originals are read-only)."""
    return Path(shutil.copytree(FLUXNET, tmp_path / "fluxnet2015", copy_function=shutil.copyfile))


def _daily_path(root: Path, site_id: str) -> Path:
    return root / pd.read_csv(root / "sites.csv").set_index("site_id").loc[site_id, "daily_file"]


def _edit_daily(root: Path, site_id: str, edit) -> Path:
    path = _daily_path(root, site_id)
    edit(pd.read_csv(path)).to_csv(path, index=False)
    return path


def _edit_sites(root: Path, edit) -> None:
    path = root / "sites.csv"
    edit(pd.read_csv(path)).to_csv(path, index=False)


def _copy_carbonbench(tmp_path: Path) -> Path:
    return Path(shutil.copytree(CARBONBENCH, tmp_path / "carbonbench", copy_function=shutil.copyfile))


# ---------------------------------------------------------------------------------------------- load_fluxnet


def test_load_fluxnet_reads_every_site_with_its_attributes(tower_sites):
    assert list(tower_sites) == SITE_IDS
    table = _table()
    for site_id, site in tower_sites.items():
        row = table.loc[site_id]
        assert (site.lat, site.lon) == (pytest.approx(row["lat"]), pytest.approx(row["lon"]))
        assert (site.igbp, site.koppen) == (row["igbp"], row["koppen_major"])
        assert list(site.frame.columns) == ["TA", "SW_IN", "VPD", "GPP", "RECO", "NEE", "NEE_QC"]
        assert (site.frame.dtypes == np.float32).all()


def test_load_fluxnet_gives_a_continuous_daily_calendar(tower_sites):
    table = _table()
    for site_id, site in tower_sites.items():
        first, last = table.loc[site_id, "years"].split("-")
        expected = pd.date_range(f"{first}-01-01", f"{last}-12-31", freq="D")
        assert site.dates.equals(expected), site_id
        assert len(site.frame) == table.loc[site_id, "n_days"]


def test_dropped_days_become_nan_rows(tmp_path):
    root = _copy_fluxnet(tmp_path)
    _edit_daily(root, "AU-Emr", lambda raw: raw[~raw["TIMESTAMP"].isin([20110105, 20110106, 20120229])])
    (site,) = load_fluxnet(root, ["AU-Emr"])
    assert len(site.frame) == 1096 and (site.dates.to_series().diff().dropna() == pd.Timedelta("1D")).all()
    gaps = pd.to_datetime(["2011-01-05", "2011-01-06", "2012-02-29"])
    assert site.frame.loc[gaps].isna().all().all()
    assert site.frame.drop(gaps).notna().all().all()


def test_missing_values_are_read_as_nan(tower_sites):
    n_missing = 0
    for site_id, site in tower_sites.items():
        raw = _raw_daily(site_id)
        for name, column in FLUX_COLUMNS.items():
            missing = (raw[column] == -9999).to_numpy()
            n_missing += missing.sum()
            assert site.frame[name].isna().to_numpy().tolist() == missing.tolist(), (site_id, name)
        assert not (site.frame == -9999).any().any()
    # AR-Vir's first year has no fluxes (GPP, RECO, NEE, NEE_QC: 4 x 365 days of -9999); the drivers are complete.
    assert n_missing == 4 * 365
    assert tower_sites["AR-Vir"].frame.loc["2009", ["GPP", "RECO", "NEE", "NEE_QC"]].isna().all().all()
    assert tower_sites["AR-Vir"].frame.loc["2010-01-01":, ["GPP", "NEE"]].notna().all().all()


def test_a_day_holds_the_numbers_of_the_csv(tower_sites):
    # DE-RuS, 2011-01-02 (row 3 of its daily file):
    # 20110102,0.48174,0.0,32.8592,0.0,0.33454,0.0,0.17597,0.0,0.32179,0.30056,0.49776,48
    day = tower_sites["DE-RuS"].frame.loc["2011-01-02"]
    expected = {"TA": 0.48174, "SW_IN": 32.8592, "VPD": 0.33454, "NEE": 0.17597, "NEE_QC": 0.0,
                "GPP": 0.32179, "RECO": 0.49776}  # fmt: skip
    for name, value in expected.items():
        assert day[name] == pytest.approx(value, rel=1e-6, abs=1e-7), name


def test_every_value_equals_the_csv(tower_sites):
    for site_id, site in tower_sites.items():
        raw = _raw_daily(site_id).replace(-9999.0, np.nan)
        for name, column in FLUX_COLUMNS.items():
            np.testing.assert_allclose(
                site.frame[name].to_numpy(),
                raw[column].to_numpy(),
                rtol=1e-6,
                atol=1e-6,
                equal_nan=True,
                err_msg=f"{site_id} {name}",
            )


def test_reco_is_gpp_plus_nee(tower_sites):
    for site_id, site in tower_sites.items():
        f = site.frame
        present = f[["GPP", "RECO", "NEE"]].notna().all(axis=1)
        assert present.sum() >= 1096, site_id
        scale = f[["GPP", "RECO", "NEE"]].abs().max(axis=1)[present]
        residual = (f["RECO"] - (f["GPP"] + f["NEE"]))[present].abs()
        assert (residual <= 1e-5 + 4 * np.finfo(np.float32).eps * scale).all(), site_id


def test_modis_join_adds_bands_and_clear_within_the_modis_period(sites):
    modis = pd.read_csv(MODIS, parse_dates=["date"])
    assert [s.site_id for s in sites] == SITE_IDS
    for site in sites:
        f = site.frame
        assert list(f.columns) == ["TA", "SW_IN", "VPD", "GPP", "RECO", "NEE", "NEE_QC", *BANDS, CLEAR]
        assert (f.dtypes == np.float32).all()
        rows = modis[modis["site_id"] == site.site_id].set_index("date")
        assert site.dates.min() >= rows.index.min() and site.dates.max() <= rows.index.max()
        # Every MODIS row of the site's days is in the frame, value for value.
        rows = rows.loc[site.dates.min() : site.dates.max()]
        for band in BANDS:
            np.testing.assert_allclose(f.loc[rows.index, band], rows[f"refl_b{band[1:]}"], rtol=1e-6,
                                       equal_nan=True)  # fmt: skip
        np.testing.assert_array_equal(f.loc[rows.index, CLEAR], rows["clear"])
        # Days MODIS lacks are NaN, not cloudy zeros.
        absent = site.dates.difference(rows.index)
        assert f.loc[absent, [*BANDS, CLEAR]].isna().all().all()
    # A spot check: AR-Vir 2009-01-01 as in the MODIS csv.
    day = next(s for s in sites if s.site_id == "AR-Vir").frame.loc["2009-01-01"]
    row = modis[(modis["site_id"] == "AR-Vir") & (modis["date"] == "2009-01-01")].iloc[0]
    assert day["B04"] == pytest.approx(row["refl_b04"]) and day[CLEAR] == row["clear"]


def test_modis_join_cuts_the_record_to_the_modis_period(tmp_path, caplog):
    modis = pd.read_csv(MODIS)
    part = modis[(modis["site_id"] == "DE-RuS") & (modis["date"] >= "2012-03-01") & (modis["date"] <= "2013-10-31")]
    part.to_csv(tmp_path / "modis.csv", index=False)
    with caplog.at_level("WARNING", logger="tamrl.data"):
        (site,) = load_fluxnet(FLUXNET, ["DE-RuS"], modis=tmp_path / "modis.csv")
    assert site.dates.equals(pd.date_range("2012-03-01", "2013-10-31", freq="D"))
    assert "DE-RuS" in caplog.text and "851 flux days of 1 site(s) fall outside the MODIS record" in caplog.text
    # The kept days still carry the tower values.
    raw = _raw_daily("DE-RuS").loc["2012-03-01":"2013-10-31"]
    np.testing.assert_allclose(site.frame["TA"], raw["TA_F"], rtol=1e-6)


def test_sites_without_clear_modis_are_skipped(tmp_path, caplog):
    modis = pd.read_csv(MODIS)
    modis.loc[modis["site_id"] == "AU-Fog", "clear"] = 0
    modis[modis["site_id"].isin(["AU-Fog", "CA-TPD"])].to_csv(tmp_path / "modis.csv", index=False)
    with caplog.at_level("WARNING", logger="tamrl.data"):
        kept = load_fluxnet(FLUXNET, ["AU-Fog", "CA-TPD", "AR-Vir"], modis=tmp_path / "modis.csv")
    assert [s.site_id for s in kept] == ["CA-TPD"]
    assert "AU-Fog" in caplog.text and "AR-Vir" in caplog.text


def test_load_fluxnet_subset_keeps_the_requested_order():
    assert [s.site_id for s in load_fluxnet(FLUXNET, ["DE-RuS", "AU-Fog"])] == ["DE-RuS", "AU-Fog"]


def test_read_sites_table_indexes_by_site():
    table = read_sites_table(FLUXNET)
    assert list(table.index) == SITE_IDS
    assert table.loc["CA-TPD", "igbp"] == "DBF" and table.loc["CA-TPD", "koppen_major"] == "D"


# ------------------------------------------------------------------------------------------ load_carbonbench


def test_load_carbonbench_reads_the_fixture(bench_sites):
    assert list(bench_sites) == ["DE-RuS", "AU-Emr"]
    table = _table()
    for site_id, site in bench_sites.items():
        assert list(site.frame.columns) == [*CARBONBENCH_MODIS, *CARBONBENCH_ERA5, "GPP", "RECO", "NEE", "NEE_QC"]
        assert site.dates.equals(pd.date_range("2012-01-01", "2013-06-30", freq="D"))
        assert (site.frame.dtypes == np.float32).all()
        assert site.igbp == table.loc[site_id, "igbp"]
        assert site.lat == pytest.approx(table.loc[site_id, "lat"]) and site.lon == pytest.approx(
            table.loc[site_id, "lon"]
        )
    # The Koppen group is the first letter of the full code ("Cfb" -> C, "Bwk" -> B).
    assert (bench_sites["DE-RuS"].koppen, bench_sites["AU-Emr"].koppen) == ("C", "B")
    assert pd.read_parquet(CARBONBENCH / "target_fluxes.parquet").groupby("site")["koppen"].first().to_dict() == {
        "AU-Emr": "Bwk", "DE-RuS": "Cfb"
    }  # fmt: skip


def test_carbonbench_values_equal_the_sources(bench_sites):
    frame = bench_sites["DE-RuS"].frame
    raw = _raw_daily("DE-RuS").loc["2012-01-01":"2013-06-30"]
    np.testing.assert_allclose(frame["GPP"], raw["GPP_NT_VUT_REF"], rtol=1e-6)
    np.testing.assert_allclose(frame["NEE_QC"], raw["NEE_VUT_REF_QC"], rtol=1e-6)
    np.testing.assert_allclose(frame["temperature_2m"], raw["TA_F"] + 273.15, rtol=1e-6)
    np.testing.assert_allclose(frame["surface_net_solar_radiation_sum"], raw["SW_IN_F"] * 86400, rtol=1e-6)
    # A spot day: DE-RuS 2012-06-15, every source number.
    day, src = frame.loc["2012-06-15"], raw.loc["2012-06-15"]
    modis = pd.read_csv(MODIS, parse_dates=["date"])
    mrow = modis[(modis["site_id"] == "DE-RuS") & (modis["date"] == "2012-06-15")].iloc[0]
    assert day["RECO"] == pytest.approx(src["RECO_NT_VUT_REF_APPROX"], rel=1e-6)
    assert day["NEE"] == pytest.approx(src["NEE_VUT_REF"], rel=1e-6)
    assert day["sur_refl_b02"] == pytest.approx(mrow["refl_b02"], rel=1e-6)
    assert day["SolarZenith"] == pytest.approx(mrow["solar_zenith_deg"], rel=1e-6)
    assert day["cloud_fraction"] == 1 - mrow["clear"]


def test_carbonbench_days_without_modis_rows_are_nan(bench_sites):
    modis = pd.read_parquet(CARBONBENCH / "MOD09GA.parquet")
    have = pd.DatetimeIndex(modis.loc[modis["site"] == "AU-Emr", "TIMESTAMP"])
    frame = bench_sites["AU-Emr"].frame
    absent = frame.index.difference(have)
    assert len(absent) >= 1
    assert frame.loc[absent, list(CARBONBENCH_MODIS)].isna().all().all()
    assert frame.loc[absent, ["GPP", "temperature_2m"]].notna().all().all()


def test_carbonbench_fixture_documents_its_placeholders():
    import pyarrow.parquet as pq

    for name, columns in (("MOD09GA", {"SensorAzimuth", "SolarAzimuth"}),
                          ("ERA5", {"total_precipitation_sum", "total_evaporation_sum",
                                    "leaf_area_index_high_vegetation", "leaf_area_index_low_vegetation"})):  # fmt: skip
        meta = pq.read_schema(CARBONBENCH / f"{name}.parquet").metadata
        assert set(meta[b"placeholder_columns"].decode().split(",")) == columns
        assert b"ERA5-Land" in meta[b"note"]
        assert (pd.read_parquet(CARBONBENCH / f"{name}.parquet")[sorted(columns)] == 0.0).all().all()
    assert sum(p.stat().st_size for p in CARBONBENCH.glob("*.parquet")) < 300_000


def test_load_carbonbench_subset_and_unknown_sites():
    (site,) = load_carbonbench(CARBONBENCH, ["AU-Emr"])
    assert site.site_id == "AU-Emr"
    with pytest.raises(DataError, match=r"sites not in .*target_fluxes\.parquet: XX-Nop"):
        load_carbonbench(CARBONBENCH, ["AU-Emr", "XX-Nop"])


# ---------------------------------------------------------------------------------------------- select_sites


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_read_site_list_ignores_comments_and_blank_lines(tmp_path):
    path = _write(tmp_path / "s.txt", "# chosen sites\n\nDE-RuS   # a crop site\n  AR-Vir\n\n#AU-Fog\n")
    assert read_site_list(path) == ["DE-RuS", "AR-Vir"]


def test_sites_file_keeps_the_available_order(tmp_path):
    path = _write(tmp_path / "s.txt", "# chosen sites\n\nDE-RuS   # a crop site\n  AR-Vir\n\n#AU-Fog\n")
    assert select_sites(SITE_IDS, sites_file=path) == ["AR-Vir", "DE-RuS"]
    assert select_sites(SITE_IDS) == SITE_IDS


def test_exclude_file_removes_sites(tmp_path):
    exclude = _write(tmp_path / "x.txt", "AU-Emr\n# CA-TPD\nAU-Fog\n")
    assert select_sites(SITE_IDS, exclude_file=exclude) == ["AR-Vir", "CA-TPD", "DE-RuS"]
    keep = _write(tmp_path / "s.txt", "DE-RuS\nAU-Fog\nAR-Vir\n")
    assert select_sites(SITE_IDS, sites_file=keep, exclude_file=exclude) == ["AR-Vir", "DE-RuS"]


@pytest.mark.parametrize("option", ["sites_file", "exclude_file"])
def test_unknown_site_ids_are_named(tmp_path, option):
    path = _write(tmp_path / "s.txt", "DE-RuS\nZZ-Two\nAA-One\n")
    with pytest.raises(DataError, match=r"names 2 unknown site\(s\): AA-One, ZZ-Two; the data hold 5 sites"):
        select_sites(SITE_IDS, **{option: path})


def test_everything_excluded_is_an_error(tmp_path):
    exclude = _write(tmp_path / "x.txt", "\n".join(SITE_IDS))
    with pytest.raises(DataError, match="no sites left"):
        select_sites(SITE_IDS, exclude_file=exclude)
    keep = _write(tmp_path / "s.txt", "AU-Emr\n")
    exclude = _write(tmp_path / "y.txt", "AU-Emr\n")
    with pytest.raises(DataError, match="no sites left"):
        select_sites(SITE_IDS, sites_file=keep, exclude_file=exclude)
    empty = _write(tmp_path / "e.txt", "# nothing\n\n")
    with pytest.raises(DataError, match="no sites left"):
        select_sites(SITE_IDS, sites_file=empty)


def test_missing_sites_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r"sites file .*nope\.txt does not exist"):
        select_sites(SITE_IDS, sites_file=tmp_path / "nope.txt")


# ----------------------------------------------------------------------------------------------- bad inputs


def test_daily_file_missing_a_column(tmp_path):
    root = _copy_fluxnet(tmp_path)
    path = _edit_daily(root, "CA-TPD", lambda raw: raw.drop(columns=["VPD_F"]))
    with pytest.raises(DataError, match="lacks column") as err:
        load_fluxnet(root)
    assert "VPD_F" in str(err.value) and str(path) in str(err.value)


def test_site_with_all_drivers_missing(tmp_path):
    root = _copy_fluxnet(tmp_path)
    _edit_daily(root, "AU-Fog", lambda raw: raw.assign(TA_F=-9999.0, SW_IN_F=-9999.0, VPD_F=-9999.0))
    with pytest.raises(DataError, match=r"site AU-Fog: driver column\(s\) TA, SW_IN, VPD hold no values"):
        load_fluxnet(root)


def test_site_with_one_driver_missing(tmp_path):
    root = _copy_fluxnet(tmp_path)
    _edit_daily(root, "AU-Fog", lambda raw: raw.assign(SW_IN_F=-9999))
    with pytest.raises(DataError, match=r"site AU-Fog: driver column\(s\) SW_IN hold no values"):
        load_fluxnet(root)


def test_site_with_all_fluxes_missing(tmp_path):
    root = _copy_fluxnet(tmp_path)
    fluxes = ["GPP_NT_VUT_REF", "RECO_NT_VUT_REF_APPROX", "NEE_VUT_REF", "NEE_VUT_REF_QC"]
    _edit_daily(root, "CA-TPD", lambda raw: raw.assign(**dict.fromkeys(fluxes, -9999.0)))
    with pytest.raises(DataError, match="site CA-TPD: GPP, RECO and NEE are all missing"):
        load_fluxnet(root)


def test_unknown_igbp_code(tmp_path):
    root = _copy_fluxnet(tmp_path)
    _edit_sites(root, lambda t: t.assign(igbp=t["igbp"].where(t["site_id"] != "AU-Emr", "GRASS")))
    with pytest.raises(DataError, match="site AU-Emr: unknown IGBP class 'GRASS'") as err:
        load_fluxnet(root)
    assert ", ".join(IGBP_CLASSES) in str(err.value)


def test_unknown_koppen_group(tmp_path):
    root = _copy_fluxnet(tmp_path)
    _edit_sites(root, lambda t: t.assign(koppen_major=t["koppen_major"].where(t["site_id"] != "DE-RuS", "F")))
    with pytest.raises(DataError, match="site DE-RuS: unknown Koppen group 'F'") as err:
        load_fluxnet(root)
    assert ", ".join(KOPPEN_GROUPS) in str(err.value)


def test_unknown_koppen_group_in_carbonbench(tmp_path):
    root = _copy_carbonbench(tmp_path)
    path = root / "target_fluxes.parquet"
    table = pd.read_parquet(path)
    table.loc[table["site"] == "AU-Emr", "koppen"] = "Xyz"
    table.to_parquet(path)
    with pytest.raises(DataError, match="site AU-Emr: unknown Koppen group 'X'"):
        load_carbonbench(root)


def test_site_whose_daily_file_does_not_exist(tmp_path):
    root = _copy_fluxnet(tmp_path)
    path = _daily_path(root, "AU-Fog")
    path.unlink()
    with pytest.raises(DataError, match="site AU-Fog: daily file") as err:
        load_fluxnet(root)
    assert str(path) in str(err.value) and "does not exist" in str(err.value)


def test_requested_sites_not_in_sites_csv():
    with pytest.raises(DataError, match=r"sites not in .*sites\.csv: XX-One, XX-Two"):
        load_fluxnet(FLUXNET, ["DE-RuS", "XX-One", "XX-Two"])


def test_missing_sites_csv(tmp_path):
    with pytest.raises(DataError, match=r"sites\.csv not found"):
        load_fluxnet(tmp_path)
    with pytest.raises(DataError, match=r"sites\.csv not found"):
        read_sites_table(tmp_path)


def test_sites_csv_missing_a_column(tmp_path):
    root = _copy_fluxnet(tmp_path)
    _edit_sites(root, lambda t: t.drop(columns=["koppen_major"]))
    with pytest.raises(DataError, match=r"sites\.csv lacks column\(s\) koppen_major"):
        load_fluxnet(root)


def test_missing_modis_file(tmp_path):
    with pytest.raises(DataError, match=r"MODIS reflectance file .* not found"):
        load_fluxnet(FLUXNET, modis=tmp_path)


def test_modis_file_missing_a_column(tmp_path):
    pd.read_csv(MODIS).drop(columns=["clear"]).to_csv(tmp_path / "modis.csv", index=False)
    with pytest.raises(DataError, match=r"lacks column\(s\) clear"):
        load_fluxnet(FLUXNET, modis=tmp_path / "modis.csv")


@pytest.mark.parametrize("name", ["target_fluxes.parquet", "MOD09GA.parquet", "ERA5.parquet"])
def test_missing_carbonbench_table(tmp_path, name):
    root = _copy_carbonbench(tmp_path)
    (root / name).unlink()
    with pytest.raises(DataError, match=f"CarbonBench table .*{name} not found"):
        load_carbonbench(root)


@pytest.mark.parametrize(
    ("name", "column"),
    [("target_fluxes.parquet", "koppen"), ("target_fluxes.parquet", "NEE_VUT_USTAR50_QC"),
     ("MOD09GA.parquet", "sur_refl_b03"), ("ERA5.parquet", "temperature_2m")],
)  # fmt: skip
def test_carbonbench_table_missing_a_column(tmp_path, name, column):
    root = _copy_carbonbench(tmp_path)
    pd.read_parquet(root / name).drop(columns=[column]).to_parquet(root / name)
    with pytest.raises(DataError, match=f"{name} lacks column\\(s\\) {column}"):
        load_carbonbench(root)
