"""Flux queries on the served cubes: a point's series (``GET /flux``), a bbox's cells, regional total or per-cell
GeoTIFF (``GET /flux/bbox``) and a map (``GET /flux/map.png``).

Each endpoint's ``format`` picks an entry of a registry: `service.downloads.POINT_FORMATS` renders the point series'
one document as JSON, CSV or CoverageJSON; `BBOX_FORMATS` answers a bbox as JSON, NetCDF or a GeoTIFF.

Handlers that read cubes are plain ``def`` (FastAPI runs them in its thread pool, so blocking xarray and zarr reads
never stall the event loop); the point query alone answers on the event loop when its chunks are in memory, and
hands reads to the thread pool otherwise. Every read of cube values is admitted by its cost first
(`service.admission`). Every answer names the cube it comes from: ``cube`` in JSON, the ``Tamrl-Cube`` header in all
formats.
"""

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from functools import partial
from typing import Annotated, Literal

import numpy as np
import xarray as xr
from fastapi import APIRouter, Depends, Query, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BeforeValidator

from jobs import grid
from jobs.outputs import spread_of
from jobs.provenance import provenance
from jobs.quicklook import render_map
from jobs.request import not_nan
from service.admission import Admission, dataset_cost
from service.catalog import Catalog, NotCached, OpenCube
from service.dependencies import AdmissionDep, CatalogDep, SettingsDep
from service.downloads import AGGREGATES, GEOTIFF, POINT_FORMATS, geotiff, to_json
from service.queries import Period, PointSeries, bbox_subset, cube_holding, locate_point, parse_variables, regional
from service.routes import PROBLEMS
from service.schemas import EXAMPLE_BBOX, PointResponse, RegionalResponse, SubsetResponse
from service.settings import Settings
from tamrl.errors import DataError, TooLargeError
from tamrl.features import TARGET_UNITS

Lat = Annotated[
    float, Query(ge=-90, le=90, description="latitude in degrees north", examples=[47.3]), BeforeValidator(not_nan)
]
Lon = Annotated[
    float,
    Query(ge=-180, le=180, description="longitude in degrees east, -180..180", examples=[8.5]),
    BeforeValidator(not_nan),
]
Start = Annotated[date | None, Query(description="first day (default: the cube's first)", examples=["2019-06-01"])]
End = Annotated[date | None, Query(description="last day, inclusive (default: the cube's last)")]
Variables = Annotated[
    str | None,
    Query(description="comma-separated subset of GPP, RECO, NEE (default: all)", examples=["GPP,NEE"], max_length=50),
]
CubeName = Annotated[
    str | None,
    Query(description="a cube's name (default: the only cube holding the request, else the service's default cube)"),
]
CUBE_HEADER = "Tamrl-Cube"  # names the cube an answer comes from
BboxText = Annotated[
    str, Query(description="W,S,E,N in degrees", examples=[",".join(map(str, EXAMPLE_BBOX))], max_length=200)
]

router = APIRouter(tags=["flux"])


@dataclass
class PointQuery:
    """The query of ``GET /flux``: which cell, days and variables, in which form."""

    lat: Lat
    lon: Lon
    start: Start = None
    end: End = None
    variables: Variables = None
    format: Annotated[
        Literal["json", "csv", "covjson"],
        Query(description="json, csv (with `#` lines of units and provenance) or covjson (CoverageJSON)"),
    ] = "json"
    cube: CubeName = None


@dataclass
class BboxQuery:
    """The query of ``GET /flux/bbox``: which cells, days and variables, in which form."""

    bbox: BboxText
    start: Start = None
    end: End = None
    variables: Variables = None
    format: Annotated[
        Literal["json", "netcdf", "geotiff"],
        Query(description="json, netcdf, or geotiff (a Cloud-Optimized GeoTIFF of each cell's period mean or total)"),
    ] = "json"
    aggregate: Annotated[
        Literal["total", "mean"] | None,
        Query(
            description="format=json: the bbox's regional total (Tg C) or mean (g C m-2 d-1); format=geotiff: "
            "each cell's mean (g C m-2 d-1, the default) or total (g C m-2) over the period"
        ),
    ] = None
    cube: CubeName = None


@dataclass(frozen=True)
class BboxCall:
    """One ``GET /flux/bbox`` call: the app's parts, the query, and its bbox and variables parsed."""

    settings: Settings
    catalog: Catalog
    admission: Admission
    query: BboxQuery
    box: tuple[float, float, float, float]
    names: list[str]

    def subset(self, limit: int, spreads: bool = True) -> tuple[xr.Dataset, OpenCube]:
        """The lazy subset the call asks for (`service.queries.bbox_subset`, at most ``limit`` values) and its
        cube."""
        query = self.query
        subset = bbox_subset(self.catalog, self.box, Period(query.start, query.end), self.names, limit, query.cube,
                             spreads=spreads)  # fmt: skip
        return subset, self.catalog.get(subset.attrs["tamrl_cube"])


