"""Domain errors: each message says what went wrong and what to do about it."""

from collections.abc import Iterable, Mapping
from typing import Any

REQUEST_PARTS = ("query", "body")  # where FastAPI says a request error lies: no part of the field's name


class TamrlError(Exception):
    """Base of every error a user can fix; the CLI prints it as one line, the service maps it to a status."""


class DataError(TamrlError):
    """Input data are missing, malformed, or cannot supply what was asked for."""


class ConfigError(TamrlError):
    """A run configuration or command-line choice is invalid."""


class CheckpointError(TamrlError):
    """A checkpoint bundle cannot be read or is incomplete."""


class NotFoundError(TamrlError):
    """What was asked for does not exist: a job, a cube, or data at a point or period."""


class ConflictError(TamrlError):
    """The request clashes with the state of a resource, e.g. another job writing the same output."""


class TooLargeError(TamrlError):
    """A request asks for more data than the configured limit."""


class AuthError(TamrlError):
    """A request lacks the credentials an operation needs."""


class SlowClientError(TamrlError):
    """A client took too long to send its request (a body trickled in to hold a connection)."""


class RetryLater(TamrlError):
    """A fine request that cannot be served now; it may succeed when sent again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class BusyError(RetryLater):
    """The service is at capacity (admission control): too much work in flight to start this request now."""


class QuotaError(RetryLater):
    """A client asked for more than its share: too many live jobs, or too many requests a minute."""


class UnavailableError(TamrlError):
    """Storage the service reads cannot be read now (a missing or unreadable folder, an unreachable bucket), or a job
    lost its Dask scheduler: the operator's to fix, or to retry later; the log names the cause."""


def validation_message(errors: Iterable[Mapping[str, Any]], whole: str) -> str:
    """One line from pydantic's validation errors (``exc.errors()``): ``field: problem`` joined by '; '.

    Errors about the object as a whole (an empty location) are named ``whole`` ("config", "request"); pydantic's
    "Value error, " prefix and FastAPI's request parts (query, body) are left out, so the line reads as the user
    wrote the input. Every layer that turns a pydantic ValidationError into a domain error or an answer words it so.
    """
    parts = []
    for error in errors:
        where = ".".join(str(part) for part in error["loc"] if part not in REQUEST_PARTS) or whole
        parts.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)
