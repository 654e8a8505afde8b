"""Job records in SQLite: what was asked, where it writes, its state and progress; persisted before work starts.

A job's identity is its request (`jobs.request.JobRequest`, which holds no server path) and its output's name:
submitting the same request again returns the same job (unless that one failed
or was dismissed, when a new attempt starts). Only one live job (accepted or running) may write to an output;
another request onto that output raises ConflictError. A `Quota` bounds the live jobs in total and per client (the
address a job was submitted from), and finished records expire (`JobStore.expire`). Every change is one short
transaction, so several threads
(the service's request handlers and its job threads) and a restarted service all see the same records.
"""

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from uuid import uuid4

from jobs.request import JobRequest
from tamrl.errors import ConflictError, NotFoundError, QuotaError


class JobState(StrEnum):
    """The states of a job, as OGC API - Processes names them."""

    accepted = "accepted"
    running = "running"
    successful = "successful"
    failed = "failed"
    dismissed = "dismissed"


LIVE = (JobState.accepted, JobState.running)
ENDED = (JobState.successful, JobState.failed, JobState.dismissed)
QUOTA_RETRY_S = 60  # what a 429 for too many live jobs asks a client to wait
INTERNAL_COLUMNS = ("request_key", "client", "finishing")  # kept in the table, not in a JobRecord
OLD_SERVER_FIELDS = ("output", "out", "checkpoint_path")  # in the requests that tamrl 0.x stored: dropped on reading

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    request_key TEXT NOT NULL,
    request TEXT NOT NULL,
    output TEXT NOT NULL,
    state TEXT NOT NULL,
    tiles_done INTEGER NOT NULL DEFAULT 0,
    tiles_total INTEGER,
    error TEXT,
    created TEXT NOT NULL,
    started TEXT,
    updated TEXT NOT NULL,
    finished TEXT
);
CREATE INDEX IF NOT EXISTS jobs_output ON jobs (output, state);
"""


@dataclass(frozen=True)
class JobRecord:
    """One job as stored."""

    id: str
    request: JobRequest
    output: str
    state: JobState
    tiles_done: int
    tiles_total: int | None
    error: str | None
    created: str
    started: str | None
    updated: str
    finished: str | None


@dataclass(frozen=True)
class Quota:
    """The most live jobs (accepted or running) at once: in total, and per client."""

    total: int
    per_client: int


def request_key(request: JobRequest, output: str) -> str:
    """The identity of a job: sha256 of its request's canonical JSON and its output's name."""
    canonical = json.dumps({"request": request.model_dump(mode="json"), "output": output}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


class JobStore:
    """The job table in the SQLite file at ``path`` (created with its folder if absent)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(_SCHEMA)
            _add_column(db, "client", "TEXT NOT NULL DEFAULT ''")  # who submitted a job, for quotas
            _add_column(db, "finishing", "INTEGER NOT NULL DEFAULT 0")  # a job claiming its completion
        self._refresh_live()

    def live_outputs(self) -> frozenset[str]:
        """Outputs of live jobs, kept in memory (read per query, so no database call): what a service must not
        serve yet, since a live job's cube may be complete on disk a moment before its record says so."""
        return self._live

    def _refresh_live(self) -> None:
        self._live = frozenset(record.output for record in self.live())

    def submit(self, request: JobRequest, output: str, taken: bool = False, client: str = "",
               quota: Quota | None = None) -> tuple[JobRecord, bool]:  # fmt: skip
        """The job for ``request`` writing ``output``, and whether it was created now (else it existed).

        ``taken``: whether the output exists already. The same request returns its live job, or its successful one
        while the output exists; after a failure or a dismissal it starts a new attempt (which resumes the output).
        Raises ConflictError when another live job writes to ``output``, or when a new request aims at an output
        that exists; QuotaError when a new job would exceed ``quota`` (``client``: who submits it).
        """
        key, now = request_key(request, output), _now()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            same = db.execute(
                "SELECT * FROM jobs WHERE request_key = ? ORDER BY created DESC LIMIT 1", (key,)
            ).fetchone()
            state = None if same is None else JobState(same["state"])
            if state in LIVE or (state == JobState.successful and taken):
                return _record(same), False
            other = db.execute("SELECT id FROM jobs WHERE output = ? AND state IN (?, ?)", (output, *LIVE)).fetchone()
            if other is not None:
                raise ConflictError(
                    f"job {other['id']} is writing {output}; wait for it to finish, delete it, or choose another "
                    "output name"
                )
            if taken and same is None:
                raise ConflictError(f"output {output} holds a cube made by another request; choose another name")
            if quota is not None:
                _check_quota(db, client, quota)
            job_id = uuid4().hex
            db.execute(
                "INSERT INTO jobs (id, request_key, request, output, state, created, updated, client) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (job_id, key, request.model_dump_json(), output, JobState.accepted, now, now, client),
            )
        self._refresh_live()
        return self.get(job_id), True

    def get(self, job_id: str) -> JobRecord:
        """The record of ``job_id``; NotFoundError if there is none."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no job {job_id!r}; GET /jobs lists the jobs")
        return _record(row)

    def recent(self, limit: int = 100) -> list[JobRecord]:
        """The newest ``limit`` jobs, newest first."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM jobs ORDER BY created DESC LIMIT ?", (limit,)).fetchall()
        return [_record(row) for row in rows]

    def live(self) -> list[JobRecord]:
        """Jobs accepted or running, oldest first: the ones a restarted service resumes."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM jobs WHERE state IN (?, ?) ORDER BY created", LIVE).fetchall()
        return [_record(row) for row in rows]

    def start(self, job_id: str) -> bool:
        """Mark a live job running (not yet finishing); False if it was dismissed meanwhile (then it must not run)."""
        now = _now()
        with self._connect() as db:
            cur = db.execute(
                "UPDATE jobs SET state = ?, started = COALESCE(started, ?), updated = ?, finishing = 0 "
                "WHERE id = ? AND state IN (?, ?)",
                (JobState.running, now, now, job_id, *LIVE),
            )
        return cur.rowcount == 1

    def progress(self, job_id: str, done: int, total: int) -> None:
        """Record tiles done of total."""
        with self._connect() as db:
            db.execute(
                "UPDATE jobs SET tiles_done = ?, tiles_total = ?, updated = ? WHERE id = ?",
                (done, total, _now(), job_id),
            )

    def finishing(self, job_id: str) -> bool:
        """Claim a running job's completion, in one statement: True if it is running (it is marked finishing, and
        from then on cannot be dismissed), False if it was dismissed (then its cube must not be completed)."""
        with self._connect() as db:
            cur = db.execute(
                "UPDATE jobs SET finishing = 1, updated = ? WHERE id = ? AND state = ?",
                (_now(), job_id, JobState.running),
            )
        return cur.rowcount == 1

    def finish(self, job_id: str, state: JobState, error: str | None = None) -> None:
        """Record a job's end: successful, failed (with ``error``) or dismissed. A dismissed job stays dismissed."""
        now = _now()
        with self._connect() as db:
            db.execute(
                "UPDATE jobs SET state = ?, error = ?, updated = ?, finished = ? WHERE id = ? AND state != ?",
                (state, error, now, now, job_id, JobState.dismissed),
            )
        self._refresh_live()

    def dismiss(self, job_id: str) -> JobRecord:
        """Dismiss a live job (its runner stops between tiles, and never completes its cube); dismissing a dismissed
        job changes nothing.

        Raises ConflictError for a job that already succeeded or failed, or that is finishing (has computed every
        tile and claimed its completion, `finishing`): there is nothing left to stop.
        """
        now = _now()
        with self._connect() as db:
            db.execute(
                "UPDATE jobs SET state = ?, updated = ?, finished = ? WHERE id = ? AND state IN (?, ?) "
                "AND finishing = 0",
                (JobState.dismissed, now, now, job_id, *LIVE),
            )
            finishing = db.execute("SELECT finishing FROM jobs WHERE id = ?", (job_id,)).fetchone()
        self._refresh_live()
        record = self.get(job_id)
        if record.state in LIVE and finishing["finishing"]:
            raise ConflictError(
                f"job {job_id} has computed every tile and is completing its cube; it can no longer be stopped "
                "(its cube is served once complete)"
            )
        if record.state not in (JobState.dismissed, *LIVE):
            raise ConflictError(f"job {job_id} has already ended ({record.state}); there is nothing to stop")
        return record

    def expire(self, days: float) -> int:
        """Delete the records of jobs that ended over ``days`` days ago; returns how many."""
        cutoff = (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="seconds")
        with self._connect() as db:
            cur = db.execute("DELETE FROM jobs WHERE state IN (?, ?, ?) AND finished < ?", (*ENDED, cutoff))
        return cur.rowcount

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")
            yield db
            if db.in_transaction:
                db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()


