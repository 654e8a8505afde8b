"""The output variables of a cube, declared once: name, dtype, units, fill, CF attributes and companions.

The writer (template, encoding, checks), the tile computation (which ensemble statistic of which target fills a
variable), the catalog and the API read OUTPUTS. A variable is one `Output`; a flux comes with its companion, the
ensemble spread (`spread_of`). The 90% intervals are not stored: `tamrl.calibration.cube_bounds` derives them from
a flux, its spread and the cube's calibration. Adding a variable means one entry here plus, for a statistic not
yet computed, the code in `jobs.compute.STATISTICS` that computes it.
"""

from dataclasses import dataclass, field

import numpy as np

from tamrl.features import TARGET_UNITS, TARGETS


@dataclass(frozen=True)
class Output:
    """One (time, lat, lon) variable of a cube."""

    name: str
    target: str  # the model target it describes (tamrl.features.TARGETS)
    statistic: str  # what of the ensemble it holds: a key of jobs.compute.STATISTICS
    attrs: dict[str, str]  # CF attributes: long_name, units, standard_name where one exists, comment
    dtype: str = "float32"
    fill: float = float(np.nan)  # where a cell is not computed
    companions: tuple[str, ...] = field(default=())  # variables that qualify this one (its spread)


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
    attrs = {"long_name": long_name, "units": TARGET_UNITS, "comment": comment}
    if standard_name:
        attrs["standard_name"] = standard_name
    return Output(target, target, "mean", attrs, companions=(f"{target}_std",))


def _spread(target: str) -> Output:
    attrs = {
        "long_name": f"ensemble standard deviation of {_FLUXES[target][0].split(' (')[0]}",
        "units": TARGET_UNITS,
        "comment": f"Standard deviation of the daily {target} of the ensemble members (spread, not error).",
    }
    return Output(f"{target}_std", target, "spread", attrs)


OUTPUTS: dict[str, Output] = {o.name: o for o in (*map(_flux, TARGETS), *map(_spread, TARGETS))}
VARIABLES = tuple(OUTPUTS)  # every variable a cube holds, in this order
FLUXES = tuple(name for name, o in OUTPUTS.items() if o.statistic == "mean")  # what a client asks for by name


def spread_of(name: str) -> str:
    """The name of the ensemble-spread companion of flux ``name``."""
    return next(c for c in OUTPUTS[name].companions if OUTPUTS[c].statistic == "spread")
