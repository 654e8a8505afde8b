"""The output cube: a CF-described Zarr store of daily GPP, RECO and NEE (ensemble mean and spread) and each
ensemble member's monthly means, written tile by tile as xarray-beam does.

`create_cube` writes a template first: every attribute, coordinate and static layer, and the output variables
(`jobs.outputs`) as metadata only (a lazy template that is never computed, so unwritten chunks read as their fill).
Engine tasks then
write each tile as a region of whole chunks with `Cube.write_tile`, which refuses unaligned regions, and record it
in a ledger of one marker object per finished tile (NaN cannot tell "not yet written" from "ocean"). `Cube.finalize`
consolidates the metadata once every tile is in the ledger. Re-running a job with the same `CubeSpec` resumes it.
"""

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

import dask.array
import fsspec
import numpy as np
import pandas as pd
import xarray as xr
import zarr
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from jobs import grid, static
from jobs.outputs import DAILY, MEMBER_DIMS, OUTPUTS, VARIABLES, month_starts
from jobs.request import JobRequest
from jobs.tiles import CubeExtent, Tile, plan_tiles
from tamrl import __version__
from tamrl.attribution import FLUXNET_ATTRIBUTION
from tamrl.errors import ConfigError, DataError
from tamrl.features import FEATURE_SETS

LEDGER = "_ledger"  # Zarr group holding one marker object per finished tile
DEFAULT_CHUNK_TIME = 46  # days: a calendar year is 8 chunks
DEFAULT_CHUNK_SPACE = 50  # cells (2.5 deg): about 0.46 MB of float32 per chunk with 46 days
STATIC_CHUNK_FACTOR = 10  # igbp and land_mask chunks span 10 x 10 flux chunks: 120 objects for the globe, not 10,000
MEMBER_LONG_NAME = "ensemble member (checkpoint member index)"
PAPER = "Rozanov, Renganathan and Kumar, TAM-RL, arXiv 2603.09974 (2026)"


