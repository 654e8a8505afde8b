"""The HTTP API: point, bbox and map queries on the served cubes, and upscaling jobs.

`create_app` wires the settings, the cube catalog, the job store and the job runner into one FastAPI app. Handlers
that read cubes are plain ``def`` (FastAPI runs them in its thread pool, so blocking xarray and zarr reads never
stall the event loop); the point query alone answers on the event loop when its chunks are in memory, and hands
reads to the thread pool otherwise. Domain errors map to status codes in one table, ERROR_STATUS; every 4xx body
is a Problem.
"""

import io
import math
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date
from functools import lru_cache, partial
from typing import Annotated, Literal

import fsspec
import numpy as np
import orjson
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from jobs import grid
from jobs.quicklook import render_map
from jobs.records import JobRecord, JobState, JobStore
from jobs.runner import JobRunner, RunnerConfig, resolve_output
from service.catalog import Catalog, NotCached, OpenCube
from service.queries import Period, bbox_subset, parse_variables, point, regional
from service.schemas import (
    EXAMPLE_BBOX,
    CubeInfo,
    JobInfo,
    PointResponse,
    Problem,
    Progress,
    RegionalResponse,
    SubsetResponse,
    UpscaleRequest,
)
from service.settings import Settings
from tamrl import __version__
from tamrl.checkpoint import read_metadata, resolve, shipped_names
from tamrl.errors import (
    AuthError,
    CheckpointError,
    ConfigError,
    ConflictError,
    DataError,
    NotFoundError,
    TamrlError,
    TooLargeError,
    validation_message,
)
from tamrl.features import TARGET_UNITS

ERROR_STATUS: dict[type[TamrlError], int] = {
    DataError: 422,
    ConfigError: 422,
    CheckpointError: 422,
    NotFoundError: 404,
    ConflictError: 409,
    TooLargeError: 413,
    AuthError: 401,
}
MAX_BODY_BYTES = 16_384
PRIVATE = ("out", "checkpoint_path")  # job request fields that name server paths: never shown
PROBLEMS = {status: {"model": Problem} for status in (400, 401, 404, 409, 413, 422)}
JOB_LINKS = {  # OpenAPI links: a submitted job's id is what GET and DELETE /jobs/{job_id} take
    op: {"operationId": op, "parameters": {"job_id": "$response.body#/id"}} for op in ("getJob", "deleteJob")
}

