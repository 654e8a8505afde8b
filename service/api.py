"""The HTTP API: point, bbox and map queries on the served cubes, and upscaling jobs.

`create_app` wires the settings, the cube catalog, the job store and the job runner into one FastAPI app (on
``app.state``, where `service.dependencies` hands them to handlers) and includes one router per endpoint family
(`service.routes`). Domain errors map to status codes in one table, ERROR_STATUS; every error body (4xx, 503) is a
Problem.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import fsspec
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from jobs.records import JobStore
from jobs.runner import JobRunner, RunnerConfig
from service.catalog import Catalog
from service.routes import PROBLEMS, cubes, flux, jobs
from service.settings import Settings
from tamrl import __version__
from tamrl.errors import (
    AuthError,
    CheckpointError,
    ConfigError,
    ConflictError,
    DataError,
    NotFoundError,
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
    UnavailableError: 503,
}
MAX_BODY_BYTES = 16_384
ROUTERS = (cubes.router, flux.router, jobs.router)  # in the order their paths appear in the OpenAPI document


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
    _errors(app)
    app.add_middleware(BodyLimit)
    for router in ROUTERS:
        app.include_router(router)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the job runner (resuming jobs a stopped service left running) and close it on shutdown."""
    app.state.runner.start()
    yield
    app.state.runner.close()


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
