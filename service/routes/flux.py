"""Flux queries on the served cubes: a point's series (``GET /flux``), a bbox's cells or regional total
(``GET /flux/bbox``) and a map (``GET /flux/map.png``).

Handlers that read cubes are plain ``def`` (FastAPI runs them in its thread pool, so blocking xarray and zarr reads
never stall the event loop); the point query alone answers on the event loop when its chunks are in memory, and
hands reads to the thread pool otherwise. Every read of cube values is admitted by its cost first
(`service.admission`). Every answer names the cube it comes from: ``cube`` in JSON, the ``Tamrl-Cube`` header in all
formats.
"""

import io
import math
from dataclasses import dataclass
from datetime import date
from functools import partial
from typing import Annotated, Literal

import numpy as np
import orjson
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
from service.queries import Period, bbox_subset, cube_holding, locate_point, parse_variables, regional
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
    format: Literal["json", "csv"] = "json"
    cube: CubeName = None


@dataclass
class BboxQuery:
    """The query of ``GET /flux/bbox``: which cells, days and variables, in which form."""

    bbox: BboxText
    start: Start = None
    end: End = None
    variables: Variables = None
    format: Literal["json", "netcdf"] = "json"
    aggregate: Literal["total", "mean"] | None = None
    cube: CubeName = None


@router.get("/flux", responses={200: {"model": PointResponse, "content": {"text/csv": {}}}, **PROBLEMS})
async def flux(catalog: CatalogDep, admission: AdmissionDep, query: Annotated[PointQuery, Depends()]) -> Response:
    """The daily series of the cell that holds (lat, lon), with the ensemble spread and provenance."""
    # On the event loop when everything is in memory (a thread hop costs a fifth of a cached query's time);
    # reads from stores go to the thread pool.
    answer = partial(_point_answer, catalog, admission, query)
    try:
        return answer(cached_only=True)
    except NotCached:
        return await run_in_threadpool(answer, cached_only=False)


@router.get(
    "/flux/bbox", responses={
        200: {"model": SubsetResponse | RegionalResponse, "content": {"application/x-netcdf": {}}}, **PROBLEMS
    },
)  # fmt: skip
def flux_bbox(settings: SettingsDep, catalog: CatalogDep, admission: AdmissionDep,
              query: Annotated[BboxQuery, Depends()]) -> Response:  # fmt: skip
    """The cells of a bbox over a period (JSON or NetCDF), or with ``aggregate`` the area-weighted regional
    total (Tg C over the period) or mean (g C m-2 d-1) per variable."""
    box, names = _bbox(query.bbox), parse_variables(query.variables)
    if query.aggregate:
        if query.format != "json":
            raise DataError(f"aggregate={query.aggregate} answers JSON only; leave out format or use format=json")
        return _regional_answer(settings, catalog, admission, query, box, names)
    subset = bbox_subset(catalog, box, Period(query.start, query.end), names, settings.max_cells, query.cube)
    source = catalog.get(subset.attrs["tamrl_cube"])
    with admission.admit(dataset_cost(subset), "a bbox subset"):
        if query.format == "netcdf":
            response = Response(
                _netcdf(subset),
                media_type="application/x-netcdf",
                headers={"Content-Disposition": f'attachment; filename="{source.name}_subset.nc"'},
            )
        else:
            response = _subset_answer(subset, source, names)
    return _named(response, source)


@router.get(
    "/flux/map.png", response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the map"}, **PROBLEMS},
)  # fmt: skip
def flux_map(settings: SettingsDep, catalog: CatalogDep, admission: AdmissionDep, bbox: BboxText,
             start: Start = None, end: End = None, variable: Literal["GPP", "RECO", "NEE"] = "GPP",
             cube: CubeName = None) -> Response:  # fmt: skip
    """A PNG map of the mean daily ``variable`` over a bbox and period."""
    box = _bbox(bbox)
    rows, cols = grid.bbox_slices(box)
    if (rows.stop - rows.start) * (cols.stop - cols.start) > settings.max_map_cells:
        raise TooLargeError(f"the map would have over {settings.max_map_cells:,} pixels; ask for a smaller bbox")
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
    if query.format == "csv":
        return _named(Response(series.frame().to_csv(float_format="%.4f"), media_type="text/csv"), series.cube)
    i, j = series.cell
    body = {
        "cube": series.cube.name, "lat": query.lat, "lon": query.lon, "cell_lat": float(series.cube.lat[i]),
        "cell_lon": float(series.cube.lon[j]), "igbp": int(series.cube.igbp[i, j]), "units": TARGET_UNITS,
        "time": series.cube.dates[series.days],
        "variables": {n: {"values": _rounded(series.values[n]), "std": _rounded(series.values[spread_of(n)])}
                      for n in names},
        "provenance": _provenance(series.cube),
    }  # fmt: skip
    return _named(_json(body), series.cube)


def _regional_answer(settings: Settings, catalog: Catalog, admission: Admission, query: BboxQuery,
                     box: tuple[float, float, float, float], names: list[str]) -> Response:  # fmt: skip
    rows, cols = grid.bbox_slices(box)
    cube, days = cube_holding(catalog, rows, cols, Period(query.start, query.end), f"bbox {box}", query.cube)
    cost = (rows.stop - rows.start) * (cols.stop - cols.start) * (days.stop - days.start) * 2 * len(names)
    with admission.admit(cost, f"a bbox {query.aggregate}"):
        numbers = regional(cube, box, days, names, query.aggregate, settings.max_aggregate_cells)
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
    """JSON with numpy arrays as lists and NaN as null (orjson: about 10 times faster than json for these bodies)."""
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


def _netcdf(subset: xr.Dataset) -> bytes:
    ds = subset.load()
    for var in ds.variables.values():
        var.encoding = {}
    buffer = io.BytesIO()
    ds.to_netcdf(buffer, engine="h5netcdf")
    return buffer.getvalue()