Lat = Annotated[float, Query(ge=-90, le=90, description="latitude in degrees north", examples=[47.3])]
Lon = Annotated[float, Query(ge=-180, le=180, description="longitude in degrees east, -180..180", examples=[8.5])]
Start = Annotated[date | None, Query(description="first day (default: the cube's first)", examples=["2019-06-01"])]
End = Annotated[date | None, Query(description="last day, inclusive (default: the cube's last)")]
Variables = Annotated[
    str | None,
    Query(description="comma-separated subset of GPP, RECO, NEE (default: all)", examples=["GPP,NEE"], max_length=50),
]
CubeName = Annotated[str | None, Query(description="a cube's name (default: the first that holds the request)")]
BboxText = Annotated[
    str, Query(description="W,S,E,N in degrees", examples=[",".join(map(str, EXAMPLE_BBOX))], max_length=200)
]


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API over ``settings.cubes``; jobs run on the configured Dask cluster and resume on start."""
    settings = settings or Settings()
    try:
        fs, base = fsspec.core.url_to_fs(settings.cubes)
        fs.makedirs(base, exist_ok=True)
    except (OSError, ValueError, ImportError) as exc:
        raise ConfigError(f"cannot use {settings.cubes} as the cubes folder ({type(exc).__name__}: {exc})") from exc
    store = JobStore(settings.job_database)
    catalog = Catalog(settings.cubes, settings.cache_mb << 20, hidden=store.live_outputs)
    runner = JobRunner(
        store, RunnerConfig(tuple(settings.drivers), settings.scheduler, settings.workers, settings.job_chunks)
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runner.start()
        yield
        runner.close()

    app = FastAPI(
        title="tamrl",
        version=__version__,
        description="Daily GPP, RECO and NEE from TAM-RL upscaling on the 0.05 deg grid: point and bbox queries, "
        "maps, and upscaling jobs. Fluxes in g C m-2 d-1; NEE positive means a source to the atmosphere. Models "
        "trained on FLUXNET2015 data (CC-BY-4.0).",
        lifespan=lifespan,
        responses=PROBLEMS,  # every 4xx body is a Problem, validation errors included
    )  # fmt: skip
    app.state.settings, app.state.catalog, app.state.store, app.state.runner = settings, catalog, store, runner
    _errors(app)
    app.add_middleware(BodyLimit)
    _routes(app, settings, catalog, store, runner)
    return app


def _routes(app: FastAPI, settings: Settings, catalog: Catalog, store: JobStore, runner: JobRunner) -> None:
    authorised = _auth(settings)

    @app.get("/cubes", response_model=list[CubeInfo], tags=["cubes"])
    def list_cubes() -> list[dict]:
        """The complete cubes being served."""
        return [cube.description for cube in catalog.cubes()]

    @app.get("/cubes/{name}", response_model=CubeInfo, responses=PROBLEMS, tags=["cubes"])
    def get_cube(name: str) -> dict:
        """One cube's extent, period, variables and provenance."""
        return catalog.get(name).description

    @app.get("/flux", tags=["flux"], responses={200: {"model": PointResponse, "content": {"text/csv": {}}}, **PROBLEMS})
    async def flux(lat: Lat, lon: Lon, start: Start = None, end: End = None, variables: Variables = None,
                   format: Literal["json", "csv"] = "json", cube: CubeName = None) -> Response:  # fmt: skip
        """The daily series of the cell that holds (lat, lon), with the ensemble spread and provenance."""
        # On the event loop when everything is in memory (a thread hop costs a fifth of a cached query's time);
        # reads from stores go to the thread pool.
        answer = partial(_point_answer, catalog, lat, lon, Period(start, end), parse_variables(variables), format, cube)
        try:
            return answer(cached_only=True)
        except NotCached:
            return await run_in_threadpool(answer, cached_only=False)

    @app.get(
        "/flux/bbox", tags=["flux"], responses={
            200: {"model": SubsetResponse | RegionalResponse, "content": {"application/x-netcdf": {}}}, **PROBLEMS
        },
    )  # fmt: skip
    def flux_bbox(bbox: BboxText, start: Start = None, end: End = None, variables: Variables = None,
                  format: Literal["json", "netcdf"] = "json", aggregate: Literal["total", "mean"] | None = None,
                  cube: CubeName = None) -> Response:  # fmt: skip
        """The cells of a bbox over a period (JSON or NetCDF), or with ``aggregate`` the area-weighted regional
        total (Tg C over the period) or mean (g C m-2 d-1) per variable."""
        box, names = _bbox(bbox), parse_variables(variables)
        if aggregate and format != "json":
            raise DataError(f"aggregate={aggregate} answers JSON only; leave out format or use format=json")
        limit = settings.max_aggregate_cells if aggregate else settings.max_cells
        subset = bbox_subset(catalog, box, Period(start, end), names, limit, cube, spreads=not aggregate)
        source = catalog.get(subset.attrs["tamrl_cube"])
        times = subset.indexes["time"]
        if aggregate:
            body = {"cube": source.name, "bbox": list(box), "start": f"{times[0]:%Y-%m-%d}",
                    "end": f"{times[-1]:%Y-%m-%d}", "aggregate": aggregate, **regional(subset, names, aggregate),
                    "provenance": _provenance(source)}  # fmt: skip
            return _json(body)
        if format == "netcdf":
            return Response(
                _netcdf(subset),
                media_type="application/x-netcdf",
                headers={"Content-Disposition": f'attachment; filename="{source.name}_subset.nc"'},
            )
        loaded = subset.load()
        body = {
            "cube": source.name, "lat": loaded.lat.values.tolist(), "lon": loaded.lon.values.tolist(),
            "time": [f"{t:%Y-%m-%d}" for t in times], "units": TARGET_UNITS,
            "variables": {n: _rounded(loaded[n].values) for v in names for n in (v, f"{v}_std")},
            "provenance": _provenance(source),
        }  # fmt: skip
        return _json(body)

    @app.get(
        "/flux/map.png", tags=["flux"], response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "the map"}, **PROBLEMS},
    )  # fmt: skip
    def flux_map(bbox: BboxText, start: Start = None, end: End = None,
                 variable: Literal["GPP", "RECO", "NEE"] = "GPP", cube: CubeName = None) -> Response:  # fmt: skip
        """A PNG map of the mean daily ``variable`` over a bbox and period."""
        box = _bbox(bbox)
        rows, cols = grid.bbox_slices(box)
        if (rows.stop - rows.start) * (cols.stop - cols.start) > settings.max_map_cells:
            raise TooLargeError(f"the map would have over {settings.max_map_cells:,} pixels; ask for a smaller bbox")
        subset = bbox_subset(catalog, box, Period(start, end), [variable], settings.max_aggregate_cells, cube,
                             spreads=False)  # fmt: skip
        return Response(render_map(subset, variable), media_type="image/png")

    @app.post(
        "/upscale", status_code=202, response_model=JobInfo, tags=["jobs"], dependencies=[Depends(authorised)],
        responses={202: {"links": JOB_LINKS}, **PROBLEMS}, operation_id="submitUpscale",
    )  # fmt: skip
    def submit(body: UpscaleRequest, response: Response) -> dict:
        """Queue an upscaling job (or return the same request's job); its cube appears under /cubes when done."""
        rows, cols = grid.bbox_slices(body.bbox)
        cells = (rows.stop - rows.start) * (cols.stop - cols.start)
        if cells > settings.max_job_pixels:
            raise TooLargeError(f"the bbox holds {cells:,} cells, over the limit of {settings.max_job_pixels:,}")
        checkpoint = _checkpoint(settings, body.checkpoint)
        available = _members(checkpoint)
        if body.members is not None and body.members > available:
            raise ConfigError(f"members {body.members}: {body.checkpoint} has {available}; give 1 to {available}")
        name, out = resolve_output(settings.cubes, body.output)
        request = body.model_dump(mode="json") | {"output": name, "checkpoint_path": checkpoint, "out": out}
        record, created = store.submit(request, name, taken=catalog.fs.exists(out))
        if created:
            runner.submit(record)
        response.headers["Location"] = f"/jobs/{record.id}"
        return _job(record)

    @app.get("/jobs", response_model=list[JobInfo], tags=["jobs"])
    def list_jobs(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict]:
        """The newest jobs first."""
        return [_job(record) for record in store.recent(limit)]

    @app.get("/jobs/{job_id}", response_model=JobInfo, responses=PROBLEMS, tags=["jobs"], operation_id="getJob")
    def get_job(job_id: str) -> dict:
        """A job's state, progress (tiles done of total), timestamps, error and output."""
        return _job(store.get(job_id))

    @app.delete(
        "/jobs/{job_id}", response_model=JobInfo, responses=PROBLEMS, tags=["jobs"], dependencies=[Depends(authorised)],
        operation_id="deleteJob",
    )
    def delete_job(job_id: str) -> dict:
        """Dismiss a job: a queued one never starts, a running one stops between tiles (finished tiles are kept)."""
        return _job(store.dismiss(job_id))


