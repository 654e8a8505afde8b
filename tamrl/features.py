"""The feature schema: one declaration of every feature set, used at towers and on the grid alike.

A feature set names the raw daily driver variables it needs (canonical names, physical units) and turns them
into the model's inputs: dynamic features (one value per day) and static features (one vector per location).
The gridded engine calls the same functions on (time, pixel) arrays, so towers and pixels get identical inputs.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tamrl.errors import DataError
from tamrl.gapfill import fill_over_time

TARGETS = ("GPP", "RECO", "NEE")
TARGET_UNITS = "g m-2 d-1"

# MCD12C1 IGBP classes, in code order 1..16 (0 is water).
IGBP_CLASSES = (
    "ENF", "EBF", "DNF", "DBF", "MF", "CSH", "OSH", "WSA",
    "SAV", "GRA", "WET", "CRO", "URB", "CVM", "SNO", "BSV",
)  # fmt: skip
KOPPEN_GROUPS = ("A", "B", "C", "D", "E")

MET = ("TA", "SW_IN", "VPD")
BANDS = tuple(f"B{i:02d}" for i in range(1, 8))
CLEAR = "CLEAR"
CARBONBENCH_MODIS = (
    *(f"sur_refl_b0{i}" for i in range(1, 8)),
    "SensorZenith", "SensorAzimuth", "SolarZenith", "SolarAzimuth", "cloud_fraction",
)  # fmt: skip
CARBONBENCH_ERA5 = (
    "temperature_2m", "total_precipitation_sum", "surface_net_solar_radiation_sum",
    "total_evaporation_sum", "leaf_area_index_high_vegetation", "leaf_area_index_low_vegetation",
)  # fmt: skip

MAX_CLEAR_GAP = 365.0  # days; the staleness feature saturates at a year

DRIVER_UNITS = {
    "TA": "degC", "SW_IN": "W m-2", "VPD": "hPa", **{b: "1 (reflectance)" for b in BANDS},
    CLEAR: "1 = clear-sky MODIS observation",
}  # fmt: skip


@dataclass(frozen=True)
class FeatureSet:
    """A named set of model inputs and the raw drivers it is built from."""

    name: str
    drivers: tuple[str, ...]
    reflectance: bool
    use_lon: bool
    description: str

    @property
    def required(self) -> tuple[str, ...]:
        """Raw daily columns the data must supply (reflectance sets also need the clear-sky flag)."""
        return (*self.drivers, CLEAR) if self.reflectance else self.drivers

    @property
    def dynamic_names(self) -> list[str]:
        names = [*self.drivers, "DOY_SIN", "DOY_COS"]
        return [*names, "CLEAR_GAP"] if self.reflectance else names

    @property
    def static_names(self) -> list[str]:
        geo = ["LAT", "LON_SIN", "LON_COS"] if self.use_lon else ["LAT"]
        return [*geo, *(f"IGBP_{c}" for c in IGBP_CLASSES), *(f"KOPPEN_{g}" for g in KOPPEN_GROUPS)]


FEATURE_SETS: dict[str, FeatureSet] = {
    fs.name: fs
    for fs in (
        FeatureSet("met", MET, False, False, "tower or ERA5 meteorology: TA, SW_IN, VPD"),
        FeatureSet(
            "modis_met", (*MET, *BANDS), True, False,
            "meteorology plus daily MOD09GA reflectance b01-b07 (clear days, gap-filled, with days-to-clear)",
        ),
        FeatureSet(
            "carbonbench", (*CARBONBENCH_MODIS, *CARBONBENCH_ERA5), False, True,
            "the CarbonBench MOD09GA and ERA5-Land daily tables",
        ),
    )
}


def feature_set(name: str) -> FeatureSet:
    """Look up a feature set by name, with an error listing the valid names."""
    if name not in FEATURE_SETS:
        raise DataError(f"unknown feature set {name!r}; choose one of {', '.join(FEATURE_SETS)}")
    return FEATURE_SETS[name]


def check_drivers(fs: FeatureSet, available: list[str] | tuple[str, ...], where: str) -> None:
    """Raise a DataError naming every driver ``fs`` needs that ``available`` lacks."""
    missing = [v for v in fs.required if v not in available]
    if missing:
        raise DataError(
            f"{where} cannot supply feature set {fs.name!r}: missing {', '.join(missing)} "
            f"(it needs {', '.join(fs.required)})"
        )


def dynamic_features(fs: FeatureSet, drivers: Mapping[str, np.ndarray], dates: pd.DatetimeIndex) -> np.ndarray:
    """Daily model inputs, shape (time, ..., n_dynamic), float32.

    ``drivers`` maps each of ``fs.required`` to an array of shape (time, ...): one series for a tower, a
    (time, pixel) block on the grid. Gaps (NaN, and reflectance on cloudy days) are filled over time; the
    reflectance sets add CLEAR_GAP = log1p(days to the nearest clear day, at most 365) so the model knows
    what was filled.
    """
    check_drivers(fs, list(drivers), "the drivers")
    shape = np.shape(drivers[fs.drivers[0]])
    if shape[0] != len(dates):
        raise DataError(f"drivers have {shape[0]} days but {len(dates)} dates were given")
    columns = []
    met = [v for v in fs.drivers if v not in BANDS]
    for name in met:
        values = np.asarray(drivers[name], dtype=np.float32)
        columns.append(fill_over_time(values, np.isfinite(values))[0])
    doy = 2 * np.pi * (dates.day_of_year.to_numpy() - 1) / 365.25
    pad = (len(dates),) + (1,) * (len(shape) - 1)
    columns.append(np.broadcast_to(np.sin(doy).reshape(pad), shape).astype(np.float32))
    columns.append(np.broadcast_to(np.cos(doy).reshape(pad), shape).astype(np.float32))
    if fs.reflectance:
        bands = np.stack([np.asarray(drivers[b], dtype=np.float32) for b in BANDS], axis=-1)
        clear = (np.asarray(drivers[CLEAR]) > 0) & np.isfinite(bands).all(axis=-1)
        filled, gap = fill_over_time(bands, clear)
        columns = columns[: len(met)] + [filled[..., i] for i in range(len(BANDS))] + columns[len(met) :]
        columns.append(np.log1p(np.minimum(gap, MAX_CLEAR_GAP)))
    return np.stack(columns, axis=-1).astype(np.float32)


def static_features(fs: FeatureSet, lat: float, lon: float, igbp: str, koppen: str) -> np.ndarray:
    """The location's static inputs: scaled latitude (and longitude), IGBP and Koppen one-hots."""
    if igbp not in IGBP_CLASSES:
        raise DataError(f"unknown IGBP class {igbp!r}; valid classes are {', '.join(IGBP_CLASSES)}")
    if koppen not in KOPPEN_GROUPS:
        raise DataError(f"unknown Koppen group {koppen!r}; valid groups are {', '.join(KOPPEN_GROUPS)}")
    if not (-90 <= lat <= 90 and -180 <= lon <= 360):
        raise DataError(f"location lat={lat}, lon={lon} is outside the globe")
    geo = [lat / 90.0]
    if fs.use_lon:
        geo += [np.sin(np.radians(lon)), np.cos(np.radians(lon))]
    one_igbp = np.eye(len(IGBP_CLASSES))[IGBP_CLASSES.index(igbp)]
    one_koppen = np.eye(len(KOPPEN_GROUPS))[KOPPEN_GROUPS.index(koppen)]
    return np.concatenate([geo, one_igbp, one_koppen]).astype(np.float32)
