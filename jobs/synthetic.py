"""Synthetic daily drivers for the demo only: invented, physically plausible weather and MOD09GA-like reflectance.

No real gridded daily drivers exist on this machine, so the demo runs on fields made here. They are labelled
``synthetic`` in every attribute and must never be passed off as observations. `synthetic_drivers` returns, on the
0.05 deg cells of a bbox:

- ERA5-style daily meteorology that `jobs.era5.daily_drivers` takes unchanged: ``t2m`` and ``d2m`` [K, daily
  mean] and ``ssrd`` [J m-2 accumulated over the day];
- MOD09GA-style daily surface reflectance ``B01``..``B07`` (red, NIR, blue, green, 1240, 1640, 2130 nm) and
  ``CLEAR`` (1 on clear-sky days), from the MCD12C1 class of each cell (`jobs.static.igbp`).

Climate depends on latitude and day of year only (no land-sea contrast, elevation or snow). Day-to-day weather
is spatially smooth AR(1) noise on global lattices of nodes, each node seeded by (seed, field, node): a cell's
values depend on the seed, its location and the period, not on the bbox, so tiles generated apart join seamlessly.
One daily cloud field darkens ssrd, cools t2m, moistens d2m, and hides the surface in the reflectance.
"""

import math

import numpy as np
import pandas as pd
import xarray as xr
from scipy.special import ndtri

from jobs import grid, static
from jobs.grid import Bbox
from tamrl.errors import DataError
from tamrl.features import BANDS, CLEAR, DRIVER_UNITS

SOURCE = "tamrl synthetic driver generator, jobs/synthetic.py (not observations)"
KELVIN = 273.15
SECONDS_PER_DAY = 86400.0
YEAR = 365.25  # days

# Temperature [degC]: annual mean 27 at the equator to -15 at 70 deg, quadratic in |lat| (floored at -30); seasonal
# half-amplitude 20 (|lat| / 70)^1.5 peaking a month after the solstice (21 July in the north, 19 January in the
# south); AR(1) weather with standard deviation 1 K at the equator to 4 K at 60 deg and beyond.
T_EQUATOR, T_POLAR, T_FLOOR = 27.0, -15.0, -30.0
SEASON_AMPLITUDE = 20.0
WARMEST_DAY = 202  # day of year of the northern temperature peak: solstice (172) + 30 days
WEATHER_SD_EQUATOR, WEATHER_SD_EXTRA = 1.0, 3.0
CLOUD_COOLING = 3.0  # K of daytime cooling under full cloud, at 500 W m-2 of top-of-atmosphere insolation

# Radiation: FAO-56 daily top-of-atmosphere insolation with the solar constant, times a transmissivity.
SOLAR_CONSTANT = 1361.0  # W m-2
CLEAR_TRANSMISSIVITY = 0.75
CLOUD_DIMMING = 0.7  # full cloud (1) lets through 30% of the clear-sky flux
LOW_SUN = 30.0  # W m-2 of daily top-of-atmosphere insolation: below it (noon sun below ~8 deg) no day is CLEAR

# Wetness 0..1: an ITCZ band (width 12 deg, centred 3 + 8 cos(...) deg: 11 N in early August, 5 S in February)
# plus mid-latitude storm tracks at 55 deg (width 15 deg, weight 0.8). It sets the clear-sky fraction,
# 0.45 - 0.27 wetness (0.45 in the dry subtropics, 0.18 under the ITCZ), and the dewpoint depression.
ITCZ_MEAN, ITCZ_SWING, ITCZ_NORTHMOST_DAY, ITCZ_WIDTH = 3.0, 8.0, 213, 12.0
STORM_LAT, STORM_WIDTH, STORM_WEIGHT = 55.0, 15.0, 0.8
CLEAR_DRY, CLEAR_WET_DROP = 0.45, 0.27