def _point_answer(catalog: Catalog, lat: float, lon: float, period: Period, names: list[str], format: str,
                  cube: str | None, cached_only: bool) -> Response:  # fmt: skip
    series = point(catalog, lat, lon, period, names, cube, cached_only)
    if format == "csv":
        return Response(series.frame().to_csv(float_format="%.4f"), media_type="text/csv")
    i, j = series.cell
    body = {
        "cube": series.cube.name, "lat": lat, "lon": lon, "cell_lat": float(series.cube.lat[i]),
        "cell_lon": float(series.cube.lon[j]), "igbp": int(series.cube.igbp[i, j]), "units": TARGET_UNITS,
        "time": series.cube.dates[series.days],
        "variables": {n: {"values": _rounded(series.values[n]), "std": _rounded(series.values[f"{n}_std"])}
                      for n in names},
        "provenance": _provenance(series.cube),
    }  # fmt: skip
    return _json(body)


def _job(record: JobRecord) -> dict:
    links = {"self": f"/jobs/{record.id}"}
    if record.state == JobState.successful:
        links["cube"] = f"/cubes/{record.output}"
    return {
        "id": record.id, "state": record.state.value,
        "progress": Progress(tiles_done=record.tiles_done, tiles_total=record.tiles_total),
        "created": record.created, "started": record.started, "updated": record.updated, "finished": record.finished,
        "error": record.error, "request": {k: v for k, v in record.request.items() if k not in PRIVATE},
        "output": record.output, "links": links,
    }  # fmt: skip


