"""The output variables of a cube, declared once: name, dtype, units, fill, CF attributes and companions.

The writer (template, encoding, checks), the tile computation (which ensemble statistic of which target fills a
variable), the catalog and the API read OUTPUTS. A variable is one `Output`; a flux comes with its companions, the
daily ensemble spread (`spread_of`) and the monthly means of each ensemble member (`members_of`), from which the
spread of a regional total is the spread of the members' totals (members are correlated in space, so per-cell
spreads cannot give it). The 90% intervals are not stored: `tamrl.calibration.cube_bounds` derives them from a
flux, its spread and the cube's calibration. Adding a variable means one entry here plus, for a statistic not yet
computed, the code in `jobs.compute.STATISTICS` that computes it.
"""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tamrl.features import CF_UNITS, TARGETS

DAILY_DIMS = ("time", "lat", "lon")
MEMBER_DIMS = ("month", "member", "lat", "lon")  # month: the calendar months the cube's days touch (`month_starts`)


@dataclass(frozen=True)
class Output:
    """One variable of a cube: daily (time, lat, lon) or per member and month (month, member, lat, lon)."""

    name: str
    target: str  # the model target it describes (tamrl.features.TARGETS)
    statistic: str  # what of the ensemble it holds: a key of jobs.compute.STATISTICS
    attrs: dict[str, str]  # CF attributes: long_name, units, standard_name where one exists, comment
    dims: tuple[str, ...] = DAILY_DIMS  # always ending in lat, lon
    dtype: str = "float32"
    fill: float = float(np.nan)  # where a cell is not computed
    companions: tuple[str, ...] = field(default=())  # variables that qualify this one (its spread, its members)

    def shape(self, sizes: dict[str, int], space: tuple[int, ...]) -> tuple[int, ...]:
        """The variable's shape from the sizes of its dimensions other than lat and lon, and ``space``: the (lat,
        lon) shape of a region, or (cells,) for a list of cells."""
        return (*(sizes[dim] for dim in self.dims[:-2]), *space)


_FLUXES = {  # target: long name, CF standard name (or None), comment on the ensemble mean
    "GPP": (
        "gross primary productivity of carbon",
        "gross_primary_productivity_of_biomass_expressed_as_carbon",
        "Daily mean of the ensemble members, clipped at zero.",
    ),
    "RECO": (
        "ecosystem respiration of carbon",
        None,
        "Total (autotrophic plus heterotrophic) ecosystem respiration; daily mean of the ensemble members, clipped "
        "at zero. There is no CF standard name for it.",
    ),
    "NEE": (
        "net ecosystem exchange of carbon (positive: source to the atmosphere)",
        None,
        "Net land-atmosphere CO2 exchange expressed as carbon: positive values are a net source to the atmosphere, "
        "negative values a sink. Daily mean of the ensemble members. There is no CF standard name for it.",
    ),
}


def _flux(target: str) -> Output:
    long_name, standard_name, comment = _FLUXES[target]
    attrs = {"long_name": long_name, "units": CF_UNITS, "comment": comment}
    if standard_name:
        attrs["standard_name"] = standard_name
    return Output(target, target, "mean", attrs, companions=(f"{target}_std", f"{target}_members"))


def _spread(target: str) -> Output:
    attrs = {
        "long_name": f"ensemble standard deviation of {_FLUXES[target][0].split(' (')[0]}",
        "units": CF_UNITS,
        "comment": f"Standard deviation of the daily {target} of the ensemble members (spread, not error).",
    }
    return Output(f"{target}_std", target, "spread", attrs)


def _members(target: str) -> Output:
    attrs = {
        "long_name": f"monthly mean {_FLUXES[target][0].split(' (')[0]}, per ensemble member",
        "units": CF_UNITS,
        "cell_methods": "month: mean",
        "comment": (
            f"Mean over the cube's days in each calendar month of each ensemble member's daily {target}, after the "
            "clipping at zero and the NEE rule that the daily ensemble mean has, so the mean over members is the "
            f"monthly mean of the daily {target}. It is there for the ensemble spread of regional or period totals: "
            "the spread of a total is the spread of the members' totals, which per-cell daily spreads cannot give "
            "(members are correlated in space). A partial month at either end of the cube averages only the cube's "
            "days in it (see month_bnds)."
        ),
    }
    return Output(f"{target}_members", target, "members_monthly", attrs, dims=MEMBER_DIMS)


OUTPUTS: dict[str, Output] = {
    o.name: o for o in (*map(_flux, TARGETS), *map(_spread, TARGETS), *map(_members, TARGETS))
}
VARIABLES = tuple(OUTPUTS)  # every variable a cube holds, in this order
DAILY = tuple(name for name, o in OUTPUTS.items() if o.dims == DAILY_DIMS)  # the (time, lat, lon) ones
MEMBERS = tuple(name for name, o in OUTPUTS.items() if o.dims == MEMBER_DIMS)  # the (month, member, lat, lon) ones
FLUXES = tuple(name for name, o in OUTPUTS.items() if o.statistic == "mean")  # what a client asks for by name


def spread_of(name: str) -> str:
    """The name of the ensemble-spread companion of flux ``name``."""
    return next(c for c in OUTPUTS[name].companions if OUTPUTS[c].statistic == "spread")


def members_of(name: str) -> str:
    """The name of the per-member monthly-mean companion of flux ``name``."""
    return next(c for c in OUTPUTS[name].companions if OUTPUTS[c].statistic == "members_monthly")


def month_starts(days: pd.DatetimeIndex) -> np.ndarray:
    """Positions in ``days`` (consecutive) of the first of them in each calendar month they touch: the `month`
    coordinate of the member outputs is ``days[month_starts(days)]``."""
    return np.flatnonzero(np.diff(days.year * 12 + days.month, prepend=0))
