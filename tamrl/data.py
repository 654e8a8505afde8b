"""Readers for flux-tower data: FLUXNET2015-style daily files (+ MOD09GA at the towers) and CarbonBench tables.

Every reader returns ``Site`` records with one continuous daily frame each, in canonical column names and
physical units: the drivers of ``tamrl.features``, the targets GPP, RECO, NEE (g C m-2 d-1) and NEE_QC (0-1).
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tamrl.errors import DataError
from tamrl.features import (
    BANDS,
    CARBONBENCH_ERA5,
    CARBONBENCH_MODIS,
    CLEAR,
    IGBP_CLASSES,
    KOPPEN_GROUPS,
    MET,
    TARGETS,
)  # fmt: skip

log = logging.getLogger(__name__)

MISSING = -9999.0
FLUXNET_COLUMNS = {
    "TA_F": "TA", "SW_IN_F": "SW_IN", "VPD_F": "VPD", "GPP_NT_VUT_REF": "GPP",
    "RECO_NT_VUT_REF_APPROX": "RECO", "NEE_VUT_REF": "NEE", "NEE_VUT_REF_QC": "NEE_QC",
}  # fmt: skip
SITES_COLUMNS = ("site_id", "lat", "lon", "igbp", "koppen_major", "daily_file")
MODIS_FILE = "fluxnet2015_mod09ga_daily_2000_2014.csv.gz"
CARBONBENCH_TARGETS = {
    "GPP_NT_VUT_USTAR50": "GPP", "RECO_NT_VUT_USTAR50": "RECO",
    "NEE_VUT_USTAR50": "NEE", "NEE_VUT_USTAR50_QC": "NEE_QC",
}  # fmt: skip


@dataclass
class Site:
    """One location's daily record: drivers and (where measured) targets on a continuous calendar."""

    site_id: str
    lat: float
    lon: float
    igbp: str
    koppen: str
    frame: pd.DataFrame

    @property
    def dates(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(self.frame.index)


def read_site_list(path: str | Path) -> list[str]:
    """Site ids from a text file, one per line; blank lines and ``#`` comments are ignored."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"sites file {path} does not exist")
    ids = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return [i for i in ids if i]


def select_sites(
    available: list[str], sites_file: str | Path | None = None, exclude_file: str | Path | None = None
) -> list[str]:
    """Apply ``--sites-file`` and ``--exclude-sites-file`` to the available site ids, keeping their order."""
    chosen = list(available)
    for path, keep in ((sites_file, True), (exclude_file, False)):
        if path is None:
            continue
        named = read_site_list(path)
        unknown = sorted(set(named) - set(available))
        if unknown:
            raise DataError(
                f"{path} names {len(unknown)} unknown site(s): {', '.join(unknown[:10])}"
                f"{' ...' if len(unknown) > 10 else ''}; the data hold {len(available)} sites"
            )
        chosen = [s for s in chosen if (s in named) == keep]
    if not chosen:
        raise DataError("no sites left after applying the sites file and the exclusion file")
    return chosen


def read_sites_table(root: str | Path) -> pd.DataFrame:
    """The FLUXNET2015-style ``sites.csv`` of ``root``, checked for the columns the readers use."""
    path = Path(root) / "sites.csv"
    if not path.is_file():
        raise DataError(f"{path} not found: a FLUXNET2015-style folder holds sites.csv and daily/*.csv")
    table = pd.read_csv(path)
    require_columns(table, SITES_COLUMNS, str(path))
    repeated = table["site_id"][table["site_id"].duplicated()].tolist()
    if repeated:
        raise DataError(f"{path} lists site(s) more than once: {', '.join(map(str, repeated))}")
    blank = table[list(SITES_COLUMNS)].isna().any(axis=1)
    if blank.any():
        raise DataError(f"{path}: site(s) {', '.join(map(str, table['site_id'][blank]))} have blank required fields "
                        f"({', '.join(SITES_COLUMNS)})")
    return table.set_index("site_id", drop=False)


def load_fluxnet(
    root: str | Path,
    site_ids: list[str] | None = None,
    modis: str | Path | None = None,
) -> list[Site]:
    """Read FLUXNET2015-style daily files; with ``modis`` (a file or folder), join MOD09GA reflectance.

    With reflectance, each site's record is cut to the MODIS period (days outside it are counted in a warning).
    """
    table = read_sites_table(root)
    ids = list(table.index) if site_ids is None else site_ids
    unknown = [s for s in ids if s not in table.index]
    if unknown:
        raise DataError(f"sites not in {Path(root) / 'sites.csv'}: {', '.join(unknown)}")
    reflectance = _read_modis(modis, ids) if modis is not None else None
    sites, cut = [], {}
    for site_id in ids:
        row = table.loc[site_id]
        frame = _read_daily(Path(root) / row["daily_file"], site_id)
        if reflectance is not None:
            frame, cut[site_id] = _join_modis(frame, reflectance.get(site_id), site_id)
            if frame is None:
                continue
        sites.append(_make_site(site_id, row["lat"], row["lon"], row["igbp"], row["koppen_major"], frame))
    cut = {s: n for s, n in cut.items() if n}
    if cut:
        log.warning("%d flux days of %d site(s) fall outside the MODIS record and were dropped (most: %s)",
                    sum(cut.values()), len(cut), ", ".join(f"{s} {n}" for s, n in sorted(
                        cut.items(), key=lambda kv: -kv[1])[:5]))
    return sites


def load_carbonbench(root: str | Path, site_ids: list[str] | None = None) -> list[Site]:
    """Read the CarbonBench tables ``target_fluxes.parquet``, ``MOD09GA.parquet`` and ``ERA5.parquet``.

    The tables are keyed by ``TIMESTAMP`` and ``site``. Koppen groups come from a ``koppen`` column of the
    target table (the first letter of a Koppen-Geiger code is enough).
    """
    root = Path(root)
    targets = _read_parquet(root / "target_fluxes.parquet",
                            ("TIMESTAMP", "site", "lat", "lon", "IGBP", "koppen", *CARBONBENCH_TARGETS))
    modis = _read_parquet(root / "MOD09GA.parquet", ("TIMESTAMP", "site", *CARBONBENCH_MODIS))
    era5 = _read_parquet(root / "ERA5.parquet", ("TIMESTAMP", "site", *CARBONBENCH_ERA5))
    merged = targets.merge(modis, on=["site", "TIMESTAMP"], how="left").merge(
        era5, on=["site", "TIMESTAMP"], how="left"
    )
    merged = merged.rename(columns=CARBONBENCH_TARGETS)
    available = list(dict.fromkeys(merged["site"]))
    ids = available if site_ids is None else site_ids
    unknown = [s for s in ids if s not in available]
    if unknown:
        raise DataError(f"sites not in {root / 'target_fluxes.parquet'}: {', '.join(unknown)}")
    groups = dict(list(merged[merged["site"].isin(ids)].groupby("site", sort=False)))
    sites = []
    for site_id in ids:
        group = groups[site_id]
        first = group.iloc[0]
        if pd.isna(first["koppen"]) or not str(first["koppen"]).strip():
            raise DataError(f"site {site_id}: the koppen column of target_fluxes.parquet is empty")
        frame = group.set_index("TIMESTAMP")[[*CARBONBENCH_MODIS, *CARBONBENCH_ERA5, *TARGETS, "NEE_QC"]]
        frame = daily_calendar(frame.sort_index(), site_id)
        sites.append(_make_site(str(site_id), first["lat"], first["lon"], first["IGBP"], str(first["koppen"]), frame))
    return sites


def _make_site(site_id: str, lat: float, lon: float, igbp: str, koppen: str, frame: pd.DataFrame) -> Site:
    koppen = koppen.strip()[:1].upper()
    if igbp not in IGBP_CLASSES:
        raise DataError(f"site {site_id}: unknown IGBP class {igbp!r}; valid: {', '.join(IGBP_CLASSES)}")
    if koppen not in KOPPEN_GROUPS:
        raise DataError(f"site {site_id}: unknown Koppen group {koppen!r}; valid: {', '.join(KOPPEN_GROUPS)}")
    drivers = [c for c in frame.columns if c not in (*TARGETS, "NEE_QC", CLEAR)]
    if frame[drivers].isna().all().any():
        empty = [c for c in drivers if frame[c].isna().all()]
        raise DataError(f"site {site_id}: driver column(s) {', '.join(empty)} hold no values at all")
    if frame[list(TARGETS)].isna().all().all():
        raise DataError(f"site {site_id}: GPP, RECO and NEE are all missing; remove the site or fix its file")
    return Site(site_id, float(lat), float(lon), str(igbp), str(koppen), frame)


def _read_daily(path: Path, site_id: str) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"site {site_id}: daily file {path} does not exist")
    try:
        raw = pd.read_csv(path, na_values=[MISSING, str(int(MISSING))])
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"site {site_id}: {path} is not a readable CSV ({exc})") from exc
    require_columns(raw, ("TIMESTAMP", *FLUXNET_COLUMNS), str(path))
    if raw.empty:
        raise DataError(f"site {site_id}: {path} holds no rows")
    frame = raw.rename(columns=FLUXNET_COLUMNS)
    try:
        frame.index = pd.to_datetime(raw["TIMESTAMP"].astype(str), format="%Y%m%d")
        return daily_calendar(frame[[*MET, *TARGETS, "NEE_QC"]], site_id)
    except ValueError as exc:
        raise DataError(f"site {site_id}: {path} has a malformed TIMESTAMP (YYYYMMDD) or value: {exc}") from exc


def daily_calendar(frame: pd.DataFrame, site_id: str) -> pd.DataFrame:
    """Put a frame on a continuous daily calendar (dropped days become NaN rows)."""
    if frame.index.has_duplicates:
        raise DataError(f"site {site_id}: duplicate dates in its daily record")
    calendar = pd.date_range(frame.index.min(), frame.index.max(), freq="D", name="date")
    return frame.reindex(calendar).astype(np.float32)


def _read_modis(path: str | Path, site_ids: list[str]) -> dict[str, pd.DataFrame]:
    path = Path(path)
    path = path / MODIS_FILE if path.is_dir() else path
    if not path.is_file():
        raise DataError(f"MODIS reflectance file {path} not found (expected {MODIS_FILE})")
    columns = ["site_id", "date", *(f"refl_b{b[1:]}" for b in BANDS), "clear"]
    raw = pd.read_csv(path, usecols=lambda c: c in columns)
    require_columns(raw, columns, str(path))
    raw = raw[raw["site_id"].isin(site_ids)]
    raw = raw.rename(columns={f"refl_b{b[1:]}": b for b in BANDS} | {"clear": CLEAR})
    raw["date"] = pd.to_datetime(raw["date"])
    out = {}
    for site_id, group in raw.groupby("site_id"):
        group = group.set_index("date").sort_index()
        if group.index.has_duplicates:
            raise DataError(f"{path}: site {site_id} has more than one MODIS row for some dates")
        out[site_id] = group[[*BANDS, CLEAR]]
    return out


def _join_modis(frame: pd.DataFrame, modis: pd.DataFrame | None, site_id: str) -> tuple[pd.DataFrame | None, int]:
    """The site's frame cut to its MODIS record with the reflectance joined, and the flux days cut off."""
    flux_days = int(frame[list(TARGETS)].notna().any(axis=1).sum())
    if modis is None or not (modis[CLEAR] > 0).any():
        log.warning("site %s: no clear MODIS day; skipped for reflectance feature sets", site_id)
        return None, flux_days
    start, end = max(frame.index.min(), modis.index.min()), min(frame.index.max(), modis.index.max())
    if start > end:
        log.warning("site %s: flux years do not overlap MODIS (2000-2014); skipped", site_id)
        return None, flux_days
    cut = frame.loc[start:end]
    if not (modis.loc[start:end, CLEAR] > 0).any():
        log.warning("site %s: no clear MODIS day during its flux years; skipped for reflectance feature sets",
                    site_id)
        return None, flux_days
    dropped = flux_days - int(cut[list(TARGETS)].notna().any(axis=1).sum())
    return cut.join(modis.reindex(cut.index).astype(np.float32)), dropped


def _read_parquet(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"CarbonBench table {path} not found")
    table = pd.read_parquet(path)
    require_columns(table, columns, str(path))
    table = table[list(columns)].copy()
    try:
        table["TIMESTAMP"] = pd.to_datetime(table["TIMESTAMP"]).dt.tz_localize(None)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: TIMESTAMP is not a date column ({exc})") from exc
    return table


def require_columns(frame: pd.DataFrame, columns: tuple[str, ...] | list[str], where: str) -> None:
    """Raise a DataError naming every column of ``columns`` that ``frame`` lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{where} lacks column(s) {', '.join(missing)}")


def join_sites(frame: pd.DataFrame, sites: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """``frame`` with ``columns`` (e.g. igbp, koppen) of each of its sites, from a ``sites`` table keyed by ``site``.

    Evaluation summaries and plots group per-site skill by these classes, so a site the table lacks, or describes
    twice differently, is a DataError rather than a row silently dropped or taken from the first description.
    """
    require_columns(sites, ("site", *columns), "sites")
    if sites.empty:
        raise DataError("sites is empty; nothing to evaluate")
    table = sites.loc[:, ["site", *columns]].drop_duplicates()
    if table["site"].duplicated().any():
        raise DataError(f"sites describes some site twice with different {' or '.join(columns)}")
    unknown = sorted(set(frame["site"]) - set(table["site"]))
    if unknown:
        raise DataError(f"sites lacks {len(unknown)} evaluated sites, e.g. {unknown[:5]}")
    return frame.merge(table, on="site", how="left")
