"""The cubes a service serves: found in its cubes folder, opened once, re-opened when a job rewrote them.

Only complete cubes (``tamrl_complete = 1``, set by `jobs.writer.Cube.finalize`) are served, so a cube that a job
is still writing never answers with holes. A cube is re-opened when its root ``zarr.json`` changes (a job
finalizing or overwriting it), which is checked with one ``stat`` (or object-store HEAD) per cube and request.

Point queries and map tiles read through a process-wide cache of decoded chunks (`ChunkCache`): a one-year series of
six variables touches 48 chunks of about 0.46 MB, and decoding them dominates a query; a cached query is numpy
indexing, and neighbouring tiles, zoom levels and days of one chunk share its decoding.

A store without readable root metadata yet (being created, replaced or removed by a job) is skipped quietly. Any
other storage error (the cubes folder missing or unreadable, a bucket unreachable, a cube's metadata unreadable) is
logged with its cause and raised as UnavailableError, which the API answers with 503: never an empty catalog that
would read as "no cubes".
"""

import itertools
import json
import logging
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Set
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import xarray as xr
import zarr
from fsspec.implementations.local import LocalFileSystem

from jobs import grid
from jobs.outputs import DAILY, MEMBERS
from jobs.writer import CubeSpec
from tamrl.errors import NotFoundError, UnavailableError

log = logging.getLogger(__name__)
INCOMPLETE = (FileNotFoundError, NotADirectoryError)  # no root metadata (yet, or any more), or a file named *.zarr


class NotCached(Exception):
    """A cache-only read needed data that is not in memory (read it off the event loop instead)."""


class ChunkCache:
    """A thread-safe LRU of decoded chunks, bounded in bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple, load) -> np.ndarray:
        """The chunk under ``key``, calling ``load()`` to decode it when it is not cached (NotCached if ``load`` is
        None)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        if load is None:
            raise NotCached(key)
        value = load()
        with self._lock:
            if key not in self._items:
                self._items[key] = value
                self._bytes += value.nbytes
                while self._bytes > self.max_bytes and len(self._items) > 1:
                    self._bytes -= self._items.popitem(last=False)[1].nbytes
        return value


