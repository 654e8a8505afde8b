"""Map tiles of the served cubes: ``GET /tiles/{z}/{x}/{y}.png`` (WebMercatorQuad, 256 px RGBA PNG), their
TileJSON 3.0 (``GET /tiles/tilejson.json``) and legend (``GET /tiles/legend.json``).

A tile shows one layer (`service.maptiles.LAYERS`) on one day (``date``) or as the mean of a period (``start`` and
``end``), coloured by the layer's fixed default colormap and range (`service.styles.STYLES`) unless the query gives
``colormap`` or ``rescale``. Which cube answers follows `service.queries`' rule among the cubes whose bbox overlaps
the tile. The read is admitted by its cost like every other read (`service.admission`).
"""

import math
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from jobs import grid
from service.dependencies import AdmissionDep, CatalogDep, SettingsDep
from service.maptiles import LAYERS, MAXZOOM, MINZOOM, render_tile, tile_cells, tile_cost, tile_of
from service.queries import Period, cube_overlapping
from service.routes import PROBLEMS
from service.routes.flux import CUBE_HEADER, CubeName, End, Start
from service.schemas import Legend, TileJSON
from service.styles import COLORMAPS, STYLES, legend, parse_rescale
from tamrl.errors import DataError, TooLargeError

ATTRIBUTION = "TAM-RL (tamrl); trained on FLUXNET2015 data (CC-BY-4.0)"
SYNTHETIC = "SYNTHETIC drivers: not real fluxes"
GLOBE = slice(0, grid.N_LAT), slice(0, grid.N_LON)

router = APIRouter(tags=["tiles"])


@dataclass
class StyleQuery:
    """Which layer, and how it is coloured."""

    variable: Annotated[
        Literal[tuple(LAYERS)],  # type: ignore[valid-type]
        Query(description="a flux, its spread (_std), its calibrated 90% bounds (_p05, _p95), or land_mask"),
    ] = "GPP"
    colormap: Annotated[
        Literal[tuple(COLORMAPS)] | None,  # type: ignore[valid-type]
        Query(description="colormap (default: the variable's, see docs/API.md)"),
    ] = None
    rescale: Annotated[
        str | None, Query(description="min,max of the colour range (default: the variable's)", max_length=100,
                          examples=["0,15"]),
    ] = None  # fmt: skip

    def style(self) -> tuple[str, tuple[float, float]]:
        """The colormap and colour range: the query's, else the variable's defaults."""
        return self.colormap or STYLES[self.variable].colormap, parse_rescale(self.rescale, self.variable)


@dataclass
class TileQuery(StyleQuery):
    """A tile layer: the style, the day or period, and the cube."""

    day: Annotated[date | None, Query(alias="date", description="the day to show", examples=["2019-06-01"])] = None
    start: Start = None
    end: End = None
    cube: CubeName = None

    def period(self) -> Period:
        """The day, or the period whose mean is shown; DataError unless exactly one of them is given (the land mask
        needs neither)."""
        if self.day and (self.start or self.end):
            raise DataError("give either date= (one day) or start= and end= (a period mean), not both")
        if self.day:
            return Period(self.day, self.day)
        if bool(self.start) != bool(self.end):
            raise DataError("a period mean needs both start= and end=")
        if not self.start and LAYERS[self.variable].daily:
            raise DataError(f"{self.variable} tiles need date= (one day) or start= and end= (a period mean)")
        return Period(self.start, self.end)


@router.get("/tiles/tilejson.json", response_model=TileJSON, responses=PROBLEMS)
def tilejson(request: Request, response: Response, catalog: CatalogDep,
             query: Annotated[TileQuery, Depends()]) -> dict:  # fmt: skip
    """TileJSON 3.0.0 of a tile layer: the tile URL template with this query, the cube's bounds, zooms and
    attribution, for MapLibre, Leaflet, OpenLayers or QGIS."""
    query.style()
    cube, days = cube_overlapping(catalog, *GLOBE, query.period(), "the map", query.cube)
    west, south, east, north = cube.spec.request.bbox
    zoom = min(max(math.floor(math.log2(360 / max(east - west, north - south))), MINZOOM), MAXZOOM)
    base = f"{str(request.base_url).rstrip('/')}/tiles/{{z}}/{{x}}/{{y}}.png"
    times = cube.times[days]
    when = f"{times[0]:%Y-%m-%d}" if len(times) == 1 else f"{times[0]:%Y-%m-%d} to {times[-1]:%Y-%m-%d}"
    response.headers[CUBE_HEADER] = cube.name
    return {
        "tilejson": "3.0.0", "name": f"{cube.name} {query.variable}",
        "description": f"TAM-RL {query.variable} of cube {cube.name}, {when}"
                       + (" (mean)" if len(times) > 1 else ""),
        "attribution": ATTRIBUTION + (f"; {SYNTHETIC}" if cube.spec.synthetic else ""),
        "scheme": "xyz", "tiles": [f"{base}?{request.url.query}" if request.url.query else base],
        "bounds": [west, south, east, north],
        "center": [round((west + east) / 2, 6), round((south + north) / 2, 6), zoom],
        "minzoom": MINZOOM, "maxzoom": MAXZOOM,
    }  # fmt: skip


@router.get("/tiles/legend.json", response_model=Legend, responses=PROBLEMS)
def tile_legend(query: Annotated[StyleQuery, Depends()]) -> dict:
    """The colour stops of a layer: units, colormap, range and 11 stops from its low to its high end."""
    return legend(query.variable, *query.style())


@router.get(
    "/tiles/{z}/{x}/{y}.png", response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the tile"}, **PROBLEMS},
)  # fmt: skip
def tile(settings: SettingsDep, catalog: CatalogDep, admission: AdmissionDep, z: int, x: int, y: int,
         query: Annotated[TileQuery, Depends()]) -> Response:  # fmt: skip
    """A 256 px RGBA PNG tile (WebMercatorQuad z/x/y) of a layer on one day or averaged over a period; transparent
    over water, cells not computed and outside the cube."""
    where = tile_of(z, x, y)
    colormap, rescale = query.style()
    layer = LAYERS[query.variable]
    cube, days = cube_overlapping(catalog, *tile_cells(where), query.period(), f"tile {z}/{x}/{y}", query.cube)
    cost = tile_cost(cube, where, days, layer)
    if cost > settings.max_aggregate_cells:
        raise TooLargeError(
            f"tile {z}/{x}/{y} would read {cost:,} values (cells x days x variables), over the limit of "
            f"{settings.max_aggregate_cells:,}; zoom in or ask for fewer days"
        )
    with admission.admit(cost, "a map tile"):
        png = render_tile(cube, where, days, layer, colormap, rescale)
    return Response(png, media_type="image/png", headers={CUBE_HEADER: cube.name})
