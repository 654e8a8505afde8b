"""`tamrl ingest`: MODIS files as users receive them, turned into the canonical daily drivers store.

The files (or folders of them) are matched by name to the delivered adapters of `jobs.adapters` (MOD09GA
granules or AppEEARS GeoTIFFs, MOD09CMG granules), grouped by day, and each day is read into B01..B07 and CLEAR on
the 0.05 deg cells of the bbox. Days are written in order into a new Zarr store in blocks of up to BLOCK_DAYS days
(fewer where a day's cells would take more than BLOCK_BYTES), chunked (block, 50, 50) like the engine's tiles, so
`tamrl upscale --drivers` reads it as a canonical store (docs/DRIVERS.md, section 4). The store is written under a
temporary name and renamed at the end, so an interrupted ingest leaves no partial store behind.
"""

import shutil
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from tqdm import tqdm

from jobs import grid
from jobs.adapters import DELIVERED, driver_options
from jobs.adapters.base import AdapterOptions, FileAdapter
from jobs.grid import Bbox
from tamrl.errors import ConfigError, DataError
from tamrl.features import BANDS, CLEAR

BLOCK_DAYS = 32  # days per write and per time chunk of the store
BLOCK_BYTES = 1 << 30  # at most this many bytes of canonical values held before a write
SPACE_CHUNK = 50  # cells: the engine's default chunks


@dataclass(frozen=True)
class Ingested:
    """What `ingest` wrote: the product, how many files, the days and the cells."""

    out: str
    source: str
    files: int
    days: pd.DatetimeIndex
    shape: tuple[int, int]

    def __str__(self) -> str:
        first, last = self.days[0], self.days[-1]
        return (
            f"ingested {len(self.days)} day(s) {first:%Y-%m-%d}..{last:%Y-%m-%d} of {self.source} ({self.files} files) "
            f"into {self.out}: {BANDS[0]}..{BANDS[-1]} and {CLEAR} on {self.shape[0]} x {self.shape[1]} cells"
        )


def ingest(
    paths: Sequence[str | Path],
    out: str | Path,
    bbox: Bbox,
    options: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> Ingested:
    """Write the canonical daily store ``out`` from MODIS files ``paths`` over ``bbox`` (see the module docstring).

    ``options`` are the adapters' options (`jobs.adapters.DriverOptions`, e.g. ``{"mod09ga": {"qc_500m": false}}``).
    Raises DataError for files of no known product, of two products, or that cannot be read, and ConfigError for an
    existing ``out`` or unknown options. Nothing is left at ``out`` unless every day was written.
    """
    settings = driver_options(options)
    grid.bbox_slices(bbox)  # DataError for a bbox off the grid, before any file is read
    source, days = _by_day(_files(paths))
    target = Path(out)
    if target.exists():
        raise ConfigError(f"{out} exists; give a new --out (ingest writes a whole store)")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    adapter, chosen = DELIVERED[source], getattr(settings, source)
    shape = (0, 0)
    try:
        with tqdm(total=len(days), unit="day", desc=f"ingest {source}", disable=not progress) as bar:
            for first, block in enumerate(_blocks(adapter, days, bbox, chosen, bar)):
                shape = (block.sizes["lat"], block.sizes["lon"])
                _write(block, partial, first == 0)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.rename(target)
    return Ingested(str(out), source, sum(map(len, days.values())), pd.DatetimeIndex(list(days)), shape)


def _files(paths: Sequence[str | Path]) -> list[Path]:
    """The files named, folders expanded to the files directly in them, or DataError for a missing one."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"{path} does not exist; give MODIS files or folders holding them")
    if not files:
        raise DataError(f"no files in {', '.join(map(str, paths))}; give MODIS files or folders holding them")
    return files


def _by_day(files: list[Path]) -> tuple[str, dict[pd.Timestamp, list[str]]]:
    """The one product the files are of, and its files by day (in order), or DataError naming a stray file."""
    found: dict[str, dict[pd.Timestamp, list[str]]] = {}
    for path in files:
        claims = [(name, day) for name, a in DELIVERED.items() if (day := a.day_of(str(path))) is not None]
        if not claims:
            expected = "; ".join(f"{name}: {a.files}" for name, a in DELIVERED.items())
            raise DataError(f"{path} is not a MODIS file tamrl reads (names as delivered: {expected})")
        name, day = claims[0]
        found.setdefault(name, {}).setdefault(day, []).append(str(path))
    if len(found) > 1:
        raise DataError(f"the files are of {' and '.join(found)}; ingest one product into a store")
    source, days = next(iter(found.items()))
    return source, dict(sorted(days.items()))


def _blocks(
    adapter: FileAdapter, days: dict[pd.Timestamp, list[str]], bbox: Bbox, options: AdapterOptions, bar: tqdm
) -> Iterator[xr.Dataset]:
    """The days read by ``adapter``, concatenated in blocks (BLOCK_DAYS, BLOCK_BYTES)."""
    rows, cols = grid.bbox_slices(bbox)
    day_bytes = 4 * (len(BANDS) + 1) * (rows.stop - rows.start) * (cols.stop - cols.start)
    size = int(np.clip(BLOCK_BYTES // day_bytes, 1, BLOCK_DAYS))
    block = []
    for day, files in days.items():
        block.append(adapter.read(files, day, bbox, options))
        bar.update()
        if len(block) == size:
            yield xr.concat(block, "time")
            block = []
    if block:
        yield xr.concat(block, "time")


def _write(block: xr.Dataset, path: Path, first: bool) -> None:
    """Write the first block (chunked (BLOCK_DAYS, 50, 50)) or append one along time."""
    chunks = (BLOCK_DAYS, SPACE_CHUNK, SPACE_CHUNK)
    encoding = {name: {"chunks": chunks} for name in block.data_vars} if first else None
    with warnings.catch_warnings():  # consolidated metadata is not in the Zarr v3 spec yet; xarray reads it
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not", category=UserWarning)
        block.to_zarr(path, mode="w" if first else "a", append_dim=None if first else "time", encoding=encoding,
                      zarr_format=3, consolidated=True)  # fmt: skip
