"""Carbon totals over polygons: ``POST /flux/region`` with a GeoJSON body (`jobs.regions`, `jobs.totals`).

The body is read whole (it is limited in bytes by `service.limits.BodyLimit`, in features and vertices here), parsed
and weighted in the thread pool, and the read is admitted by its cost (`service.admission`) like every other read of
cube values. The answer is `jobs.reports`' document, the same that ``tamrl totals`` writes.
"""

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from jobs.regions import CellWeights, Region, RegionLimits, cell_weights, parse_regions
from jobs.reports import FORMATS, report
from jobs.totals import CubeSource, TotalsQuery, cube_days, read_cost, totals
from service.admission import Admission
from service.catalog import Catalog, OpenCube
from service.dependencies import AdmissionDep, CatalogDep, SettingsDep
from service.queries import Period, cube_holding, parse_variables
from service.routes import PROBLEMS
from service.routes.flux import CUBE_HEADER, CubeName, End, Start, Variables
from service.settings import Settings

router = APIRouter(tags=["flux"])
EXAMPLE = {
    "type": "FeatureCollection",
    "features": [{"type": "Feature", "id": "bavaria-farm", "properties": {"owner": "example"},
                  "geometry": {"type": "Polygon", "coordinates": [[[11.5, 48.1], [11.52, 48.1], [11.52, 48.12],
                                                                    [11.5, 48.12], [11.5, 48.1]]]}}],
}  # fmt: skip
BODY = {
    "required": True,
    "description": "a GeoJSON FeatureCollection, Feature, Polygon or MultiPolygon in WGS84 degrees (RFC 7946)",
    "content": {
        kind: {"schema": {"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}}},
               "example": EXAMPLE}
        for kind in ("application/geo+json", "application/json")
    },
}  # fmt: skip


@dataclass
class RegionQuery:
    """The query of ``POST /flux/region``."""

    start: Start = None
    end: End = None
    freq: Annotated[
        Literal["all", "year", "month", "day"], Query(description="one row for the period, or per year, month, day")
    ] = "all"
    variables: Variables = None
    format: Literal["json", "csv"] = "json"
    cube: CubeName = None


@router.post(
    "/flux/region", openapi_extra={"requestBody": BODY},
    responses={200: {"content": {"application/json": {}, "text/csv": {}}}, **PROBLEMS},
)  # fmt: skip
async def flux_region(request: Request, settings: SettingsDep, catalog: CatalogDep, admission: AdmissionDep,
                      query: Annotated[RegionQuery, Depends()]) -> Response:  # fmt: skip
    """Totals (Tg C) and mean fluxes (g C m-2 d-1) over each polygon of the body, per period, with the ensemble
    members' spread and 5-95% range and, for a calibrated cube, the calibrated 90% range; the areas computed and
    not computed. See docs/ACCOUNTING.md."""
    body = await request.body()
    return await run_in_threadpool(_answer, body, settings, catalog, admission, query)


def _answer(body: bytes, settings: Settings, catalog: Catalog, admission: Admission, query: RegionQuery) -> Response:
    regions = parse_regions(body, RegionLimits(settings.max_region_features, settings.max_region_vertices))
    weights = [cell_weights(region) for region in regions]
    cube = _cube(catalog, regions, weights, Period(query.start, query.end), query.cube)
    source = CubeSource(cube.name, cube.group, cube.spec, cube.origin)
    wanted = TotalsQuery(start=query.start, end=query.end, freq=query.freq,
                         variables=tuple(parse_variables(query.variables)))  # fmt: skip
    with admission.admit(read_cost(weights, cube_days(source.spec, wanted), wanted), "regional totals"):
        results = totals(source, regions, weights, wanted, settings.max_aggregate_cells)
    kind = FORMATS[query.format]
    headers = {CUBE_HEADER: cube.name}
    if query.format != "json":
        headers["Content-Disposition"] = f'attachment; filename="{cube.name}_totals.{query.format}"'
    return Response(kind.render(report(source, wanted, results)), media_type=kind.media_type, headers=headers)


def _cube(catalog: Catalog, regions: list[Region], weights: list[CellWeights], period: Period,
          name: str | None) -> OpenCube:  # fmt: skip
    """The cube named, or chosen by the service's rule among those holding every cell the regions touch."""
    rows = slice(min(int(w.rows.min()) for w in weights), max(int(w.rows.max()) for w in weights) + 1)
    cols = slice(min(int(w.cols.min()) for w in weights), max(int(w.cols.max()) for w in weights) + 1)
    west, south = min(r.bounds[0] for r in regions), min(r.bounds[1] for r in regions)
    east, north = max(r.bounds[2] for r in regions), max(r.bounds[3] for r in regions)
    what = f"area (W, S, E, N) {tuple(round(v, 4) for v in (west, south, east, north))} of the regions"
    return cube_holding(catalog, rows, cols, period, what, name)[0]