def _checkpoint(settings: Settings, name: str) -> str:
    """The path of checkpoint ``name``: one configured for the service, or a shipped one (never a client's path)."""
    if name in settings.checkpoints:
        return settings.checkpoints[name]
    if name in shipped_names():
        return str(resolve(name))
    raise CheckpointError(f"no checkpoint {name!r}; choose from {', '.join([*shipped_names(), *settings.checkpoints])}")


@lru_cache(maxsize=8)
def _members(path: str) -> int:
    """Ensemble members in the checkpoint at ``path``, read from its metadata (its weights are never loaded)."""
    return read_metadata(path).members


def _bbox(text: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError as exc:
        raise DataError(f"bbox {text!r} must be four comma-separated numbers W,S,E,N") from exc
    if len(values) != 4 or not all(map(math.isfinite, values)):
        raise DataError(f"bbox {text!r} must be four finite numbers W,S,E,N")
    grid.bbox_slices(values)  # inverted, off the globe or empty: DataError
    return values  # type: ignore[return-value]


def _provenance(cube: OpenCube) -> dict:
    info = cube.description
    keys = ("source", "references", "checkpoint", "checkpoint_sha256", "ensemble_size", "synthetic")
    return {key: info[key] for key in keys}


def _rounded(values: np.ndarray) -> np.ndarray:
    """Values rounded to 5 decimals (float32 holds about 7 digits); `_json` writes NaN as null."""
    return np.round(values.astype(np.float64), 5)


def _json(body: dict) -> Response:
    """JSON with numpy arrays as lists and NaN as null (orjson: about 10 times faster than json for these bodies)."""
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


def _netcdf(subset) -> bytes:
    ds = subset.load()
    for var in ds.variables.values():
        var.encoding = {}
    buffer = io.BytesIO()
    ds.to_netcdf(buffer, engine="h5netcdf")
    return buffer.getvalue()


def _auth(settings: Settings):
    """A dependency that requires ``Authorization: Bearer <token>`` when the service has a token."""
    bearer = HTTPBearer(auto_error=False)

    def check(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if settings.token is None:
            return
        expected = settings.token.get_secret_value().encode()
        if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), expected):
            raise AuthError("submitting and deleting jobs needs the header 'Authorization: Bearer <token>'")

    return check


def _errors(app: FastAPI) -> None:
    @app.exception_handler(TamrlError)
    def domain_error(request: Request, exc: TamrlError) -> JSONResponse:
        status = next(ERROR_STATUS[k] for k in type(exc).__mro__ if k in ERROR_STATUS)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return _problem(status, type(exc).__name__, str(exc), headers)

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _problem(422, "ValidationError", validation_message(exc.errors(), "request"))

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = f"{request.method} {request.url.path}: {exc.detail}; the API is described at /docs"
        return _problem(exc.status_code, "HTTPError", detail, getattr(exc, "headers", None))


def _problem(status: int, error: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"status": status, "error": error, "detail": detail}, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes, whether sent with a length or in chunks.

    The body (at most ``limit`` bytes) is read before the app runs and then replayed to it.
    """

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await self._refuse(scope, receive, send)
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.limit:
                return await self._refuse(scope, receive, send)
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send) -> None:
        response = _problem(413, "TooLargeError", f"request bodies are limited to {self.limit:,} bytes")
        await response(scope, receive, send)

