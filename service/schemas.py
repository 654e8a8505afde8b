"""The service's request and response bodies, typed for validation and for a complete OpenAPI schema."""

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from jobs.request import BboxField, JobRequest

EXAMPLE_BBOX = (7.5, 45.0, 10.0, 47.5)


class Problem(BaseModel):
    """Every 4xx answer: what was wrong and what to do about it."""

    status: int = Field(examples=[404])
    error: str = Field(examples=["NotFoundError"])
    detail: str = Field(examples=["lat=0.0, lon=0.0 lies outside every cube; cubes: demo bbox (W,S,E,N) (5, ...)"])


class Series(BaseModel):
    """A daily series, its ensemble spread (one standard deviation over members) and, for a cube with a calibration,
    its calibrated 90% interval; null where not computed."""

    values: list[float | None] = Field(description="daily mean of the ensemble members")
    std: list[float | None] = Field(description="standard deviation over the members (the spread, not the error)")
    p05: list[float | None] | None = Field(
        None, description="calibrated daily 5% bound (`tamrl.calibration.cube_bounds`); absent without a calibration"
    )
    p95: list[float | None] | None = Field(None, description="calibrated daily 95% bound; absent without a calibration")


class Provenance(BaseModel):
    """Where the numbers come from."""

    cube: str
    checkpoint: str
    checkpoint_sha256: str
    ensemble_size: int
    synthetic: bool = Field(description="true when the cube was made from synthetic drivers: not real fluxes")
    source: str
    references: str
    attribution: str = Field(description="the FLUXNET2015 (CC-BY-4.0) attribution that travels with the numbers")
    warning: str | None = Field(None, description="present on synthetic cubes")


class PointResponse(BaseModel):
    """The daily fluxes of the 0.05 deg cell that holds the requested point."""

    cube: str = Field(examples=["demo"])
    lat: float = Field(description="requested latitude", examples=[47.3])
    lon: float = Field(description="requested longitude", examples=[8.5])
    cell_lat: float = Field(description="centre of the cell that holds the point", examples=[47.275])
    cell_lon: float = Field(examples=[8.525])
    igbp: int = Field(description="MCD12C1 IGBP class of the cell (1-16)")
    units: str = Field(examples=["g C m-2 d-1"])
    time: list[date]
    variables: dict[str, Series]
    provenance: Provenance


class CubeInfo(BaseModel):
    """A served cube: extent, period, variables and provenance."""

    name: str
    bbox: BboxField = Field(description="(W, S, E, N) computed, in degrees")
    start: date
    end: date
    variables: list[str]
    checkpoint: str
    checkpoint_sha256: str
    feature_set: str
    ensemble_size: int
    members_monthly: bool = Field(
        description="whether the cube holds each member's monthly means, which totals need for their spread"
    )
    synthetic: bool
    source: str
    references: str


class RegionalValue(BaseModel):
    """A bbox's total or mean of one flux, with the ensemble members' spread and ranges (docs/ACCOUNTING.md)."""

    value: float | None
    units: str
    description: str
    std: float | None = Field(description="standard deviation of the members' values (spread, not error)")
    p05: float | None = Field(description="5th percentile of the members' values")
    p95: float | None = Field(description="95th percentile of the members' values")
    cal_p05: float | None = Field(None, description="calibrated 5% bound (a cube with a calibration)")
    cal_p95: float | None = Field(None, description="calibrated 95% bound (a cube with a calibration)")


class RegionalResponse(BaseModel):
    """Area-weighted total (Tg C over the period) or mean (g C m-2 d-1) per variable over a bbox, and its areas."""

    cube: str
    bbox: BboxField
    start: date
    end: date
    aggregate: Literal["total", "mean"]
    area_km2: float = Field(description="the bbox's cells' area on the sphere")
    computed_area_km2: float = Field(description="the area of the cells with fluxes")
    not_computed_area_km2: float = Field(description="water, ice, cells without a Koppen group or drivers")
    cells: int
    computed_cells: int
    not_computed_cells: int
    days: int
    variables: dict[str, RegionalValue]
    nee_rule: str
    provenance: Provenance


class SubsetResponse(BaseModel):
    """The cells of a bbox over a period, as nested lists [time][lat][lon] (null off land)."""

    cube: str
    lat: list[float]
    lon: list[float]
    time: list[date]
    units: str
    variables: dict[str, list[list[list[float | None]]]]
    provenance: Provenance


class LegendStop(BaseModel):
    """A value and the colour its pixels have."""

    value: float
    color: str = Field(pattern=r"^#[0-9a-f]{6}$", examples=["#78c679"])


class Legend(BaseModel):
    """How a tile layer is coloured: ``stops`` run from ``rescale[0]`` to ``rescale[1]`` in even steps; values
    beyond take the colour of the nearer end."""

    variable: str
    units: str = Field(examples=["g C m-2 d-1"])
    colormap: str
    rescale: tuple[float, float]
    stops: list[LegendStop]


class TileJSON(BaseModel):
    """TileJSON 3.0.0 of a tile layer (https://github.com/mapbox/tilejson-spec/tree/master/3.0.0)."""

    tilejson: Literal["3.0.0"] = "3.0.0"
    name: str
    description: str
    attribution: str
    scheme: Literal["xyz"] = "xyz"
    tiles: list[str] = Field(description="the tile URL template, with this request's query")
    bounds: tuple[float, float, float, float] = Field(description="the cube's bbox: W, S, E, N")
    center: tuple[float, float, int] = Field(description="longitude, latitude and zoom to open at")
    minzoom: int
    maxzoom: int


class UpscaleRequest(JobRequest):
    """An upscaling job (`jobs.request.JobRequest`) by a checkpoint's name, written as the cube ``output``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"bbox": list(EXAMPLE_BBOX), "start": "2019-06-01", "end": "2019-08-31", "output": "alps_summer"}
            ]
        },
    )

    checkpoint: str = Field("default", max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="checkpoint name")
    output: str = Field(max_length=64, description="name of the output cube (letters, digits, '_', '-', '.')")
    members: int | None = Field(None, ge=1, le=100, description="use only the first N ensemble members")
    precision: Literal["float32", "bfloat16"] = "float32"

    def job_request(self) -> JobRequest:
        """The job's request: everything but the output's name."""
        return JobRequest(**self.model_dump(exclude={"output"}))


class Progress(BaseModel):
    tiles_done: int
    tiles_total: int | None = Field(description="known once the job has opened its cube")


class JobInfo(BaseModel):
    """A job's record: state, progress, timestamps, error, and where its cube is served."""

    id: str
    state: Literal["accepted", "running", "successful", "failed", "dismissed"]
    progress: Progress
    created: str
    started: str | None
    updated: str
    finished: str | None
    error: str | None
    request: JobRequest
    output: str = Field(description="the output cube's name")
    links: dict[str, str] = Field(description="self, and the cube's description once the job succeeded")