class CubeSpec(BaseModel):
    """Everything that decides a cube's content; stored as JSON in its ``tamrl_spec`` attribute.

    ``request`` is the job's request resolved: the checkpoint by name, the support years and the members filled
    in (`jobs.request.JobRequest`). A job resumes into an existing cube only when its spec is equal, field by
    field. Default chunks are 46 days x 50 x 50 cells (about 0.46 MB of float32), so that both point series and
    day maps (map tiles) read fast without a cache: reading two demo cubes cold with zarr, side by side on a 2-core
    machine, a one-day 200 x 200 map took 19-21 ms with these chunks and 31-36 ms with (92, 50, 50), the default
    until map tiles came, and a one-year point read of three variables 28-31 ms against 29-32 ms; (365, 25, 25)
    took 123 ms / 7.5 ms and (92, 100, 100) 38 ms / 99 ms (docs/BENCHMARKS.md, "Map tiles").
    ``chunk_time`` defaults to the whole period when that is shorter than 46 days. ``tile_chunks`` is part of the
    spec because tile ids, and so the ledger, depend on it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    request: JobRequest
    chunk_time: PositiveInt
    chunk_lat: PositiveInt = DEFAULT_CHUNK_SPACE
    chunk_lon: PositiveInt = DEFAULT_CHUNK_SPACE
    tile_chunks: PositiveInt = 2
    checkpoint_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    feature_set: str
    nee_rule: Literal["head", "balance"]  # tamrl.predict.NEE_RULES
    inference_mode: Literal["stateful", "windowed"]  # tamrl.predict.MODES
    synthetic: bool
    tamrl_version: str = __version__

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        """Read a spec of tamrl 0.x (the request's fields at the top level), and fill ``chunk_time`` with
        min(DEFAULT_CHUNK_TIME, days in the period) when it is not given."""
        if not isinstance(data, dict):
            return data
        if "request" not in data and "bbox" in data:
            flat = {"ensemble_size": "members", **{k: k for k in ("bbox", "start", "end", "support_years")}}
            moved = {new: data[old] for old, new in flat.items()} | {
                k: data[k] for k in ("checkpoint", "precision") if k in data
            }
            data = {k: v for k, v in data.items() if k not in {*flat, "checkpoint", "precision"}} | {"request": moved}
        if data.get("chunk_time") is None and "request" in data:
            request = JobRequest.model_validate(data["request"])
            data = {**data, "chunk_time": max(1, min(DEFAULT_CHUNK_TIME, request.days))}
        return data

    @field_validator("feature_set")
    @classmethod
    def _known_feature_set(cls, name: str) -> str:
        if name not in FEATURE_SETS:
            raise ValueError(f"feature_set must be one of {', '.join(FEATURE_SETS)}")
        return name

    @model_validator(mode="after")
    def _resolved(self) -> "CubeSpec":
        if self.request.support_years is None or self.request.members is None:
            raise ValueError("a cube's request has its support years and members resolved")
        return self

    @property
    def times(self) -> pd.DatetimeIndex:
        """The cube's days, start to end inclusive."""
        return pd.date_range(self.request.start, self.request.end, freq="D")

    @property
    def months(self) -> tuple[pd.DatetimeIndex, np.ndarray]:
        """The ``month`` coordinate of the member variables, one per calendar month the cube's days touch: the
        first cube day in it; and its bounds (month, 2): that day and the day after the last cube day in the month
        (end exclusive, as CF bounds are)."""
        times = self.times
        starts = month_starts(times)
        ends = times[np.append(starts[1:], len(times)) - 1] + pd.Timedelta(days=1)
        return times[starts], np.stack([times[starts].values, ends.values], axis=1)

    @property
    def sizes(self) -> dict[str, int]:
        """The sizes of the output variables' dimensions other than lat and lon."""
        return {"time": len(self.times), "month": len(self.months[0]), "member": self.request.members}


class Cube:
    """An open output cube: its tiles, the ledger of finished ones, and aligned tile writes.

    The handle holds only the URL, the spec and the storage options, so it pickles small and can be sent with
    each tile to a Dask task; every call opens the store itself.
    """

    def __init__(self, url: str, spec: CubeSpec, storage_options: dict | None = None):
        self.url = url
        self.spec = spec
        self.storage_options = storage_options

    @property
    def extent(self) -> CubeExtent:
        """The global rows and columns the cube covers: its bbox expanded to whole chunks."""
        return plan_tiles(self.spec.request.bbox, self.spec.chunk_lat, self.spec.chunk_lon, self.spec.tile_chunks)[0]

    @property
    def tiles(self) -> list[Tile]:
        """All tiles of the cube, row-major."""
        return plan_tiles(self.spec.request.bbox, self.spec.chunk_lat, self.spec.chunk_lon, self.spec.tile_chunks)[1]

    def finished(self) -> set[str]:
        """Ids of the tiles in the ledger: written completely, so a resumed job skips them."""
        fs, root = _fs(self.url, self.storage_options)
        ledger = f"{root}/{LEDGER}"
        fs.invalidate_cache(ledger)  # object-store listings are cached; a stale one would redo finished tiles
        return {path.rsplit("/", 1)[-1] for path in fs.find(ledger)} - {"zarr.json"}

    def write_tile(self, tile: Tile, values: dict[str, np.ndarray]) -> None:
        """Write the output variables of ``tile`` (arrays of their dims, `jobs.outputs.Output.dims`, the fill off
        land), then mark it finished.

        The region must be whole chunks of the store (ValueError otherwise), so concurrent writers never share a
        chunk. Values off land (``land_mask`` 0) must be NaN, as the cube promises. The marker is written after the
        data: a crash in between leaves the tile to be computed again.
        """
        with writing(self.url):
            group = _open_group(self.url, self.storage_options, mode="r+")
            _check_aligned(tile, group[DAILY[0]])
            data = _checked_values(values, self.spec.sizes, tile.shape)
            _check_nan_off_land(tile, data, group["land_mask"][tile.cube_rows, tile.cube_cols] == 1)
            for name in VARIABLES:
                group[name][..., tile.cube_rows, tile.cube_cols] = data[name]
            fs, root = _fs(self.url, self.storage_options)
            fs.pipe_file(f"{root}/{LEDGER}/{tile.id}", datetime.now(UTC).isoformat().encode())

    def finalize(self) -> None:
        """Mark the cube complete (``tamrl_complete = 1``) and consolidate its metadata, once every tile is done.

        Raises DataError naming how many tiles are missing otherwise.
        """
        ids = [tile.id for tile in self.tiles]
        missing = sorted(set(ids) - self.finished())
        if missing:
            raise DataError(
                f"cube {self.url} lacks {len(missing)} of {len(ids)} tiles (first: {', '.join(missing[:3])}); "
                "run the job again to compute them, then finalize"
            )
        with writing(self.url):
            self._mark_complete()

    def _mark_complete(self) -> None:
        group = _open_group(self.url, self.storage_options, mode="r+")
        group.attrs["tamrl_complete"] = 1
        with warnings.catch_warnings():
            # the ledger's markers are not Zarr nodes, and consolidated metadata is not in the Zarr v3 spec yet
            warnings.filterwarnings("ignore", message=r"Object at r\d+_c\d+ is not recognized", category=UserWarning)
            warnings.filterwarnings("ignore", message="Consolidated metadata is currently not", category=UserWarning)
            zarr.consolidate_metadata(group.store)


def create_cube(
    url: str,
    spec: CubeSpec,
    *,
    igbp: xr.DataArray,
    extra_attrs: dict | None = None,
    overwrite: bool = False,
    storage_options: dict | None = None,
) -> Cube:
    """Open the cube at ``url`` for writing: resume it if its spec equals ``spec``, else write its template.

    ``igbp`` is the MCD12C1 class on the grid, covering at least the cube's extent (`jobs.static.igbp` of
    ``Cube.extent.bbox`` or the globe); the land mask is derived from it. ``extra_attrs`` are added to the global
    attributes. A store made from another spec raises ConfigError naming the differing fields, unless
    ``overwrite``, which deletes it (ledger included) and starts afresh. ``url`` is a local path or any fsspec
    URL (``s3://``, ``memory://``, ...), opened with ``storage_options``.
    """
    with writing(url):
        return _create(url, spec, igbp, extra_attrs, overwrite, storage_options)


def _create(url: str, spec: CubeSpec, igbp: xr.DataArray, extra_attrs: dict | None, overwrite: bool,
            storage_options: dict | None) -> Cube:  # fmt: skip
    cube = Cube(url, spec, storage_options)
    fs, root = _fs(url, storage_options)
    if overwrite and fs.exists(root):
        fs.rm(root, recursive=True)
    elif fs.exists(f"{root}/zarr.json"):
        _check_same_spec(url, spec, storage_options)
        return cube
    template = _template(spec, cube.extent, _on_extent(igbp, cube.extent))
    reserved = set(template.attrs) & set(extra_attrs or {})
    if reserved:
        raise ConfigError(f"extra_attrs may not set {', '.join(sorted(reserved))}: the writer sets them")
    template.attrs.update(extra_attrs or {})
    template.to_zarr(
        url,
        mode="w-",
        compute=False,  # the flux variables stay metadata; coordinates and static layers are written now
        encoding=_encoding(spec, cube.extent),
        consolidated=False,
        zarr_format=3,
        storage_options=storage_options,
    )
    group = _open_group(url, storage_options, mode="r+")
    # an empty group, so readers that list the store see a Zarr node rather than warning about foreign objects
    group.create_group(LEDGER)
    # the spec goes in last: a template interrupted before this point is never taken for a complete one
    group.attrs["tamrl_spec"] = spec.model_dump_json()
    return cube


@contextmanager
def writing(url: str) -> Iterator[None]:
    """Turn a failing write (read-only location, full disk, lost connection) into a DataError that says so."""
    try:
        yield
    except OSError as exc:
        raise DataError(
            f"cannot write the cube at {url} ({type(exc).__name__}: {exc}); check that the location is writable and "
            "has space, then run the job again to resume"
        ) from exc


def _template(spec: CubeSpec, extent: CubeExtent, igbp: xr.DataArray) -> xr.Dataset:
    """The cube as a Dataset whose output variables are lazy fill arrays (never computed)."""
    times, (months, month_bounds) = spec.times, spec.months
    space = (len(extent.lat), len(extent.lon))
    fluxes = {
        name: (o.dims, dask.array.full(o.shape(spec.sizes, space), o.fill, dtype=o.dtype, chunks=-1), o.attrs)
        for name, o in OUTPUTS.items()
    }
    mask = static.land_mask(igbp)
    land = mask.astype(np.uint8).assign_attrs(
        mask.attrs, flag_values=np.array([0, 1], dtype=np.uint8), flag_meanings="not_computed computed"
    )
    coords = {
        "time": ("time", times, {"standard_name": "time", "long_name": "day", "axis": "T"}),
        "month": ("month", months, {"long_name": "month", "bounds": "month_bnds"}),
        "month_bnds": (("month", "bnds"), month_bounds),
        "member": ("member", np.arange(spec.request.members, dtype=np.int32), {"long_name": MEMBER_LONG_NAME}),
        "lat": ("lat", extent.lat, {**static.LAT_ATTRS, "axis": "Y", "bounds": "lat_bnds"}),
        "lon": ("lon", extent.lon, {**static.LON_ATTRS, "axis": "X", "bounds": "lon_bnds"}),
        "lat_bnds": (("lat", "bnds"), grid.lat_bounds()[extent.rows]),
        "lon_bnds": (("lon", "bnds"), grid.lon_bounds()[extent.cols]),
    }
    data_vars = {**fluxes, "igbp": igbp.variable, "land_mask": land.variable}
    return xr.Dataset(data_vars, coords=coords, attrs=_global_attrs(spec))


def _global_attrs(spec: CubeSpec) -> dict[str, Any]:
    attrs = {
        "Conventions": "CF-1.8",
        "title": "TAM-RL daily GPP, RECO and NEE on the 0.05 deg grid",
        "source": f"TAM-RL model, checkpoint {spec.request.checkpoint} (sha256 {spec.checkpoint_sha256})",
        "references": f"{PAPER}. {FLUXNET_ATTRIBUTION}",
        "history": f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} created by tamrl {spec.tamrl_version} (jobs.writer)",
        "time_coverage_start": spec.request.start.isoformat(),
        "time_coverage_end": spec.request.end.isoformat(),
        "ensemble_size": spec.request.members,
        "precision": spec.request.precision,
        "support_years": list(spec.request.support_years),
        "feature_set": spec.feature_set,
        "nee_rule": spec.nee_rule,
        "inference_mode": spec.inference_mode,
        "synthetic": int(spec.synthetic),
        "tamrl_complete": 0,
    }
    if spec.synthetic:
        attrs["comment"] = (
            "SYNTHETIC DRIVERS: the weather and reflectance behind these fluxes were invented by jobs.synthetic "
            "for testing and demonstration. The values are not estimates of real carbon fluxes."
        )
    return attrs