def _add_column(db: sqlite3.Connection, name: str, definition: str) -> None:
    """Add column ``name`` to the job table of a file written before it existed."""
    if name not in {row["name"] for row in db.execute("PRAGMA table_info(jobs)")}:
        db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {definition}")


def _check_quota(db: sqlite3.Connection, client: str, quota: Quota) -> None:
    """QuotaError when one more live job would exceed ``quota`` in total or for ``client``."""
    total, mine = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(client = ?), 0) FROM jobs WHERE state IN (?, ?)", (client, *LIVE)
    ).fetchone()
    if total >= quota.total:
        raise QuotaError(f"{total} jobs are queued or running, the service's most; retry when one has ended",
                         QUOTA_RETRY_S)  # fmt: skip
    if mine >= quota.per_client:
        raise QuotaError(f"you have {mine} jobs queued or running, the most per client; wait for one to end or "
                         "delete one", QUOTA_RETRY_S)  # fmt: skip


def _record(row: sqlite3.Row) -> JobRecord:
    values = {k: v for k, v in dict(row).items() if k not in INTERNAL_COLUMNS}
    request = {k: v for k, v in json.loads(values["request"]).items() if k not in OLD_SERVER_FIELDS}
    return JobRecord(**{**values, "request": JobRequest(**request), "state": JobState(values["state"])})


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