# Dewpoint depression [K]: 0.5 + (2 + 10 dryness) * clip(1 + 0.04 (TA - 10), 0.3, 2.5) * (1 - 0.7 cloud).
DEPRESSION_MIN, DEPRESSION_MOIST, DEPRESSION_DRY = 0.5, 2.0, 10.0
DEPRESSION_WARMING, DEPRESSION_CLOUD = 0.04, 0.7

# Noise lattices: (stream id, node spacing [deg], lag-1 autocorrelation). The cloud index is 0.8 synoptic + 0.6
# local, so it keeps unit variance; the view factor is white noise in time (the orbit changes every day).
TEMPERATURE = (1, 5.0, 0.75)
CLOUD_SYNOPTIC = (2, 2.5, 0.6)
CLOUD_LOCAL = (3, 0.5, 0.3)
VIEW = (4, 5.0, 0.0)
SYNOPTIC_WEIGHT, LOCAL_WEIGHT = 0.8, 0.6

# Cloudy days: cloud amount 0.35 at the clear/cloudy threshold, rising 0.3 per unit of the cloud index, up to 1.
# Cloud reflectance 0.2 + 0.5 amount (0.375..0.7), flat over B01-B05 and lower in the water-absorbing SWIR bands.
CLOUD_MIN, CLOUD_SLOPE = 0.35, 0.3
CLOUD_REFL_BASE, CLOUD_REFL_SLOPE = 0.2, 0.5
CLOUD_BAND_FACTOR = np.array([1, 1, 1, 1, 1, 0.8, 0.6], dtype=np.float32)
VIEW_SD = 0.04  # relative day-to-day brightness change from the viewing geometry (equal in all bands)

# Greenness 0..1: logistic in the climatological temperature (half at 8 degC, scale 3 K), times, in the tropics
# (weight exp(-(lat / 20)^4)), a wet-season term that follows the ITCZ with a month's lag (width 15 deg).
GREEN_T_HALF, GREEN_T_SCALE = 8.0, 3.0
TROPICS_WIDTH, WET_SEASON_WIDTH, WET_SEASON_LAG = 20.0, 15.0, 30

# Class spectra by MCD12C1 code (0 water, 1-16 IGBP; fill is read as water): reflectance in the MODIS band order
# (B01 red, B02 NIR, B03 blue, B04 green, B05 1240, B06 1640, B07 2130 nm), when dormant and at peak greenness.
# Forests are dark in red and bright in NIR; croplands and grasslands swing from bare soil or dry grass to dense
# green; barren and shrublands are bright in all bands; water is dark with low NIR. Evergreens barely change.
SPECTRA = np.array([
    # dormant                                          peak
    [(0.030, 0.020, 0.050, 0.045, 0.010, 0.006, 0.004), (0.030, 0.020, 0.050, 0.045, 0.010, 0.006, 0.004)],  # water
    [(0.035, 0.190, 0.025, 0.045, 0.190, 0.110, 0.050), (0.025, 0.240, 0.020, 0.045, 0.240, 0.120, 0.050)],  # ENF
    [(0.030, 0.290, 0.020, 0.045, 0.300, 0.150, 0.060), (0.025, 0.320, 0.020, 0.050, 0.330, 0.160, 0.060)],  # EBF
    [(0.060, 0.170, 0.040, 0.060, 0.190, 0.160, 0.100), (0.030, 0.300, 0.020, 0.050, 0.300, 0.150, 0.060)],  # DNF
    [(0.070, 0.220, 0.040, 0.065, 0.250, 0.220, 0.140), (0.030, 0.380, 0.025, 0.055, 0.370, 0.200, 0.090)],  # DBF
    [(0.050, 0.200, 0.030, 0.055, 0.220, 0.170, 0.100), (0.028, 0.310, 0.022, 0.050, 0.310, 0.160, 0.070)],  # MF
    [(0.090, 0.200, 0.060, 0.090, 0.240, 0.260, 0.180), (0.060, 0.260, 0.040, 0.070, 0.280, 0.240, 0.140)],  # CSH
    [(0.170, 0.250, 0.100, 0.140, 0.300, 0.360, 0.300), (0.130, 0.270, 0.080, 0.120, 0.310, 0.340, 0.270)],  # OSH
    [(0.070, 0.220, 0.045, 0.070, 0.250, 0.240, 0.150), (0.040, 0.300, 0.030, 0.060, 0.310, 0.210, 0.100)],  # WSA
    [(0.100, 0.220, 0.060, 0.090, 0.260, 0.290, 0.210), (0.050, 0.290, 0.035, 0.070, 0.300, 0.240, 0.130)],  # SAV
    [(0.110, 0.220, 0.070, 0.100, 0.260, 0.300, 0.220), (0.040, 0.340, 0.030, 0.070, 0.330, 0.230, 0.110)],  # GRA
    [(0.050, 0.120, 0.040, 0.055, 0.120, 0.090, 0.060), (0.035, 0.250, 0.030, 0.055, 0.240, 0.140, 0.070)],  # WET
    [(0.120, 0.190, 0.070, 0.100, 0.240, 0.290, 0.230), (0.030, 0.450, 0.025, 0.070, 0.430, 0.230, 0.100)],  # CRO
    [(0.110, 0.200, 0.080, 0.100, 0.220, 0.240, 0.190), (0.090, 0.230, 0.070, 0.090, 0.240, 0.230, 0.170)],  # URB
    [(0.090, 0.200, 0.055, 0.085, 0.240, 0.250, 0.180), (0.030, 0.400, 0.025, 0.060, 0.390, 0.210, 0.090)],  # CVM
    [(0.800, 0.700, 0.850, 0.830, 0.450, 0.080, 0.050), (0.800, 0.700, 0.850, 0.830, 0.450, 0.080, 0.050)],  # SNO
    [(0.300, 0.360, 0.180, 0.250, 0.420, 0.500, 0.450), (0.300, 0.360, 0.180, 0.250, 0.420, 0.500, 0.450)],  # BSV
], dtype=np.float32)  # fmt: skip