def _encoding(spec: CubeSpec, extent: CubeExtent) -> dict[str, dict]:
    # a member variable's chunk holds all months and members, so that a tile writes whole chunks
    chunks = {"time": spec.chunk_time, "lat": spec.chunk_lat, "lon": spec.chunk_lon} | {
        dim: size for dim, size in spec.sizes.items() if dim in MEMBER_DIMS
    }
    fluxes = {
        name: {"dtype": o.dtype, "chunks": tuple(chunks[dim] for dim in o.dims), "_FillValue": o.fill}
        for name, o in OUTPUTS.items()
    }
    static_chunks = (
        min(STATIC_CHUNK_FACTOR * spec.chunk_lat, len(extent.lat)),
        min(STATIC_CHUNK_FACTOR * spec.chunk_lon, len(extent.lon)),
    )
    layers = {name: {"chunks": static_chunks, "_FillValue": None} for name in ("igbp", "land_mask")}
    start = spec.request.start.isoformat()
    time = {"units": f"days since {start}", "calendar": "proleptic_gregorian", "dtype": "int32"}
    return {**fluxes, **layers, "time": time, "month": time, "month_bnds": time}


def _on_extent(igbp: xr.DataArray, extent: CubeExtent) -> xr.DataArray:
    """``igbp`` cut to exactly the extent's cells, or DataError saying what to pass."""
    try:
        return igbp.sel(lat=extent.lat, lon=extent.lon)
    except KeyError as exc:
        raise DataError(
            f"igbp does not cover the cube's extent {extent.bbox} on the 0.05 deg grid; "
            "pass jobs.static.igbp(cube extent bbox) or the global layer"
        ) from exc


