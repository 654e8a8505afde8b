"""The service's settings: command-line options of ``tamrl serve`` or ``TAMRL_*`` environment variables."""

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where cubes live, where jobs write, what jobs read, and the limits on requests."""

    model_config = SettingsConfigDict(env_prefix="TAMRL_", extra="forbid")

    cubes: str = Field(
        "cubes", description="folder or fsspec URL (s3://bucket/cubes) of the served cubes (*.zarr); jobs write here"
    )
    drivers: list[str] = Field(default_factory=list, description="driver URLs that upscaling jobs read")
    scheduler: str | None = Field(None, description="address of an existing Dask cluster for jobs")
    workers: int | None = Field(
        None, ge=0, description="LocalCluster worker processes for jobs when no scheduler is given (default: one "
        "per core); 0 runs the tiles in the service process"
    )  # fmt: skip
    checkpoints: dict[str, str] = Field(
        default_factory=dict, description="checkpoint files jobs may use besides the shipped ones, by name"
    )
    token: SecretStr | None = Field(
        None, description="bearer token that every job endpoint (submit, list, read, delete) then requires"
    )
    database: Path | None = Field(
        None, description="SQLite file of job records (default: <cubes>/jobs.sqlite, or ./tamrl_jobs.sqlite when the "
        "cubes are at a URL)"
    )  # fmt: skip
    job_chunks: tuple[int, int, int] | None = Field(
        None, description="chunks (days, cells, cells) of the cubes jobs write (default: jobs.writer's 46, 50, 50)"
    )
    max_cells: int = Field(
        2_000_000, gt=0, description="largest bbox request, in pixel-days x variables; larger ones get 413"
    )
    max_aggregate_cells: int = Field(
        100_000_000, gt=0, description="largest bbox a total or mean reads, in pixel-days x variables"
    )
    max_region_bytes: int = Field(
        5_000_000, gt=0, description="largest POST /flux/region body, in bytes; larger ones get 413"
    )
    max_region_features: int = Field(1_000, gt=0, description="most features in one POST /flux/region body (413)")
    max_region_vertices: int = Field(
        200_000, gt=0, description="most vertices, all features together, in one POST /flux/region body (413)"
    )
    cache_mb: int = Field(1024, ge=0, description="memory for decoded chunks of point queries")
    max_map_cells: int = Field(4_000_000, gt=0, description="largest map, in pixels; larger ones get 413")
    max_job_pixels: int = Field(
        1_000_000, gt=0, description="largest upscaling job, in grid cells of its bbox; larger ones get 413"
    )
    max_concurrent_values: int = Field(
        100_000_000, gt=0, description="cube values (cells x days x variables) all requests together read at once; a "
        "request that does not fit waits up to admission_wait_s, then gets 503 with Retry-After (at most 18 bytes of "
        "memory per value, docs/RELIABILITY.md)"
    )  # fmt: skip
    admission_wait_s: float = Field(2.0, ge=0, le=60, description="how long a request waits for the value budget")
    admission_queue: int = Field(
        8, ge=0, description="requests that may wait for the value budget at once; more get 503 at once"
    )
    rate_limit: int | None = Field(
        None, gt=0, description="requests a minute per client address, every endpoint; more get 429 (default: none)"
    )
    default_cube: str | None = Field(
        None, description="the cube queries without cube= use when it holds the point or bbox and the period"
    )
    cors_origins: list[str] = Field(
        default_factory=lambda: ["*"], description="origins whose browser pages may read the API (CORS); default: any"
    )
    cache_max_age_s: int = Field(
        60, ge=0, description="seconds a client or proxy may reuse a cube read (Cache-Control max-age) before it "
        "revalidates it with its ETag"
    )  # fmt: skip
    max_live_jobs: int = Field(20, gt=0, description="jobs queued or running at once, all clients; more get 429")
    max_live_jobs_per_client: int = Field(
        5, gt=0, description="jobs queued or running at once per client address; more get 429"
    )
    job_retention_days: float = Field(
        30, gt=0, description="days a finished job's record is kept (successful, failed or dismissed); then deleted"
    )
    max_header_bytes: int = Field(
        16_384, ge=1024, description="request line and headers, in bytes; larger get 431 (the server's limit)"
    )
    header_timeout_s: float = Field(
        10, gt=0, description="seconds a connection may take to send a request's line and headers (the server's)"
    )
    body_timeout_s: float = Field(10, gt=0, description="seconds a client may take to send a request body; then 408")
    max_connections: int = Field(
        256, gt=0, description="open connections and requests the server handles at once; more get 503 (uvicorn)"
    )

    @property
    def job_database(self) -> Path:
        if self.database is not None:
            return self.database
        return Path("tamrl_jobs.sqlite") if "://" in self.cubes else Path(self.cubes) / "jobs.sqlite"