@router.get("/flux", responses={
    200: {"model": PointResponse, "content": {form.media_type: {} for form in POINT_FORMATS.values()}}, **PROBLEMS
})  # fmt: skip
async def flux(catalog: CatalogDep, admission: AdmissionDep, query: Annotated[PointQuery, Depends()]) -> Response:
    """The daily series of the cell that holds (lat, lon), with the ensemble spread, the calibrated 90% interval
    (a cube with a calibration) and provenance, as JSON, CSV or CoverageJSON."""
    # On the event loop when everything is in memory (a thread hop costs a fifth of a cached query's time);
    # reads from stores go to the thread pool.
    answer = partial(_point_answer, catalog, admission, query)
    try:
        return answer(cached_only=True)
    except NotCached:
        return await run_in_threadpool(answer, cached_only=False)


@router.get(
    "/flux/bbox", responses={
        200: {"model": SubsetResponse | RegionalResponse, "content": {"application/x-netcdf": {}, GEOTIFF: {}}},
        **PROBLEMS,
    },
)  # fmt: skip
def flux_bbox(settings: SettingsDep, catalog: CatalogDep, admission: AdmissionDep,
              query: Annotated[BboxQuery, Depends()]) -> Response:  # fmt: skip
    """The cells of a bbox over a period (JSON or NetCDF); with ``aggregate`` the area-weighted regional total (Tg C
    over the period) or mean (g C m-2 d-1) per variable; or with ``format=geotiff`` a Cloud-Optimized GeoTIFF of each
    cell's period mean or total, a band per variable."""
    call = BboxCall(settings, catalog, admission, query, _bbox(query.bbox), parse_variables(query.variables))
    return BBOX_FORMATS[query.format](call)


@router.get(
    "/flux/map.png", response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the map"}, **PROBLEMS},
)  # fmt: skip
def flux_map(settings: SettingsDep, catalog: CatalogDep, admission: AdmissionDep, bbox: BboxText,
             start: Start = None, end: End = None, variable: Literal["GPP", "RECO", "NEE"] = "GPP",
             cube: CubeName = None) -> Response:  # fmt: skip
    """A PNG map of the mean daily ``variable`` over a bbox and period."""
    box = _bbox(bbox)
    _check_pixels(box, settings.max_map_cells, "the map")
    subset = bbox_subset(catalog, box, Period(start, end), [variable], settings.max_aggregate_cells, cube,
                         spreads=False)  # fmt: skip
    with admission.admit(dataset_cost(subset), "a map"):
        png = render_map(subset, variable)
    return _named(Response(png, media_type="image/png"), catalog.get(subset.attrs["tamrl_cube"]))


def _point_answer(catalog: Catalog, admission: Admission, query: PointQuery, cached_only: bool) -> Response:
    names = parse_variables(query.variables)
    located = locate_point(catalog, query.lat, query.lon, Period(query.start, query.end), query.cube, cached_only)
    with admission.admit(0 if cached_only else located.cost(names), "a point series"):
        series = located.read(names, cached_only)
    document = _point_document(series, names, query)
    form = POINT_FORMATS[query.format]
    response = Response(form.render(document), media_type=form.media_type)
    if form.suffix:
        time = document["time"]
        name = f"{series.cube.name}_{document['cell_lat']:.3f}_{document['cell_lon']:.3f}_{time[0]}_{time[-1]}"
        _attach(response, name + form.suffix)
    return _named(response, series.cube)


def _point_document(series: PointSeries, names: list[str], query: PointQuery) -> dict:
    """The point series as ``GET /flux`` answers it in JSON, which every format renders."""
    cube, (i, j) = series.cube, series.cell
    return {
        "cube": cube.name, "lat": query.lat, "lon": query.lon, "cell_lat": float(cube.lat[i]),
        "cell_lon": float(cube.lon[j]), "igbp": int(cube.igbp[i, j]), "units": TARGET_UNITS,
        "time": cube.dates[series.days], "variables": {name: _series(series, name) for name in names},
        "provenance": _provenance(cube),
    }  # fmt: skip


def _series(series: PointSeries, name: str) -> dict[str, np.ndarray]:
    """Flux ``name``'s values and std, and its calibrated p05 and p95 where the cube has a calibration."""
    out = {"values": series.values[name], "std": series.values[spread_of(name)]}
    bounds = series.bounds(name)
    if bounds is not None:
        out["p05"], out["p95"] = bounds
    return {key: _rounded(values) for key, values in out.items()}


def _bbox_json(call: BboxCall) -> Response:
    """The cells as nested lists or, with ``aggregate``, the bbox's regional total or mean."""
    if call.query.aggregate:
        return _regional_answer(call)
    subset, source = call.subset(call.settings.max_cells)
    with call.admission.admit(dataset_cost(subset), "a bbox subset"):
        return _named(_subset_answer(subset, source, call.names), source)