def _check_same_spec(url: str, spec: CubeSpec, storage_options: dict | None) -> None:
    """ConfigError unless the store at ``url`` is a cube of exactly ``spec``."""
    stored = _open_group(url, storage_options, mode="r").attrs.get("tamrl_spec")
    hint = "pass --overwrite to replace it, or choose another output"
    if stored is None:
        raise ConfigError(f"{url} holds no tamrl cube (or its creation was interrupted); {hint}")
    old, new = _flat(json.loads(stored)), _flat(json.loads(spec.model_dump_json()))
    differing = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
    if differing:
        changes = "; ".join(f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in differing)
        raise ConfigError(f"{url} holds a cube of another spec ({changes}); {hint}")


def _flat(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec's fields with the request's inlined as ``request.<field>``, to name what differs."""
    request = spec.get("request", {})
    return {k: v for k, v in spec.items() if k != "request"} | {f"request.{k}": v for k, v in request.items()}


def _check_aligned(tile: Tile, array: zarr.Array) -> None:
    """ValueError unless the tile's lat/lon region is whole chunks of ``array`` (the last may end at its edge)."""
    for dim, cells, chunk, size in zip(
        ("lat", "lon"), (tile.cube_rows, tile.cube_cols), array.chunks[1:], array.shape[1:], strict=True
    ):
        if not (0 <= cells.start < cells.stop <= size and cells.start % chunk == 0):
            raise ValueError(f"tile {tile.id}: {dim} {cells.start}:{cells.stop} does not start on a chunk of "
                             f"{chunk} cells inside 0:{size}; write the tiles of Cube.tiles")
        if cells.stop % chunk and cells.stop != size:
            raise ValueError(f"tile {tile.id}: {dim} {cells.start}:{cells.stop} ends inside a chunk of {chunk} "
                             f"cells (size {size}); write the tiles of Cube.tiles")


def _checked_values(values: dict[str, np.ndarray], sizes: dict[str, int], space: tuple[int, int]
                    ) -> dict[str, np.ndarray]:  # fmt: skip
    """``values`` as arrays of their outputs' dtypes, or ValueError for missing or extra variables and wrong
    shapes (``sizes``: of the dims other than lat and lon, `CubeSpec.sizes`; ``space``: the tile's shape)."""
    if set(values) != set(VARIABLES):
        raise ValueError(f"write_tile needs exactly {', '.join(VARIABLES)}; got {', '.join(sorted(values))}")
    data = {name: np.asarray(values[name], dtype=o.dtype) for name, o in OUTPUTS.items()}
    wrong = {
        name: f"{a.shape}, not {OUTPUTS[name].dims} = {OUTPUTS[name].shape(sizes, space)}"
        for name, a in data.items()
        if a.shape != OUTPUTS[name].shape(sizes, space)
    }
    if wrong:
        raise ValueError(f"write_tile got arrays of the wrong shape: {wrong}")
    return data


def _check_nan_off_land(tile: Tile, data: dict[str, np.ndarray], land: np.ndarray) -> None:
    """ValueError naming the variables that hold values in cells off land."""
    wet = [name for name, values in data.items() if not _is_fill(values[..., ~land], OUTPUTS[name].fill).all()]
    if wet:
        raise ValueError(
            f"tile {tile.id}: {', '.join(wet)} hold values off land (land_mask 0); leave those cells at the fill value"
        )


def _is_fill(values: np.ndarray, fill: float) -> np.ndarray:
    return np.isnan(values) if np.isnan(fill) else values == fill


def _fs(url: str, storage_options: dict | None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and root path of ``url``."""
    fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, root.rstrip("/")


def _open_group(url: str, storage_options: dict | None, mode: Literal["r", "r+"]) -> zarr.Group:
    return zarr.open_group(url, mode=mode, storage_options=storage_options, zarr_format=3)
