"""The HTTP API: point, bbox and map queries on the served cubes, and upscaling jobs.

`create_app` wires the settings, the cube catalog, the job store and the job runner into one FastAPI app (on
``app.state``, where `service.dependencies` hands them to handlers) and includes one router per endpoint family
(`service.routes`). Domain errors map to status codes in one table, ERROR_STATUS; every error body (4xx, 503) is a
Problem.

CORS (Starlette's CORSMiddleware, origins from the settings), Cache-Control and ETags (`service.web`) are middleware,
as are the limits on what clients send (body size and time, requests a minute, `service.limits`); the work all
requests together may do at once is `service.admission`; the request line, headers and connections are limited by
the server (`service.server`).
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import fsspec
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from jobs.records import JobStore
from jobs.runner import JobRunner, RunnerConfig
from service.admission import Admission
from service.catalog import Catalog
from service.dependencies import authorised, check_token
from service.limits import BodyLimit, RateLimit
from service.routes import PROBLEMS, cubes, flux, jobs, regions, tiles, viewer
from service.settings import Settings
from service.web import WebConventions
from tamrl import __version__
from tamrl.errors import (
    AuthError,
    BusyError,
    CheckpointError,
    ConfigError,
    ConflictError,
    DataError,
    NotFoundError,
    QuotaError,
    RetryLater,
    SlowClientError,
    TamrlError,
    TooLargeError,
    UnavailableError,
    validation_message,
)

ERROR_STATUS: dict[type[TamrlError], int] = {
    DataError: 422,
    ConfigError: 422,
    CheckpointError: 422,
    NotFoundError: 404,
    ConflictError: 409,
    TooLargeError: 413,
    AuthError: 401,
    SlowClientError: 408,
    QuotaError: 429,
    BusyError: 503,
    UnavailableError: 503,
}
CORS_METHODS = ["GET", "HEAD", "POST"]  # reads, and POST /flux/region; jobs are for clients with the token
CORS_EXPOSED = ["ETag", "Tamrl-Cube", "Retry-After", "Content-Disposition"]  # headers a browser script may read
HTTP_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")
ROUTERS = (cubes.router, flux.router, regions.router, tiles.router, jobs.router, viewer.router)  # OpenAPI order


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API over ``settings.cubes``; jobs run on the configured Dask cluster and resume on start."""
    settings = settings or Settings()
    try:
        fs, base = fsspec.core.url_to_fs(settings.cubes)
        fs.makedirs(base, exist_ok=True)
    except (OSError, ValueError, ImportError) as exc:
        raise ConfigError(f"cannot use {settings.cubes} as the cubes folder ({type(exc).__name__}: {exc})") from exc
    store = JobStore(settings.job_database)
    catalog = Catalog(settings.cubes, settings.cache_mb << 20, hidden=store.live_outputs, default=settings.default_cube)
    config = RunnerConfig(
        drivers=tuple(settings.drivers), cubes=settings.cubes, checkpoints=dict(settings.checkpoints),
        scheduler=settings.scheduler, workers=settings.workers, chunks=settings.job_chunks,
    )  # fmt: skip
    runner = JobRunner(store, config)
    app = FastAPI(
        title="tamrl",
        version=__version__,
        description="Daily GPP, RECO and NEE from TAM-RL upscaling on the 0.05 deg grid: point and bbox queries, "
        "maps, and upscaling jobs. Fluxes in g C m-2 d-1; NEE positive means a source to the atmosphere. Models "
        "trained on FLUXNET2015 data (CC-BY-4.0).",
        lifespan=_lifespan,
        responses=PROBLEMS,  # every error body is a Problem, validation errors included
    )  # fmt: skip
    app.state.settings, app.state.catalog, app.state.store, app.state.runner = settings, catalog, store, runner
    app.state.admission = Admission(settings.max_concurrent_values, settings.admission_wait_s, settings.admission_queue)
    _errors(app)
    larger = {"/flux/region": settings.max_region_bytes}
    app.add_middleware(BodyLimit, answer=error_response, timeout=settings.body_timeout_s, larger=larger)
    if settings.rate_limit:
        app.add_middleware(RateLimit, answer=error_response, per_minute=settings.rate_limit)
    app.add_middleware(WebConventions, answer=error_response, catalog=catalog, max_age=settings.cache_max_age_s)
    app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=CORS_METHODS,
                       allow_headers=["*"], expose_headers=CORS_EXPOSED)  # fmt: skip
    for router in ROUTERS:
        app.include_router(router)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Delete expired job records, start the job runner (resuming jobs a stopped service left running), and close it
    on shutdown."""
    app.state.store.expire(app.state.settings.job_retention_days)
    app.state.runner.start()
    yield
    app.state.runner.close()


def _errors(app: FastAPI) -> None:
    @app.exception_handler(TamrlError)
    def domain_error(request: Request, exc: TamrlError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if _needs_token(request):  # a body FastAPI could not parse is refused before the token is checked
            try:
                check_token(request.app.state.settings, request.headers.get("authorization"))
            except AuthError as denied:
                return error_response(denied)
        return _problem(422, "ValidationError", validation_message(exc.errors(), "request"))

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = f"{request.method} {request.url.path}: {exc.detail}; the API is described at /docs"
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # every method of the path, not only the first route's
            headers["Allow"] = ", ".join(_allowed(request))
        return _problem(exc.status_code, "HTTPError", detail, headers)


def error_response(exc: TamrlError) -> JSONResponse:
    """The Problem answering a domain error: its status from ERROR_STATUS, with ``WWW-Authenticate`` on 401 and
    ``Retry-After`` when a retry may succeed."""
    status = next(ERROR_STATUS[k] for k in type(exc).__mro__ if k in ERROR_STATUS)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if isinstance(exc, RetryLater):
        headers["Retry-After"] = str(exc.retry_after)
    return _problem(status, type(exc).__name__, str(exc), headers)


def _problem(status: int, error: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"status": status, "error": error, "detail": detail}, status_code=status, headers=headers)


def _needs_token(request: Request) -> bool:
    route = request.scope.get("route")
    return isinstance(route, APIRoute) and any(d.dependency is authorised for d in route.dependencies)


def _allowed(request: Request) -> list[str]:
    """The methods some route answers at the request's path."""
    return [
        method for method in HTTP_METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in request.app.routes)
    ]  # fmt: skip
