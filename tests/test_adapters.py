"""jobs.adapters: the registry keyed by source, each adapter's closed options, and GridDrivers applying them."""

import pickle
from pathlib import Path

import numpy as np
import pytest

from jobs.adapters import ADAPTERS, DELIVERED, GRIDDED, DriverOptions, driver_options
from jobs.drivers import GridDrivers
from tamrl.errors import ConfigError, DataError

# real ERA5 at US-TaS, hourly 2019-2020 as the CDS delivers the year files (ssrd accumulated over each hour)
ERA5_YEARS = Path(__file__).parent / "data" / "era5" / "era5_ssrd_t2m_d2m_hourly_25.19N_80.64W_2019-2020.nc"


def test_the_registry_holds_the_four_sources_and_one_closed_config_of_their_options():
    assert list(GRIDDED) == ["era5", "canonical"] and list(DELIVERED) == ["mod09ga", "mod09cmg"]
    assert list(DriverOptions.model_fields) == list(ADAPTERS)
    options = driver_options({"era5": {"accumulation": "since_00"}, "mod09ga": {"qc_500m": False}})
    assert options.era5.accumulation == "since_00" and not options.mod09ga.qc_500m
    assert options.canonical == ADAPTERS["canonical"].Options()  # the rest keep their defaults
    assert pickle.loads(pickle.dumps(options)) == options and hash(options) == hash(driver_options(options))
    for bad, message in [
        ({"gfs": {}}, "gfs: Extra inputs are not permitted"),
        ({"era5": {"accumulate": "hourly"}}, "era5.accumulate: Extra inputs are not permitted"),
        ({"era5": {"accumulation": "daily"}}, "era5.accumulation: Input should be 'auto', 'hourly' or 'since_00'"),
        ({"canonical": {"units": "K"}}, "canonical.units: Extra inputs are not permitted"),
    ]:
        with pytest.raises(ConfigError, match=f"invalid driver options: {message}"):
            driver_options(bad)


def test_grid_drivers_take_the_era5_options_and_report_what_they_used():
    detected = GridDrivers(str(ERA5_YEARS))
    assert detected.options[0].era5.accumulation == "hourly"  # detected: ERA5 ssrd falls every afternoon
    given = GridDrivers(str(ERA5_YEARS), {"era5": {"accumulation": "since_00"}})
    assert given.options == (driver_options({"era5": {"accumulation": "since_00"}}),)
    assert GridDrivers(str(ERA5_YEARS), detected.options).options == detected.options  # as workers reopen them
    june = slice("2019-06-01", "2019-06-03")
    hourly, since_00 = (d.array("SW_IN").sel(time=june).values for d in (detected, given))
    assert np.isfinite(hourly).all() and not np.allclose(hourly, since_00)  # the option reaches the conversion
    with pytest.raises(DataError, match="2 driver options given for 1 driver grids"):
        GridDrivers(str(ERA5_YEARS), [detected.options[0]] * 2)