def _bbox_netcdf(call: BboxCall) -> Response:
    """The cells as a NetCDF file."""
    if call.query.aggregate:
        raise DataError(
            f"format=netcdf has no aggregate; leave out aggregate for the cells, or use format=json for the regional "
            f"{call.query.aggregate} or format=geotiff for each cell's {call.query.aggregate}"
        )
    subset, source = call.subset(call.settings.max_cells)
    with call.admission.admit(dataset_cost(subset), "a bbox subset"):
        response = Response(_netcdf(subset), media_type="application/x-netcdf")
    return _named(_attach(response, f"{source.name}_subset.nc"), source)


def _bbox_geotiff(call: BboxCall) -> Response:
    """Each cell's period mean (default) or total as a Cloud-Optimized GeoTIFF, a band per variable."""
    how = call.query.aggregate or "mean"
    _check_pixels(call.box, call.settings.max_map_cells, "the GeoTIFF")
    subset, source = call.subset(call.settings.max_aggregate_cells, spreads=False)
    with call.admission.admit(dataset_cost(subset), f"a GeoTIFF of the {how}"):
        tif = geotiff(subset, call.names, how, _provenance(source))
    start, end = subset.attrs["time_coverage_start"], subset.attrs["time_coverage_end"]
    name = f"{source.name}_{'-'.join(call.names)}_{start}_{end}{AGGREGATES[how].name_suffix}.tif"
    return _named(_attach(Response(tif, media_type=GEOTIFF), name), source)


BBOX_FORMATS: dict[str, Callable[[BboxCall], Response]] = {
    "json": _bbox_json, "netcdf": _bbox_netcdf, "geotiff": _bbox_geotiff
}  # fmt: skip


def _regional_answer(call: BboxCall) -> Response:
    query, box, names = call.query, call.box, call.names
    rows, cols = grid.bbox_slices(box)
    cube, days = cube_holding(call.catalog, rows, cols, Period(query.start, query.end), f"bbox {box}", query.cube)
    cost = (rows.stop - rows.start) * (cols.stop - cols.start) * (days.stop - days.start) * 2 * len(names)
    with call.admission.admit(cost, f"a bbox {query.aggregate}"):
        numbers = regional(cube, box, days, names, query.aggregate, call.settings.max_aggregate_cells)
    times = cube.times[days]
    body = {
        "cube": cube.name, "bbox": list(box), "start": f"{times[0]:%Y-%m-%d}", "end": f"{times[-1]:%Y-%m-%d}",
        "aggregate": query.aggregate, **numbers, "provenance": _provenance(cube),
    }  # fmt: skip
    return _named(_json(body), cube)


def _subset_answer(subset: xr.Dataset, source: OpenCube, names: list[str]) -> Response:
    loaded = subset.load()
    body = {
        "cube": source.name, "lat": loaded.lat.values.tolist(), "lon": loaded.lon.values.tolist(),
        "time": [f"{t:%Y-%m-%d}" for t in subset.indexes["time"]], "units": TARGET_UNITS,
        "variables": {n: _rounded(loaded[n].values) for v in names for n in (v, spread_of(v))},
        "provenance": _provenance(source),
    }  # fmt: skip
    return _json(body)


def _bbox(text: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError as exc:
        raise DataError(f"bbox {text!r} must be four comma-separated numbers W,S,E,N") from exc
    if len(values) != 4 or not all(map(math.isfinite, values)):
        raise DataError(f"bbox {text!r} must be four finite numbers W,S,E,N")
    grid.bbox_slices(values)  # inverted, off the globe or empty: DataError
    return values  # type: ignore[return-value]


def _check_pixels(box: tuple[float, float, float, float], limit: int, what: str) -> None:
    """TooLargeError when the bbox holds over ``limit`` grid cells (the pixels of a map or GeoTIFF)."""
    rows, cols = grid.bbox_slices(box)
    if (rows.stop - rows.start) * (cols.stop - cols.start) > limit:
        raise TooLargeError(f"{what} would have over {limit:,} pixels; ask for a smaller bbox")


def _attach(response: Response, filename: str) -> Response:
    """``response`` as a download saved as ``filename``."""
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _named(response: Response, cube: OpenCube) -> Response:
    """``response`` with the header naming the cube it comes from."""
    response.headers[CUBE_HEADER] = cube.name
    return response


def _provenance(cube: OpenCube) -> dict:
    return provenance(cube.name, cube.spec, cube.attrs)


def _rounded(values: np.ndarray) -> np.ndarray:
    """Values rounded to 5 decimals (float32 holds about 7 digits); `_json` writes NaN as null."""
    return np.round(values.astype(np.float64), 5)


def _json(body: dict) -> Response:
    return Response(to_json(body), media_type="application/json")


def _netcdf(subset: xr.Dataset) -> bytes:
    ds = subset.load()
    for var in ds.variables.values():
        var.encoding = {}
    buffer = io.BytesIO()
    ds.to_netcdf(buffer, engine="h5netcdf")
    return buffer.getvalue()
