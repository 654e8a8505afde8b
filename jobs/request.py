"""An upscaling job, typed once: what it computes (`JobRequest`) and where it reads, writes and runs (`Resources`).

The CLI, the HTTP layer, the runner, the planner and the engine all build and take these two objects. A
`JobRequest` holds only what a client may see: a checkpoint *name* (or, on the command line, the user's own file),
the bbox, the period, the support years, the members and the precision. It is stored in the job record, and its
resolved form (defaults filled in, the checkpoint by name) in the cube's spec (`jobs.writer.CubeSpec`). The
server's paths (driver URLs, the checkpoint file, the output store) live in `Resources`, which is never stored in
a record nor sent to a client, so no path can leak through a request by construction.
"""

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PositiveInt,
    StrictFloat,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from jobs import grid
from jobs.grid import Bbox
from tamrl.errors import ConfigError, DataError, validation_message

FIRST_YEAR, LAST_YEAR = 1900, 2100  # days and support years outside this range are refused before any work


def not_nan(value: Any) -> Any:
    """``value`` unless it is NaN (a float, or text such as "nan"), which gets a ValueError that says NaN: else
    pydantic compares NaN with a range and says "should be <= 90"."""
    if isinstance(value, float | str) and str(value).strip().lower() == "nan":
        raise ValueError("NaN is not a number; give a finite value")
    return value


# a number, never a boolean (true is no longer 1.0) nor NaN
Coordinate = Annotated[StrictFloat, BeforeValidator(not_nan)]
# a plain array of 4 numbers: OpenAPI tools read that more widely than prefixItems
BboxField = Annotated[
    tuple[Coordinate, Coordinate, Coordinate, Coordinate],
    WithJsonSchema({"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4}),
]
Precision = Literal["float32", "bfloat16", "float16"]  # tamrl.predict.PRECISIONS
Device = Literal["cpu", "cuda", "auto"]


class JobRequest(BaseModel):
    """What an upscaling job computes: ``checkpoint`` over ``bbox`` (W, S, E, N) from ``start`` to ``end``.

    ``support_years``: the years whose drivers form each pixel's support set (None: up to 3 whole years of the
    driver record, evenly spread). ``members``: use only the first N ensemble members (None: all).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: str = Field("default", min_length=1, description="a shipped or configured checkpoint name")
    bbox: BboxField = Field(description="(W, S, E, N) in degrees, W < E, S < N")
    start: date = Field(description="first day")
    end: date = Field(description="last day, inclusive")
    support_years: tuple[int, ...] | None = Field(
        None, min_length=1, max_length=20, description="years of each pixel's support set (default: from the drivers)"
    )
    members: PositiveInt | None = Field(None, description="use only the first N ensemble members (default: all)")
    precision: Precision = Field("float32", description="float32, or mixed precision (bfloat16; float16 on a GPU)")

    @field_validator("bbox")
    @classmethod
    def _bbox_on_the_grid(cls, bbox: Bbox) -> Bbox:
        try:
            grid.bbox_slices(bbox)
        except DataError as exc:
            raise ValueError(str(exc)) from exc
        return bbox

    @field_validator("start", "end")
    @classmethod
    def _plausible_day(cls, day: date) -> date:
        if not FIRST_YEAR <= day.year <= LAST_YEAR:
            raise ValueError(f"{day} lies outside the years {FIRST_YEAR}..{LAST_YEAR}")
        return day

    @field_validator("support_years")
    @classmethod
    def _plausible_years(cls, years: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if years is None:
            return None
        if not all(FIRST_YEAR <= year <= LAST_YEAR for year in years):
            raise ValueError(f"support years must lie in {FIRST_YEAR}..{LAST_YEAR}")
        return tuple(sorted(set(years)))

    @model_validator(mode="after")
    def _ordered(self) -> "JobRequest":
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self

    @property
    def days(self) -> int:
        """Days in the output period."""
        return (self.end - self.start).days + 1


class Resources(BaseModel):
    """Where a job reads, writes and runs: the server's side of a job, never stored in a record nor shown.

    ``drivers``: driver URLs (`jobs.drivers.GridDrivers`); ``checkpoint_file``: the checkpoint to load (None: the
    request's checkpoint resolved as a shipped name or a file, `tamrl.checkpoint.resolve`); ``out``: the output
    store (path or fsspec URL); ``chunks``: the cube's (time, lat, lon) chunks and ``tile_chunks`` the chunks per
    tile side (None: `jobs.writer.CubeSpec` defaults); ``device``: where workers run the model (auto: a GPU where a
    worker has one).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    drivers: tuple[str, ...] = Field(min_length=1)
    out: str = ""
    checkpoint_file: str | None = None
    chunks: tuple[PositiveInt | None, PositiveInt, PositiveInt] | None = None
    tile_chunks: PositiveInt | None = None
    device: Device = "cpu"


def build(model: type[BaseModel], **fields: Any) -> Any:
    """``model(**fields)``, or ConfigError with every problem on one line (what a CLI user or a client sees)."""
    try:
        return model(**fields)
    except ValidationError as exc:
        raise ConfigError(f"invalid {model.__name__}: {validation_message(exc.errors(), 'request')}") from exc
