"""Domain errors: each message says what went wrong and what to do about it."""


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