@dataclass
class OpenCube:
    """One complete cube: its spec, coordinates and static layers in memory, its variables read on demand."""

    name: str
    path: str  # a local path or a URL
    token: object  # what identified the root zarr.json's version when opened (`Catalog._token`)
    cache: ChunkCache

    @cached_property
    def group(self) -> zarr.Group:
        return zarr.open_group(self.path, mode="r", use_consolidated=False)

    @cached_property
    def dataset(self) -> xr.Dataset:
        """The cube lazily opened with xarray, for bbox and map queries: without dask, so a request reads only its
        window, in its own thread (dask's shared thread pool made concurrent requests queue behind each other)."""
        return xr.open_zarr(self.path, consolidated=False, chunks=None)

    @cached_property
    def spec(self) -> CubeSpec:
        return CubeSpec.model_validate_json(self.group.attrs["tamrl_spec"])

    @cached_property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    @cached_property
    def calibration(self) -> dict | None:
        """The checkpoint's calibration of the daily 90% intervals (`tamrl.calibration`), or None for a cube
        without one."""
        text = self.attrs.get("tamrl_calibration")
        return json.loads(text) if text else None

    @cached_property
    def lat(self) -> np.ndarray:
        return self.group["lat"][:]

    @cached_property
    def lon(self) -> np.ndarray:
        return self.group["lon"][:]

    @cached_property
    def times(self) -> pd.DatetimeIndex:
        return self.spec.times

    @cached_property
    def dates(self) -> list[str]:
        """The days as ISO strings, for answers."""
        return list(self.times.strftime("%Y-%m-%d"))

    @cached_property
    def land(self) -> np.ndarray:
        return self.group["land_mask"][:] == 1

    @cached_property
    def igbp(self) -> np.ndarray:
        return self.group["igbp"][:]

    @cached_property
    def origin(self) -> tuple[int, int]:
        """Global row and column of the cube's first cell."""
        return grid.cell_index(float(self.lat[0]), float(self.lon[0]))

    @cached_property
    def requested(self) -> tuple[slice, slice]:
        """Global rows and columns of the bbox the cube was computed for (the rest is chunk padding)."""
        return grid.bbox_slices(self.spec.request.bbox)

    @cached_property
    def stored(self) -> set[str]:
        """The names of the arrays in the store."""
        with warnings.catch_warnings():  # a cube at a URL holds its quicklook.png, which is no Zarr node
            warnings.filterwarnings("ignore", message="Object at .* is not recognized", category=UserWarning)
            return set(self.group.array_keys())

    @cached_property
    def arrays(self) -> dict[str, zarr.Array]:
        """The daily variables, opened once: every zarr group lookup reads metadata from the store. (The members'
        monthly means are not among them; cubes written before tamrl had them lack them.)"""
        return {name: self.group[name] for name in DAILY if name in self.stored}

    @property
    def variables(self) -> list[str]:
        return list(self.arrays)

    @property
    def members_monthly(self) -> bool:
        """Whether the cube holds each ensemble member's monthly means (`jobs.outputs.MEMBERS`)."""
        return set(MEMBERS) <= self.stored

    def contains(self, row: int, col: int) -> bool:
        """Whether the global cell (row, col) lies inside the cube's computed bbox."""
        rows, cols = self.requested
        return rows.start <= row < rows.stop and cols.start <= col < cols.stop

    def local(self, row: int, col: int) -> tuple[int, int]:
        return row - self.origin[0], col - self.origin[1]

    def prepare(self) -> None:
        """Read everything a point query needs besides chunks (metadata, coordinates, static layers)."""
        _ = self.requested, self.origin, self.land, self.igbp, self.arrays, self.dates, self.description, self.lat
        _ = self.calibration
        self.ready = True

    ready = False  # whether `prepare` ran: cache-only queries need it

    def series(self, name: str, i: int, j: int, t0: int, t1: int, cached_only: bool = False) -> np.ndarray:
        """Days ``t0:t1`` of variable ``name`` at local cell (i, j), through the chunk cache; ``cached_only`` raises
        NotCached rather than reading the store."""
        array = self.arrays[name]
        ct, cy, cx = array.chunks
        parts = []
        for k in range(t0 // ct, (t1 - 1) // ct + 1):
            y, x = i // cy, j // cx
            load = lambda k=k, y=y, x=x: array[k * ct : (k + 1) * ct, y * cy : (y + 1) * cy, x * cx : (x + 1) * cx]  # noqa: E731
            chunk = self.cache.get((self.path, self.token, name, k, y, x), None if cached_only else load)
            lo, hi = max(t0 - k * ct, 0), min(t1 - k * ct, chunk.shape[0])
            parts.append(chunk[lo:hi, i - y * cy, j - x * cx])
        return np.concatenate(parts)

    def window(self, name: str, days: slice, rows: slice, cols: slice) -> np.ndarray:
        """Days ``days`` of variable ``name`` over local ``rows`` and ``cols`` (days, rows, cols), assembled from
        whole chunks through the chunk cache, as map tiles read it."""
        array = self.arrays[name]
        out = np.empty((days.stop - days.start, rows.stop - rows.start, cols.stop - cols.start), array.dtype)
        parts = list(self._chunks(array, (days, rows, cols)))
        decoded = self._decoded(array, name, [(key, chunk) for key, chunk, _ in parts])
        for key, chunk, (t, y, x) in parts:
            cached = decoded[key]
            out[t.start - days.start : t.stop - days.start, y.start - rows.start : y.stop - rows.start,
                x.start - cols.start : x.stop - cols.start] = cached[grid.shift(t, chunk[0].start),
                                                                    grid.shift(y, chunk[1].start),
                                                                    grid.shift(x, chunk[2].start)]  # fmt: skip
        return out

    def _decoded(self, array: zarr.Array, name: str, chunks: list[tuple[tuple, tuple[slice, ...]]]) -> dict:
        """The decoded chunks (index -> values) from the cache; those not in it are read with one read of the block
        they span, since zarr decodes a block's chunks concurrently (a cold 200 x 200 day map: 37 ms chunk by
        chunk, about 20 ms at once), and cached."""
        found, missing = {}, []
        for key, chunk in chunks:
            try:
                found[key] = self.cache.get((self.path, self.token, name, *key), None)
            except NotCached:
                missing.append((key, chunk))
        if not missing:
            return found
        block = tuple(slice(min(c[d].start for _, c in missing), max(c[d].stop for _, c in missing)) for d in range(3))
        values = array[block]
        for key, chunk in missing:
            piece = values[tuple(grid.shift(c, b.start) for c, b in zip(chunk, block, strict=True))]
            found[key] = self.cache.get((self.path, self.token, name, *key), lambda piece=piece: piece.copy())
        return found

    @staticmethod
    def _chunks(array: zarr.Array, window: tuple[slice, ...]) -> Iterator[tuple[tuple, tuple[slice, ...], tuple]]:
        """The chunks of ``array`` that ``window`` touches: each chunk's index, its slices, and the part of the
        window inside it."""
        ranges = []
        for part, size, length in zip(window, array.chunks, array.shape, strict=True):
            ranges.append([(k, slice(k * size, min((k + 1) * size, length)))
                           for k in range(part.start // size, (part.stop - 1) // size + 1)])  # fmt: skip
        for combo in itertools.product(*ranges):
            key = tuple(k for k, _ in combo)
            chunk = tuple(s for _, s in combo)
            inside = tuple(slice(max(s.start, p.start), min(s.stop, p.stop))
                           for s, p in zip(chunk, window, strict=True))  # fmt: skip
            yield key, chunk, inside

    def series_cost(self, name: str, t0: int, t1: int) -> int:
        """Values decoded to read days ``t0:t1`` of variable ``name`` at one cell: every chunk `series` touches."""
        ct, cy, cx = self.arrays[name].chunks
        return ((t1 - 1) // ct - t0 // ct + 1) * ct * cy * cx

    @cached_property
    def description(self) -> dict:
        """What a client needs to know about the cube: extent, dates, variables, checkpoint, provenance."""
        spec, attrs = self.spec, self.attrs
        return {
            "name": self.name,
            "bbox": list(spec.request.bbox),
            "start": spec.request.start.isoformat(),
            "end": spec.request.end.isoformat(),
            "variables": self.variables,
            "checkpoint": spec.request.checkpoint,
            "checkpoint_sha256": spec.checkpoint_sha256,
            "feature_set": spec.feature_set,
            "ensemble_size": spec.request.members,
            "members_monthly": self.members_monthly,
            "synthetic": spec.synthetic,
            "source": attrs.get("source", ""),
            "references": attrs.get("references", ""),
        }


class Catalog:
    """The complete cubes under ``root`` (a folder or an fsspec URL such as ``s3://bucket/cubes``), by name (the
    store's name without ``.zarr``)."""

    def __init__(self, root: str | Path, cache_bytes: int = 1 << 30, hidden: Callable[[], Set[str]] = frozenset,
                 default: str | None = None):  # fmt: skip
        """``hidden()``: names not to serve even when complete (the outputs of live jobs). ``default``: the cube that
        queries without a cube name use where it holds what they ask (`service.queries`)."""
        self.root = str(root)
        self.hidden = hidden
        self.default = default
        self.fs, self.base = fsspec.core.url_to_fs(self.root)
        self.cache = ChunkCache(cache_bytes)
        self._open: dict[str, tuple[object, OpenCube | None]] = {}  # name -> (token seen, cube if complete)
        self._lock = threading.Lock()

    def cubes(self) -> list[OpenCube]:
        """The complete cubes now, sorted by name; opened or re-opened as their stores changed."""
        if not self.local:
            self.fs.invalidate_cache(self.base)  # object-store listings are cached; a new cube must show at once
        found = []
        for path, token in self._stores():
            name = _name(path)
            if name in self.hidden():
                continue
            with self._lock:
                seen, cube = self._open.get(name, (None, None))
                if seen != token:
                    cube = OpenCube(name, self.url(path), token, self.cache) if self._complete(path) else None
                    self._open[name] = (token, cube)
            if cube is not None:
                found.append(cube)
        return found

    def versions(self) -> list[tuple[str, object]]:
        """Each served cube's name and token: changes when a cube appears, goes, or is rewritten, resumed or
        finalized by a job (what an ETag is tied to, `service.web`)."""
        return [(cube.name, cube.token) for cube in self.cubes()]

    def get(self, name: str) -> OpenCube:
        """The cube called ``name``; NotFoundError naming the available ones."""
        for cube in self.cubes():
            if cube.name == name:
                return cube
        raise NotFoundError(f"no complete cube {name!r}; available: {_names(self.cubes())}")

    @property
    def local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def url(self, path: str) -> str:
        """A store's path as xarray and zarr open it: a plain path locally, else a URL with its protocol."""
        return path if self.local else self.fs.unstrip_protocol(path)

    def _stores(self) -> list[tuple[str, object]]:
        """The ``*.zarr`` stores under the root, sorted, each with its `_token`; stores without root metadata are
        left out."""
        try:
            if self.local:  # os calls: a tenth of fsspec's cost, and this runs on every query
                entries = [e.path for e in os.scandir(self.base) if e.name.endswith(".zarr")]
            else:
                entries = self.fs.glob(f"{self.base.rstrip('/')}/*.zarr")
        except (OSError, ValueError) as exc:
            raise _unavailable("the cubes folder", self.root, exc) from exc
        tokens = ((path, self._token(path)) for path in sorted(entries))
        return [(path, token) for path, token in tokens if token is not None]

    def _token(self, path: str) -> object | None:
        """What changes when the root metadata of the store at ``path`` is rewritten (mtime locally; ETag, time and
        size on object stores); None when the store has none (yet, or any more)."""
        meta = f"{path}/zarr.json"
        try:
            if self.local:
                return os.stat(meta).st_mtime_ns
            info = self.fs.info(meta)
        except INCOMPLETE:
            return None
        except (OSError, ValueError) as exc:
            raise _unavailable(f"cube {_name(path)!r}", path, exc) from exc
        return info.get("ETag"), info.get("LastModified"), info.get("size")

    def _complete(self, path: str) -> bool:
        """Whether the store at ``path`` is a complete tamrl cube (its spec set and every tile finalized); a root
        metadata file removed or half written since the listing is not complete."""
        try:
            attrs = json.loads(self.fs.cat_file(f"{path}/zarr.json")).get("attributes", {})
        except (*INCOMPLETE, ValueError):
            return False
        except OSError as exc:
            raise _unavailable(f"cube {_name(path)!r}", path, exc) from exc
        return attrs.get("tamrl_complete") == 1 and "tamrl_spec" in attrs


def _unavailable(what: str, path: str, exc: Exception) -> UnavailableError:
    """Log a storage error with its cause and the path, and the error the client gets (which names no path)."""
    log.error("cannot read %s at %s: %s: %s", what, path, type(exc).__name__, exc)
    return UnavailableError(
        f"{what} cannot be read ({type(exc).__name__}); the service's operator should check that it exists and that "
        "the service may read it (the service log names the cause)"
    )


def _name(path: str) -> str:
    """A cube's name: its store's name without ``.zarr``."""
    return path.rsplit("/", 1)[-1].removesuffix(".zarr")


def _names(cubes: list[OpenCube]) -> str:
    return ", ".join(c.name for c in cubes) or "none"
