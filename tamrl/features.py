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
TARGET_UNITS = "g C m-2 d-1"  # how every answer, header and label states a flux
# the units attribute of a cube's fluxes: UDUNITS reads "C" as coulomb, so CF files state grams and say "of carbon"
# in the long name and standard name
CF_UNITS = "g m-2 d-1"

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
TRAILING_DAYS = (7, 30, 90)  # FLUXCOM-X-style temporal context: trailing means of every meteorological driver
INDICES = ("NDVI", "EVI", "NIRV")  # from the gap-filled red (B01), NIR (B02) and blue (B03) reflectance

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
    context: bool = False

    @property
    def met(self) -> tuple[str, ...]:
        """The meteorological drivers (every driver that is not a reflectance band)."""
        return tuple(v for v in self.drivers if v not in BANDS)

    @property
    def required(self) -> tuple[str, ...]:
        """Raw daily columns the data must supply (reflectance sets also need the clear-sky flag)."""
        return (*self.drivers, CLEAR) if self.reflectance else self.drivers

    @property
    def dynamic_names(self) -> list[str]:
        names = [*self.drivers, "DOY_SIN", "DOY_COS"]
        if self.reflectance:
            names.append("CLEAR_GAP")
        if self.context:
            names += [f"{v}_MEAN{n}" for v in self.met for n in TRAILING_DAYS]
            if self.reflectance:
                names += [*INDICES, *(f"{i}_MEAN30" for i in INDICES), "DAYS_SINCE_CLEAR"]
        return names

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
            "met_context", MET, False, False,
            "met plus FLUXCOM-X-style temporal context: 7-, 30- and 90-day trailing means of TA, SW_IN and VPD",
            context=True,
        ),
        FeatureSet(
            "modis_met_context", (*MET, *BANDS), True, False,
            "modis_met plus FLUXCOM-X-style temporal context: 7-, 30- and 90-day trailing means of TA, SW_IN and "
            "VPD, NDVI, EVI and NIRv with their 30-day trailing means, and days since the last clear view",
            context=True,
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
    met = {name: fill_over_time(*_with_valid(drivers[name]))[0] for name in fs.met}
    doy = 2 * np.pi * (dates.day_of_year.to_numpy() - 1) / 365.25
    pad = (len(dates),) + (1,) * (len(shape) - 1)
    seasonal = [np.broadcast_to(f(doy).reshape(pad), shape).astype(np.float32) for f in (np.sin, np.cos)]
    columns = [*met.values(), *seasonal]
    if fs.reflectance:
        bands = np.stack([np.asarray(drivers[b], dtype=np.float32) for b in BANDS], axis=-1)
        clear = (np.asarray(drivers[CLEAR]) > 0) & np.isfinite(bands).all(axis=-1)
        filled, gap = fill_over_time(bands, clear)
        columns = [*met.values(), *np.moveaxis(filled, -1, 0), *seasonal, np.log1p(np.minimum(gap, MAX_CLEAR_GAP))]
    if fs.context:
        columns += [trailing_mean(v, n) for v in met.values() for n in TRAILING_DAYS]
        if fs.reflectance:
            indices = vegetation_indices(filled)
            columns += [*indices, *(trailing_mean(i, 30) for i in indices)]
            columns.append(np.log1p(np.minimum(days_since(clear), MAX_CLEAR_GAP)))
    return np.stack(columns, axis=-1).astype(np.float32)


def _with_valid(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values, dtype=np.float32)
    return values, np.isfinite(values)


def trailing_mean(values: np.ndarray, days: int) -> np.ndarray:
    """Mean over the ``days`` days ending on each day (fewer at the start of the record), along axis 0.

    Causal, as FLUXCOM-X's temporal context: a day's value never depends on later days. The gridded engine runs
    from SPINUP_DAYS before the period, so the first predicted day already has a full 90-day window.
    """
    values = np.asarray(values, dtype=np.float64)
    total = np.cumsum(values, axis=0)
    lagged = np.zeros_like(total)
    lagged[days:] = total[:-days]
    count = np.minimum(np.arange(1, len(values) + 1), days).reshape((-1,) + (1,) * (values.ndim - 1))
    return ((total - lagged) / count).astype(np.float32)


def vegetation_indices(bands: np.ndarray) -> list[np.ndarray]:
    """NDVI, EVI and NIRv from reflectance (..., 7 bands in B01..B07 order): the FLUXCOM-X remote-sensing inputs."""
    red, nir, blue = bands[..., 0], bands[..., 1], bands[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi = np.clip((nir - red) / (nir + red), -1, 1)
        evi = np.clip(2.5 * (nir - red) / (nir + 6 * red - 7.5 * blue + 1), -1, 1)
    ndvi, evi = np.nan_to_num(ndvi), np.nan_to_num(evi)
    return [ndvi, evi, ndvi * nir]


def days_since(valid: np.ndarray) -> np.ndarray:
    """Days since the last valid day along axis 0 (0 on a valid day, MAX_CLEAR_GAP before the first one)."""
    day = np.arange(len(valid), dtype=np.float64).reshape((-1,) + (1,) * (np.ndim(valid) - 1))
    last = np.maximum.accumulate(np.where(valid, day, -np.inf), axis=0)
    return np.minimum(day - last, MAX_CLEAR_GAP).astype(np.float32)


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


CLIMATOLOGY_DRIVERS = ("TA", "SW_IN", "VPD", "NIRV")  # the site climate the task encoder reads, where present


def climatology_channels(fs: FeatureSet) -> list[int]:
    """Indices in ``fs.dynamic_names`` of the features whose monthly cycle describes a site's climate."""
    return [fs.dynamic_names.index(v) for v in CLIMATOLOGY_DRIVERS if v in fs.dynamic_names]


def climatology(x_scaled: np.ndarray, x_raw: np.ndarray, fs: FeatureSet) -> np.ndarray:
    """Monthly means of the climatology channels over a record: (locations, 12 * channels), float32.

    ``x_scaled`` and ``x_raw`` are (locations, days, n_dynamic); the month of each day comes from the raw DOY
    features, so towers and pixels (whose dates are not passed on) get it the same way. A month the record does
    not cover is 0, the training mean of a scaled feature.
    """
    names = fs.dynamic_names
    angle = np.arctan2(x_raw[..., names.index("DOY_SIN")], x_raw[..., names.index("DOY_COS")]) % (2 * np.pi)
    month = np.minimum((angle / (2 * np.pi) * 12).astype(np.int64), 11)  # (locations, days)
    values = np.nan_to_num(x_scaled[..., climatology_channels(fs)])  # (locations, days, channels)
    onehot = month[..., None] == np.arange(12)  # (locations, days, 12)
    sums = np.einsum("ldm,ldc->lmc", onehot.astype(np.float32), values)
    counts = onehot.sum(axis=1)[..., None]
    return (sums / np.maximum(counts, 1)).reshape(len(x_scaled), -1).astype(np.float32)
