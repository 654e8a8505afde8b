"""Regions for carbon accounting: GeoJSON polygons in, the 0.05 deg cells they cover and each cell's weight out.

A region is a Polygon or MultiPolygon (holes included) in WGS84 longitude/latitude, given as a FeatureCollection, a
Feature or a bare geometry (RFC 7946). Parsing checks what a user can get wrong and says how to fix it: the GeoJSON
structure (geojson-pydantic: rings of at least 4 positions, closed), coordinates on the globe, self-intersections
(refused, with the place shapely finds), and the limits on features and vertices.

A ring with an edge longer than 180 deg of longitude crosses the antimeridian (RFC 7946 asks writers to split such
rings; many do not): it is read the short way round and split at 180 deg, with a note.

A cell's weight is the fraction of it the region covers (exactextract, which treats edges as straight lines in
longitude/latitude, as GeoJSON viewers draw them) times the cell's area on the sphere (`jobs.grid.cell_area_m2`).
The region's area is the sum of its cells' weights, so a region's computed and not-computed areas add up to it
exactly, and a polygon smaller than a cell gets that cell's share of its own size. The covered fraction is planar in
longitude/latitude, so the part of a cell a polygon covers is weighed at the cell's mean cos(lat): exact for whole
cells and for pieces that span the cell's height, within tan(lat) x 0.025 deg (in radians) of the true area for
others, 4.5e-4 at 45 N.
"""

import json
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
import shapely.affinity
from exactextract import exact_extract
from exactextract.raster import NumPyRasterSource
from geojson_pydantic import Feature, FeatureCollection, MultiPolygon, Polygon
from pydantic import Field, TypeAdapter, ValidationError
from shapely import geometry as shapes
from shapely.validation import explain_validity

from jobs import grid
from tamrl.errors import DataError, TooLargeError

Geometry = Annotated[Polygon | MultiPolygon, Field(discriminator="type")]
RegionFeature = Feature[Geometry, dict | None]
_GEOJSON = TypeAdapter(
    Annotated[FeatureCollection[RegionFeature] | RegionFeature | Polygon | MultiPolygon, Field(discriminator="type")]
)
MIN_COVERAGE = 1e-9  # smaller fractions are rounding where an edge lies on a cell boundary (1.4e-13 seen), not area
ANTIMERIDIAN_NOTE = "crosses the antimeridian: read the short way round and split at 180 deg"


@dataclass(frozen=True)
class RegionLimits:
    """The most a region request may hold."""

    features: int = 1_000
    vertices: int = 100_000


@dataclass(frozen=True)
class Region:
    """One feature: its id and properties as given, and its geometry within -180..180 deg."""

    index: int  # position in the input
    id: str | int | None
    properties: dict[str, Any]
    geometry: shapes.Polygon | shapes.MultiPolygon
    notes: tuple[str, ...] = field(default=())

    @property
    def bounds(self) -> grid.Bbox:
        """(W, S, E, N) of the geometry."""
        return tuple(self.geometry.bounds)  # type: ignore[return-value]


@dataclass(frozen=True)
class CellWeights:
    """The cells a region covers: global rows and columns, the covered fraction, and the covered area [m2]."""

    rows: np.ndarray
    cols: np.ndarray
    coverage: np.ndarray
    area_m2: np.ndarray

    @property
    def area_km2(self) -> float:
        return float(self.area_m2.sum()) / 1e6


def parse_regions(data: bytes | str | dict, limits: RegionLimits = RegionLimits()) -> list[Region]:
    """The regions of a GeoJSON document (bytes, text or parsed), or DataError / TooLargeError saying what to fix."""
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"the regions are not valid JSON ({exc}); send a GeoJSON FeatureCollection") from exc
    try:
        document = _GEOJSON.validate_python(data)
    except ValidationError as exc:
        raise DataError(f"the regions are not GeoJSON polygons: {_first_error(exc)}") from exc
    features = document.features if isinstance(document, FeatureCollection) else [document]
    if not features:
        raise DataError("the FeatureCollection holds no feature; give at least one Polygon or MultiPolygon")
    if len(features) > limits.features:
        raise TooLargeError(f"{len(features):,} features, over the limit of {limits.features:,}; send fewer at once")
    vertices = sum(_vertices(f.geometry if isinstance(f, Feature) else f) for f in features)
    if vertices > limits.vertices:
        raise TooLargeError(
            f"{vertices:,} vertices, over the limit of {limits.vertices:,}; simplify the polygons or send fewer"
        )
    return [_region(k, f) for k, f in enumerate(features)]


