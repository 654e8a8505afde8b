"""The ERA5 / ERA5-Land adapter: hourly or daily t2m, d2m, ssrd (or a mean short-wave flux) as the CDS delivers
them, turned into daily TA, SW_IN and VPD by `jobs.era5.daily_drivers`.

Its option is the ssrd accumulation ("auto" detects it); the options it returns hold the convention it used, so
workers reopening the URLs skip the detection. A partial first or last day of an hourly record is dropped with a
note (`jobs.era5.daily_drivers`).
"""

from collections.abc import Sequence
from typing import Literal

import xarray as xr

from jobs.adapters.base import AdapterOptions, Canonical
from jobs.era5 import MEAN_FLUXES, daily_drivers

INPUTS = ("t2m", "d2m", "ssrd", *MEAN_FLUXES)


class Era5Options(AdapterOptions):
    """``accumulation``: how ssrd is accumulated: "hourly" (ERA5), "since_00" (ERA5-Land) or "auto" (detected)."""

    accumulation: Literal["auto", "hourly", "since_00"] = "auto"


class Era5Adapter:
    """ERA5 and ERA5-Land fields (`INPUTS`) to daily TA, SW_IN, VPD."""

    Options = Era5Options
    source = "ERA5 fields"
    variables = INPUTS

    def canonical(self, ds: xr.Dataset, urls: Sequence[str], options: Era5Options) -> Canonical:
        daily = daily_drivers(ds, options.accumulation)
        used = daily["SW_IN"].attrs.get("accumulation", options.accumulation) if "SW_IN" in daily else "auto"
        note = f"{', '.join(urls)}: {daily.attrs['trimmed']}" if "trimmed" in daily.attrs else ""
        arrays = {name: daily[name] for name in daily.data_vars}
        return Canonical(arrays, options.model_copy(update={"accumulation": used}), note)


ADAPTER = Era5Adapter()