BAND_NAMES = ("red", "near infrared", "blue", "green", "1240 nm", "1640 nm", "2130 nm")
BAND_NM = ("620-670", "841-876", "459-479", "545-565", "1230-1250", "1628-1652", "2105-2155")
MET_ATTRS = {
    "t2m": {
        "units": "K",
        "long_name": "2 m air temperature, daily mean (synthetic)",
        "comment": "latitude/season climatology + spatially smooth AR(1) weather (lag-1 0.75) - cooling under cloud",
    },
    "d2m": {
        "units": "K",
        "long_name": "2 m dewpoint temperature, daily mean (synthetic)",
        "comment": "t2m minus a depression that grows with warmth and subtropical dryness and shrinks under cloud",
    },
    "ssrd": {
        "units": "J m-2",
        "long_name": "surface solar radiation downwards, accumulated over the day (synthetic)",
        "comment": "FAO-56 top-of-atmosphere daily insolation (S0 1361 W m-2) x transmissivity 0.75 (1 - 0.7 cloud)",
    },
}


def synthetic_drivers(bbox: Bbox, start: str, end: str, seed: int = 0) -> xr.Dataset:
    """Synthetic daily t2m, d2m, ssrd, B01-B07 and CLEAR on the grid cells of ``bbox`` from ``start`` to ``end``.

    ``bbox`` is (W, S, E, N) in degrees (cells as `jobs.grid.bbox_slices` selects them, lat descending); the days
    run from ``start`` to ``end`` inclusive. Every variable is float32 on dims (time, lat, lon) and labelled
    synthetic; the same seed gives the same values. Raises DataError for a bad bbox, dates or seed.
    """
    rows, cols = grid.bbox_slices(bbox)
    time = _days(start, end)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DataError(f"seed {seed!r} must be a non-negative integer")
    lat, lon = grid.lat_coords()[rows], grid.lon_coords()[cols]
    doy = time.day_of_year.to_numpy()

    toa = _toa_insolation(lat, doy)
    t_clim = _temperature_climate(lat, doy)
    wet = _wetness(lat, doy)
    cloud, clear = _clouds(seed, lat, lon, len(time), wet)
    clear &= (toa >= LOW_SUN)[..., None]  # MODIS retrieves no surface reflectance with the sun this low
    t2m, d2m = _temperatures(seed, lat, lon, t_clim, toa, wet, cloud)
    ssrd = (toa * SECONDS_PER_DAY)[..., None] * (CLEAR_TRANSMISSIVITY * (1 - CLOUD_DIMMING * cloud))
    codes = static.igbp(bbox).to_numpy()
    bands = _reflectance(seed, lat, lon, codes, _greenness(lat, doy, t_clim), cloud, clear)

    data = {"t2m": t2m, "d2m": d2m, "ssrd": ssrd, **dict(zip(BANDS, bands, strict=True)), CLEAR: clear}
    coords = {
        "time": time,
        "lat": ("lat", lat, static.LAT_ATTRS),
        "lon": ("lon", lon, static.LON_ATTRS),
    }
    variables = {
        name: (("time", "lat", "lon"), values.astype(np.float32, copy=False), _attrs(name))
        for name, values in data.items()
    }
    attrs = {
        "title": "synthetic daily drivers for the TAM-RL upscaling demo",
        "synthetic": 1,
        "source": SOURCE,
        "seed": int(seed),
        "comment": "invented, physically plausible fields: never use them as observations",
    }
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def _days(start: str, end: str) -> pd.DatetimeIndex:
    """The days from ``start`` to ``end`` inclusive, or DataError if either is no date or they are reversed."""
    try:
        first, last = pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize()
    except (TypeError, ValueError) as exc:
        raise DataError(f"start {start!r} / end {end!r} must be dates such as '2019-01-01'") from exc
    if last < first:
        raise DataError(f"end {end} is before start {start}; give start <= end")
    return pd.date_range(first, last, freq="D", name="time")