def cell_weights(region: Region) -> CellWeights:
    """The cells ``region`` covers, with coverage fractions (exactextract) and covered areas on the sphere."""
    parts = list(region.geometry.geoms) if isinstance(region.geometry, shapes.MultiPolygon) else [region.geometry]
    found = [_part_weights(part) for part in parts]
    rows, cols, coverage = (np.concatenate([f[k] for f in found]) for k in range(3))
    if not len(rows):
        raise DataError(
            f"feature {region.index} covers under {MIN_COVERAGE:g} of every cell it touches (a sliver of a few cm2); "
            "it has no area to total"
        )
    cells, where = np.unique(rows * grid.N_LON + cols, return_inverse=True)  # parts may share a cell
    coverage = np.minimum(np.bincount(where, weights=coverage), 1.0)
    rows, cols = cells // grid.N_LON, cells % grid.N_LON
    return CellWeights(rows, cols, coverage, coverage * grid.cell_area_m2(grid.lat_coords()[rows]))


def bbox_region(bbox: grid.Bbox) -> tuple[Region, CellWeights]:
    """A bbox as a region of the cells whose centres lie inside it (`jobs.grid.bbox_slices`), each counted whole:
    the cells a bbox query reads."""
    rows, cols = grid.bbox_slices(bbox)
    lat, lon = grid.lat_bounds()[rows], grid.lon_bounds()[cols]
    outline = shapes.box(lon[0, 0], lat[-1, 1], lon[-1, 1], lat[0, 0])
    r, c = (a.ravel() for a in np.meshgrid(np.arange(rows.start, rows.stop), np.arange(cols.start, cols.stop),
                                           indexing="ij"))  # fmt: skip
    ones = np.ones(len(r))
    return Region(0, None, {}, outline), CellWeights(r, c, ones, grid.cell_area_m2(grid.lat_coords()[r]))


