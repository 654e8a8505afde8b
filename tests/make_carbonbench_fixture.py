"""Write the CarbonBench test fixture under tests/data/carbonbench from the real FLUXNET2015/MOD09GA test data.

Run once from the repository root and commit the outputs::

    python tests/make_carbonbench_fixture.py

It writes three small parquet tables in the CarbonBench schema that ``tamrl.data.load_carbonbench`` reads, for
the sites and days of ``SITES`` (two real sites, 18 months each; about 130 KB in all). Every value is a real
FLUXNET2015 or MOD09GA value taken from ``tests/data/fluxnet2015`` and ``tests/data/modis``, re-keyed:

``target_fluxes.parquet`` (one row per calendar day of the window, as in the daily file):
    TIMESTAMP (datetime), site, lat, lon, IGBP (sites.csv ``igbp``), koppen (sites.csv ``koppen``, the full
    Koppen-Geiger code such as "Cfb"; the reader keeps the first letter), GPP_NT_VUT_USTAR50 <- GPP_NT_VUT_REF,
    RECO_NT_VUT_USTAR50 <- RECO_NT_VUT_REF_APPROX, NEE_VUT_USTAR50 <- NEE_VUT_REF,
    NEE_VUT_USTAR50_QC <- NEE_VUT_REF_QC; -9999 becomes NaN.
``MOD09GA.parquet`` (the MODIS rows of the window; days MODIS lacks stay absent):
    TIMESTAMP, site, sur_refl_b01..b07 <- refl_b01..b07, SensorZenith <- sensor_zenith_deg,
    SolarZenith <- solar_zenith_deg, cloud_fraction <- 1 - clear.
``ERA5.parquet`` (one row per day of the window; the tower meteorology stands in for ERA5-Land):
    TIMESTAMP, site, temperature_2m <- TA_F + 273.15 (K),
    surface_net_solar_radiation_sum <- SW_IN_F * 86400 (J m-2 d-1; tower incoming shortwave standing in).

Columns with no real counterpart here are filled with the constant ``PLACEHOLDER`` (0.0): SensorAzimuth and
SolarAzimuth (MOD09GA), total_precipitation_sum, total_evaporation_sum, leaf_area_index_high_vegetation and
leaf_area_index_low_vegetation (ERA5). Each parquet file lists its placeholder columns in its key-value schema
metadata (``placeholder_columns``, comma-separated, and a ``note``), so nobody mistakes them for data.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

DATA = Path(__file__).parent / "data"
FLUXNET = DATA / "fluxnet2015"
MODIS = DATA / "modis" / "fluxnet2015_mod09ga_daily_2000_2014.csv.gz"
OUT = DATA / "carbonbench"

SITES = ("DE-RuS", "AU-Emr")
START, END = "2012-01-01", "2013-06-30"
MISSING = -9999.0
PLACEHOLDER = 0.0
MODIS_PLACEHOLDERS = ("SensorAzimuth", "SolarAzimuth")
ERA5_PLACEHOLDERS = (
    "total_precipitation_sum", "total_evaporation_sum",
    "leaf_area_index_high_vegetation", "leaf_area_index_low_vegetation",
)  # fmt: skip
NOTE = (
    "real FLUXNET2015/MOD09GA values re-keyed into the CarbonBench schema; tower values stand in for ERA5-Land; "
    f"placeholder columns hold the constant {PLACEHOLDER} (no real value available). "
    "Written by tests/make_carbonbench_fixture.py."
)


def _daily(site: pd.Series) -> pd.DataFrame:
    raw = pd.read_csv(FLUXNET / site["daily_file"])
    raw = raw.replace(MISSING, np.nan)
    raw["TIMESTAMP"] = pd.to_datetime(raw["TIMESTAMP"].astype(str), format="%Y%m%d")
    return raw[(raw["TIMESTAMP"] >= START) & (raw["TIMESTAMP"] <= END)].reset_index(drop=True)


def build() -> dict[str, tuple[pd.DataFrame, tuple[str, ...]]]:
    """The three tables and the placeholder columns of each."""
    table = pd.read_csv(FLUXNET / "sites.csv").set_index("site_id")
    modis = pd.read_csv(MODIS)
    modis["date"] = pd.to_datetime(modis["date"])
    targets, reflectance, era5 = [], [], []
    for site_id in SITES:
        row = table.loc[site_id]
        daily = _daily(row)
        targets.append(pd.DataFrame({
            "TIMESTAMP": daily["TIMESTAMP"], "site": site_id, "lat": float(row["lat"]), "lon": float(row["lon"]),
            "IGBP": row["igbp"], "koppen": row["koppen"],
            "GPP_NT_VUT_USTAR50": daily["GPP_NT_VUT_REF"], "RECO_NT_VUT_USTAR50": daily["RECO_NT_VUT_REF_APPROX"],
            "NEE_VUT_USTAR50": daily["NEE_VUT_REF"], "NEE_VUT_USTAR50_QC": daily["NEE_VUT_REF_QC"],
        }))  # fmt: skip
        era5.append(pd.DataFrame({
            "TIMESTAMP": daily["TIMESTAMP"], "site": site_id,
            "temperature_2m": daily["TA_F"] + 273.15,
            "total_precipitation_sum": PLACEHOLDER,
            "surface_net_solar_radiation_sum": daily["SW_IN_F"] * 86400.0,
            **dict.fromkeys(ERA5_PLACEHOLDERS[1:], PLACEHOLDER),
        }))  # fmt: skip
        m = modis[(modis["site_id"] == site_id) & (modis["date"] >= START) & (modis["date"] <= END)]
        m = m.reset_index(drop=True)
        reflectance.append(pd.DataFrame({
            "TIMESTAMP": m["date"], "site": site_id,
            **{f"sur_refl_b0{i}": m[f"refl_b0{i}"] for i in range(1, 8)},
            "SensorZenith": m["sensor_zenith_deg"], "SensorAzimuth": PLACEHOLDER,
            "SolarZenith": m["solar_zenith_deg"], "SolarAzimuth": PLACEHOLDER,
            "cloud_fraction": 1.0 - m["clear"].astype(float),
        }))  # fmt: skip
    return {
        "target_fluxes.parquet": (pd.concat(targets, ignore_index=True), ()),
        "MOD09GA.parquet": (pd.concat(reflectance, ignore_index=True), MODIS_PLACEHOLDERS),
        "ERA5.parquet": (pd.concat(era5, ignore_index=True), ERA5_PLACEHOLDERS),
    }


def write(frame: pd.DataFrame, placeholders: tuple[str, ...], path: Path) -> None:
    """Write ``frame`` with the provenance note and its placeholder columns in the schema metadata."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"note"] = NOTE.encode()
    meta[b"placeholder_columns"] = ",".join(placeholders).encode()
    pq.write_table(table.replace_schema_metadata(meta), path, compression="zstd")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (frame, placeholders) in build().items():
        write(frame, placeholders, OUT / name)
        print(f"{OUT / name}: {len(frame)} rows, {(OUT / name).stat().st_size} bytes")


if __name__ == "__main__":
    main()