def _toa_insolation(lat: np.ndarray, doy: np.ndarray) -> np.ndarray:
    """Daily mean top-of-atmosphere insolation [W m-2], (time, lat): FAO-56 eqs. 21-25 with S0 = 1361 W m-2."""
    angle = 2 * np.pi * doy[:, None] / 365
    declination = 0.409 * np.sin(angle - 1.39)
    distance = 1 + 0.033 * np.cos(angle)  # inverse relative Earth-Sun distance squared
    phi = np.radians(lat)[None, :]
    sunset = np.arccos(np.clip(-np.tan(phi) * np.tan(declination), -1, 1))  # hour angle; 0 in polar night
    daily = sunset * np.sin(phi) * np.sin(declination) + np.cos(phi) * np.cos(declination) * np.sin(sunset)
    return (SOLAR_CONSTANT / np.pi * distance * daily).astype(np.float32)


def _temperature_climate(lat: np.ndarray, doy: np.ndarray) -> np.ndarray:
    """Climatological daily mean temperature [degC], (time, lat): colder poleward, seasons opposite by hemisphere."""
    rel = np.abs(lat) / 70
    annual = np.maximum(T_EQUATOR + (T_POLAR - T_EQUATOR) * rel**2, T_FLOOR)
    amplitude = SEASON_AMPLITUDE * rel**1.5 * np.sign(lat)
    season = np.cos(2 * np.pi * (doy - WARMEST_DAY) / YEAR)
    return (annual[None, :] + season[:, None] * amplitude[None, :]).astype(np.float32)


def _itcz(doy: np.ndarray) -> np.ndarray:
    """Latitude [deg] of the intertropical convergence zone on each day of year."""
    return ITCZ_MEAN + ITCZ_SWING * np.cos(2 * np.pi * (doy - ITCZ_NORTHMOST_DAY) / YEAR)