def _part_weights(polygon: shapes.Polygon) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global rows, columns and coverage fractions of the cells ``polygon`` covers."""
    rows, cols = _window(polygon.bounds)
    lat_edges, lon_edges = grid.lat_bounds()[rows], grid.lon_bounds()[cols]
    raster = NumPyRasterSource(
        np.zeros((rows.stop - rows.start, cols.stop - cols.start)),
        xmin=lon_edges[0, 0], ymin=lat_edges[-1, 1], xmax=lon_edges[-1, 1], ymax=lat_edges[0, 0],
    )  # fmt: skip
    feature = {"type": "Feature", "properties": {}, "geometry": shapes.mapping(polygon)}
    found = exact_extract(raster, [feature], ["cell_id", "coverage"], output="pandas")
    ids = np.asarray(found["cell_id"].iloc[0], dtype=np.int64)
    coverage = np.asarray(found["coverage"].iloc[0], dtype=np.float64)
    width, kept = cols.stop - cols.start, coverage > MIN_COVERAGE
    return rows.start + ids[kept] // width, cols.start + ids[kept] % width, coverage[kept]


def _window(bounds: tuple[float, float, float, float]) -> tuple[slice, slice]:
    """Global rows and columns of the cells that a (W, S, E, N) box touches, one cell of margin where it fits."""
    west, south, east, north = bounds
    row0 = max(int(np.floor((90 - north) * grid.PER_DEG)) - 1, 0)
    row1 = min(int(np.ceil((90 - south) * grid.PER_DEG)) + 1, grid.N_LAT)
    col0 = max(int(np.floor((west + 180) * grid.PER_DEG)) - 1, 0)
    col1 = min(int(np.ceil((east + 180) * grid.PER_DEG)) + 1, grid.N_LON)
    return slice(row0, row1), slice(col0, col1)


def _region(index: int, item: Any) -> Region:
    """A Region from a geojson-pydantic Feature or geometry: on the globe, valid, split at the antimeridian."""
    feature = item if isinstance(item, Feature) else None
    geometry = feature.geometry if feature else item
    name = f"feature {index}" + (f" (id {feature.id!r})" if feature and feature.id is not None else "")
    polygons = _polygons(geometry)
    if not polygons or not all(polygons):
        raise DataError(f"{name} has no polygon (a null geometry or empty coordinates); give its rings")
    rings = [[[(p[0], p[1]) for p in ring] for ring in polygon] for polygon in polygons]
    _check_on_globe(rings, name)
    crossing = any(_crosses_antimeridian(ring) for polygon in rings for ring in polygon)
    if crossing:
        rings = [[_unwrapped(ring) for ring in polygon] for polygon in rings]
    shape = shapes.MultiPolygon([shapes.Polygon(p[0], p[1:]) for p in rings])
    if not shape.is_valid:
        raise DataError(
            f"{name} is not a valid polygon ({explain_validity(shape)}); fix the self-intersection or overlapping "
            "parts (e.g. with shapely.make_valid or QGIS's Fix geometries) and send it again"
        )
    if crossing:
        shape = _split_at_antimeridian(shape)
    geom = shape.geoms[0] if len(shape.geoms) == 1 else shape
    props = dict(feature.properties or {}) if feature else {}
    return Region(index, feature.id if feature else None, props, geom, (ANTIMERIDIAN_NOTE,) if crossing else ())


def _check_on_globe(rings: list[list[list[tuple[float, float]]]], name: str) -> None:
    for polygon in rings:
        for ring in polygon:
            for lon, lat in ring:
                if not (-180 <= lon <= 180 and -90 <= lat <= 90):
                    raise DataError(
                        f"{name} has the position ({lon}, {lat}) off the globe; GeoJSON positions are (longitude "
                        "-180..180, latitude -90..90) in WGS84 degrees"
                    )


def _crosses_antimeridian(ring: list[tuple[float, float]]) -> bool:
    """Whether an edge spans over 180 deg of longitude (one along the globe's edge, from -180 to 180, does not)."""
    lons = np.array([p[0] for p in ring])
    along_edge = (np.abs(lons[:-1]) == 180) & (np.abs(lons[1:]) == 180)
    return bool(((np.abs(np.diff(lons)) > 180) & ~along_edge).any())


def _unwrapped(ring: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The ring with western longitudes moved east by 360 deg, so that it runs continuously across 180 deg."""
    return [(lon + 360 if lon < 0 else lon, lat) for lon, lat in ring]


def _split_at_antimeridian(shape: shapes.MultiPolygon) -> shapes.MultiPolygon:
    """Parts of ``shape`` (longitudes 0..360) east of 180 deg moved back to -180..0."""
    west = shape.intersection(shapes.box(-180, -90, 180, 90))
    east = shapely.affinity.translate(shape.intersection(shapes.box(180, -90, 540, 90)), xoff=-360)
    parts = [g for piece in (west, east) for g in getattr(piece, "geoms", [piece]) if g.area > 0]
    return shapes.MultiPolygon([g for g in parts if isinstance(g, shapes.Polygon)])


def _polygons(geometry: Polygon | MultiPolygon | None) -> list:
    """The geometry's polygons' rings (none for a null geometry)."""
    if geometry is None:
        return []
    return geometry.coordinates if isinstance(geometry, MultiPolygon) else [geometry.coordinates]


def _vertices(geometry: Polygon | MultiPolygon | None) -> int:
    return sum(len(ring) for polygon in _polygons(geometry) for ring in polygon)


def _first_error(exc: ValidationError) -> str:
    """The first validation error, with where it is, in a sentence."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{error['msg']} at {where or 'the top level'}{more}"
