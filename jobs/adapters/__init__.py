"""Driver adapters in a registry keyed by source, and the one closed config of their options.

`GRIDDED` adapters are read in place by `jobs.drivers.GridDrivers` (in this order of precedence within a dataset);
`DELIVERED` ones turn a product's files into a canonical store with `tamrl ingest` (`jobs.ingest`). `ADAPTERS`
holds both. Adding a source means one module here and one entry below; its options become a field of
`DriverOptions`. See docs/DRIVERS.md ("Adding a source").
"""

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError, create_model

from jobs.adapters import canonical, era5, mod09cmg, mod09ga
from jobs.adapters.base import AdapterOptions, Canonical, FileAdapter, GridAdapter
from tamrl.errors import ConfigError, validation_message

GRIDDED: dict[str, GridAdapter] = {"era5": era5.ADAPTER, "canonical": canonical.ADAPTER}
DELIVERED: dict[str, FileAdapter] = {"mod09ga": mod09ga.ADAPTER, "mod09cmg": mod09cmg.ADAPTER}
ADAPTERS: dict[str, GridAdapter | FileAdapter] = {**GRIDDED, **DELIVERED}

# one field per adapter, holding that adapter's options: {"era5": {"accumulation": "hourly"}}; closed and frozen
DriverOptions = create_model(
    "DriverOptions",
    __base__=AdapterOptions,
    __doc__="The options of every driver adapter, one field per source of `ADAPTERS`; unknown keys are errors.",
    __module__=__name__,
    **{name: (adapter.Options, adapter.Options()) for name, adapter in ADAPTERS.items()},
)


def driver_options(options: Mapping[str, Any] | AdapterOptions | None = None) -> AdapterOptions:
    """``options`` as a `DriverOptions` (None: every default), or ConfigError naming the unknown or bad key."""
    if isinstance(options, DriverOptions):
        return options
    try:
        return DriverOptions.model_validate(dict(options or {}))
    except ValidationError as exc:
        problems = validation_message(exc.errors(), "options")
        raise ConfigError(f"invalid driver options: {problems} (sources: {', '.join(ADAPTERS)})") from exc


__all__ = ["ADAPTERS", "DELIVERED", "GRIDDED", "Canonical", "DriverOptions", "FileAdapter", "GridAdapter",
           "driver_options"]  # fmt: skip