def _wetness(lat: np.ndarray, doy: np.ndarray) -> np.ndarray:
    """Climatological wetness 0..1, (time, lat): the ITCZ band plus the mid-latitude storm tracks."""
    itcz = np.exp(-(((lat[None, :] - _itcz(doy)[:, None]) / ITCZ_WIDTH) ** 2))
    storms = STORM_WEIGHT * np.exp(-(((np.abs(lat) - STORM_LAT) / STORM_WIDTH) ** 2))
    return np.minimum(itcz + storms[None, :], 1).astype(np.float32)


def _greenness(lat: np.ndarray, doy: np.ndarray, t_clim: np.ndarray) -> np.ndarray:
    """Vegetation greenness 0..1, (time, lat): warmth outside the tropics, the lagged wet season inside them."""
    warmth = 1 / (1 + np.exp(-(t_clim - GREEN_T_HALF) / GREEN_T_SCALE))
    wet_season = np.exp(-(((lat[None, :] - _itcz(doy - WET_SEASON_LAG)[:, None]) / WET_SEASON_WIDTH) ** 2))
    tropics = np.exp(-((lat / TROPICS_WIDTH) ** 4))[None, :]
    return (warmth * (1 - tropics * (1 - wet_season))).astype(np.float32)


def _clouds(seed: int, lat: np.ndarray, lon: np.ndarray, n_days: int, wet: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cloud amount 0..1 and the clear-sky mask, (time, lat, lon).

    A unit-normal cloud index (synoptic plus local noise) is cloudy above the quantile that leaves the
    climatological clear fraction clear; the amount grows with the excess over that threshold.
    """
    index = SYNOPTIC_WEIGHT * _smooth_noise(seed, CLOUD_SYNOPTIC, lat, lon, n_days)
    index += LOCAL_WEIGHT * _smooth_noise(seed, CLOUD_LOCAL, lat, lon, n_days)
    index -= ndtri(CLEAR_DRY - CLEAR_WET_DROP * wet).astype(np.float32)[..., None]
    clear = index <= 0
    cloud = np.clip(CLOUD_MIN + CLOUD_SLOPE * index, CLOUD_MIN, 1, out=index)
    cloud[clear] = 0
    return cloud, clear


def _temperatures(
    seed: int, lat: np.ndarray, lon: np.ndarray, t_clim: np.ndarray, toa: np.ndarray, wet: np.ndarray,
    cloud: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Daily mean t2m and d2m [K], (time, lat, lon): climate plus AR(1) weather, cooler and moister under cloud."""
    sd = (WEATHER_SD_EQUATOR + WEATHER_SD_EXTRA * np.minimum(np.abs(lat) / 60, 1)).astype(np.float32)
    ta = _smooth_noise(seed, TEMPERATURE, lat, lon, len(t_clim))
    ta *= sd[:, None]
    ta += t_clim[..., None]
    ta -= (CLOUD_COOLING * toa / 500)[..., None] * cloud
    warm = np.clip(1 + DEPRESSION_WARMING * (ta - 10), 0.3, 2.5)
    moist = (DEPRESSION_MOIST + DEPRESSION_DRY * (1 - wet))[..., None]
    depression = warm * moist * (1 - DEPRESSION_CLOUD * cloud) + DEPRESSION_MIN
    ta += KELVIN
    return ta, ta - depression


def _reflectance(
    seed: int, lat: np.ndarray, lon: np.ndarray, codes: np.ndarray, green: np.ndarray, cloud: np.ndarray,
    clear: np.ndarray,
) -> list[np.ndarray]:  # fmt: skip
    """B01..B07, (time, lat, lon): the class spectrum at the day's greenness on clear days, cloud top otherwise."""
    spectra = SPECTRA[np.where(codes <= 16, codes, 0)]  # (lat, lon, dormant/peak, band)
    view = VIEW_SD * _smooth_noise(seed, VIEW, lat, lon, len(green))
    view += 1
    cloudy = ~clear
    cloud_top = CLOUD_REFL_BASE + CLOUD_REFL_SLOPE * cloud
    bands = []
    for b in range(len(BANDS)):
        dormant, peak = spectra[..., 0, b], spectra[..., 1, b]
        band = green[..., None] * (peak - dormant)
        band += dormant
        band *= view
        np.clip(band, 0, 1, out=band)
        factor = CLOUD_BAND_FACTOR[b]
        np.copyto(band, cloud_top if factor == 1 else cloud_top * factor, where=cloudy)
        bands.append(band)
    return bands


def _smooth_noise(
    seed: int, lattice: tuple[int, float, float], lat: np.ndarray, lon: np.ndarray, n_days: int
) -> np.ndarray:
    """Unit-variance AR(1) noise (time, lat, lon) that is smooth in space, from a global lattice of nodes.

    ``lattice`` is (stream, spacing in degrees, lag-1 autocorrelation). Each node holds an AR(1) series seeded by
    (seed, stream, node), so it does not depend on the bbox; cells interpolate the nodes around them linearly,
    with weights scaled to unit sum of squares so the variance is 1 everywhere, not only at the nodes.
    """
    stream, spacing, phi = lattice
    rows, cols = _nodes(lat, -90, spacing), _nodes(lon, -180, spacing)
    wrap = round(360 / spacing)  # 180 E is the node of 180 W
    shocks = np.stack([
        np.random.default_rng((seed, stream, i, j % wrap)).standard_normal(n_days, dtype=np.float32)
        for i in rows for j in cols
    ], axis=1).reshape(n_days, len(rows), len(cols))  # fmt: skip
    series = np.empty_like(shocks)
    series[0] = shocks[0]
    for t in range(1, n_days):
        series[t] = phi * series[t - 1] + math.sqrt(1 - phi**2) * shocks[t]
    by_row = np.matmul(_weights(lat, -90, spacing, rows), series)  # (time, lat, lattice column)
    # One 2-D product: numpy's batched matmul is far slower for these shapes.
    return (by_row.reshape(-1, len(cols)) @ _weights(lon, -180, spacing, cols).T).reshape(n_days, len(lat), len(lon))


def _nodes(coords: np.ndarray, origin: float, spacing: float) -> np.ndarray:
    """Global indices of the lattice nodes (at origin + k spacing) that enclose ``coords``, at least two."""
    first = int(np.floor((coords.min() - origin) / spacing))
    last = max(int(np.ceil((coords.max() - origin) / spacing)), first + 1)
    return np.arange(first, last + 1)


def _weights(coords: np.ndarray, origin: float, spacing: float, nodes: np.ndarray) -> np.ndarray:
    """Linear interpolation weights (coord, node), each row scaled to unit sum of squares."""
    pos = (coords - origin) / spacing - nodes[0]
    left = np.minimum(np.floor(pos).astype(int), len(nodes) - 2)
    frac = pos - left
    weights = np.zeros((len(coords), len(nodes)))
    weights[np.arange(len(coords)), left] = 1 - frac
    weights[np.arange(len(coords)), left + 1] = frac
    return (weights / np.linalg.norm(weights, axis=1, keepdims=True)).astype(np.float32)


def _attrs(name: str) -> dict[str, str]:
    """Units, long name, how it is generated, and the synthetic label of variable ``name``."""
    if name in MET_ATTRS:
        attrs = dict(MET_ATTRS[name])
    elif name == CLEAR:
        attrs = {
            "units": DRIVER_UNITS[CLEAR],
            "long_name": "clear-sky flag, MOD09GA-like (synthetic)",
            "comment": "1 where the cloud index is below the clear-fraction quantile and TOA insolation >= 30 W m-2",
        }
    else:
        i = BANDS.index(name)
        attrs = {
            "units": DRIVER_UNITS[name],
            "long_name": f"surface reflectance, MODIS band {i + 1}, {BAND_NAMES[i]} ({BAND_NM[i]} nm) (synthetic)",
            "comment": "IGBP class spectrum at the day's greenness x view noise on clear days; flat cloud when cloudy",
        }
    return {**attrs, "synthetic": "true"}
