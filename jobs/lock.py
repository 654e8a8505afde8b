"""The output lock: a lease on ``<cube>.zarr.lock`` that one job holds while it writes the cube at ``<cube>.zarr``.

The lock object names its owner (the job id a service gives; a fresh id per CLI run), host, process and the time its
lease expires. The holder renews the lease every HEARTBEAT_SECONDS from a thread; a lease not renewed for
LEASE_SECONDS has expired. A job may take the lock when

- there is none (created atomically);
- it is its own (the same job resumed after its process died: in a new container, under PID 1, on another host);
- its lease has expired (anyone's: the holder has stopped renewing it);
- it names this host and a process that is no longer running there (a killed CLI run, resumed at once);

and otherwise gets ConflictError naming the lock file, its holder and when its lease expires. Every change of the
lock (create, renew, take over, release) is conditional on the version read before it: locally a hard link (atomic
create) and an flock held while comparing and renaming; on s3 conditional writes (``If-None-Match: *`` to create,
``If-Match: <ETag>`` to renew, take over and delete), checked by reading the lock back. On other fsspec stores it is
a check, a write and a read back (not atomic). A holder whose renewal finds another job's lock (its lease expired
while it stalled, or its job was resumed elsewhere) marks its lease lost: `Lease.check` then raises, so the engine
stops at the next tile boundary and never finalizes the cube. Lease expiry compares wall clocks: hosts sharing
storage need clocks that agree to within seconds (NTP).
"""

import errno
import fcntl
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import fsspec
from fsspec.implementations.local import LocalFileSystem

from tamrl.errors import ConflictError, DataError

log = logging.getLogger(__name__)

LEASE_SECONDS = 60.0  # a lease not renewed for this long has expired
HEARTBEAT_SECONDS = 15.0  # the holder renews its lease this often
_HELD: set[str] = set()  # tokens of the leases this process holds or takes (a lock naming this PID and another token
# is a past process's)


@dataclass(frozen=True)
class Holder:
    """What the lock object says: who holds it, and until when."""

    owner: str  # the job id
    token: str  # this acquisition's id: a renewal finding another token has lost the lease
    host: str
    pid: int
    since: str  # ISO time it was taken
    expires: str  # ISO time its lease ends unless renewed

    def __post_init__(self) -> None:
        """ValueError for a lock object that is no lease (edited by hand, or not tamrl's)."""
        if not isinstance(self.pid, int) or datetime.fromisoformat(self.expires).tzinfo is None:
            raise ValueError(f"not a tamrl lease: pid {self.pid!r}, expires {self.expires!r}")

    def expired(self) -> bool:
        return datetime.fromisoformat(self.expires) <= datetime.now(UTC)

    def dead_here(self) -> bool:
        """Whether it names this host and a process that is not running (or this process, not holding it now)."""
        if self.host != socket.gethostname():
            return False
        if self.pid == os.getpid():
            return self.token not in _HELD
        return not _alive(self.pid)


class LocalObject:
    """The lock as a local file: created by a hard link (atomic, and complete at once), changed by an atomic rename
    under an flock of the file, so a change based on a stale read fails. Versions are the content's sha256."""

    def __init__(self, path: str):
        self.path = path

    def create(self, body: bytes) -> str | None:
        """Create the lock holding ``body``; its version, or None if there is one already."""
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with _temporary(self.path, body) as temp:
            try:
                os.link(temp, self.path)
            except FileExistsError:
                return None
        return _digest(body)

    def read(self) -> tuple[bytes, str] | None:
        """The lock's body and version; None if there is none."""
        try:
            with open(self.path, "rb") as f:
                body = f.read()
        except FileNotFoundError:
            return None
        return body, _digest(body)

    def replace(self, body: bytes, version: str) -> str | None:
        """Replace the lock at ``version`` by ``body``; the new version, or None if it is not at ``version``."""
        with self._locked(version) as same:
            if same:
                with _temporary(self.path, body) as temp:
                    os.replace(temp, self.path)
        return _digest(body) if same else None

    def delete(self, version: str) -> None:
        """Delete the lock if it is at ``version``."""
        with self._locked(version) as same:
            if same:
                os.unlink(self.path)

    @contextmanager
    def _locked(self, version: str) -> Iterator[bool]:
        """Hold an flock on the lock file; yields whether it is still the file at ``version``."""
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            yield False
            return
        with f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                current = os.stat(self.path).st_ino == os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                current = False
            yield current and _digest(f.read()) == version


class StoreObject:
    """The lock as an object of an fsspec store without conditional writes: every change is a check, a write and a
    read back, not atomic (two jobs starting in the same instant could both take it). Versions are sha256s."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str):
        self.fs, self.path = fs, path

    def create(self, body: bytes) -> str | None:
        if self.read() is not None:
            return None
        self.fs.pipe_file(self.path, body)
        return self._read_back(body)

    def read(self) -> tuple[bytes, str] | None:
        self.fs.invalidate_cache(self.path)
        try:
            body = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        return body, _digest(body)

    def replace(self, body: bytes, version: str) -> str | None:
        found = self.read()
        if found is None or found[1] != version:
            return None
        self.fs.pipe_file(self.path, body)
        return self._read_back(body)

    def delete(self, version: str) -> None:
        found = self.read()
        if found is not None and found[1] == version:
            self._remove(version)

    def _remove(self, version: str) -> None:
        self.fs.rm_file(self.path)

    def _read_back(self, body: bytes) -> str | None:
        """The version now stored if it holds ``body``; None if another write overtook this one."""
        found = self.read()
        return found[1] if found is not None and found[0] == body else None


class S3Object(StoreObject):
    """The lock as an s3 object, changed by conditional writes (AWS S3 and most compatible stores honour them since
    2024; so does moto): If-None-Match to create, If-Match on the ETag read to replace and delete. Each write is also
    read back, so a store that ignores the conditions is caught when another write overtook it. Versions are ETags.
    """

    def read(self) -> tuple[bytes, str] | None:
        for _ in range(3):  # the object may change between s3fs's HEAD and its GET: then read the new one
            self.fs.invalidate_cache(self.path)
            try:
                with self.fs.open(self.path, "rb") as f:  # s3fs's GET has If-Match on the HEAD's ETag: they agree
                    return f.read(), f.details["ETag"]
            except FileNotFoundError:
                return None
            except OSError as exc:
                if exc.errno not in (errno.EBUSY, errno.EINVAL):  # s3fs's FileExpired, S3's PreconditionFailed
                    raise
                changed = exc
        raise changed

    def create(self, body: bytes) -> str | None:
        return self._read_back(body) if self._call("put_object", Body=body, IfNoneMatch="*") else None

    def replace(self, body: bytes, version: str) -> str | None:
        return self._read_back(body) if self._call("put_object", Body=body, IfMatch=version) else None

    def _remove(self, version: str) -> None:
        self._call("delete_object", IfMatch=version)  # a store without conditional deletes: the read before decides

    def _call(self, method: str, **arguments: object) -> bool:
        """Whether the conditional request was done (False: the lock is absent, or not at the version named)."""
        bucket, key, _ = self.fs.split_path(self.path)
        try:
            self.fs.call_s3(method, Bucket=bucket, Key=key, **arguments)
        except (FileNotFoundError, FileExistsError):
            return False
        except OSError as exc:
            if not _precondition_failed(exc):
                raise
            return False
        finally:
            self.fs.invalidate_cache(self.path)
        return True


class Lease:
    """A job's lease on a cube's lock object; `held` takes it, renews it and gives it back."""

    def __init__(self, url: str, owner: str, storage_options: dict | None = None, seconds: float = LEASE_SECONDS):
        fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        path = f"{root.rstrip('/')}.lock"
        self.name = path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)  # for messages
        self.url, self.seconds = url, seconds
        self.object = _object(fs, path)
        now = _iso(datetime.now(UTC))
        self.me = Holder(owner=owner, token=uuid.uuid4().hex, host=socket.gethostname(), pid=os.getpid(), since=now,
                         expires=now)  # fmt: skip
        self.version: str | None = None  # of the lock object this job last wrote
        self.renewed = time.monotonic()  # when it was last written
        self.lost: str | None = None  # what became of the lock, once a renewal found it was no longer this job's

    def acquire(self) -> None:
        """Take the lock (see the module's rules), or ConflictError naming the lock file and its holder."""
        _HELD.add(self.me.token)  # before it is written: another thread here must not take it for a past process's
        try:
            self._take()
        except BaseException:
            _HELD.discard(self.me.token)
            raise

    def _take(self) -> None:
        for _ in range(3):  # the lock may change between reading it and taking it over
            if self._write(None):
                return
            found = self.object.read()
            if found is None:
                continue  # released meanwhile
            holder = _holder(found[0])
            if holder and holder.owner != self.me.owner and not holder.expired() and not holder.dead_here():
                raise ConflictError(
                    f"another tamrl job (pid {holder.pid} on {holder.host}, job {holder.owner}, since {holder.since}) "
                    f"is writing {self.url}; its lease ends at {holder.expires} unless renewed: wait for the job to "
                    f"end or stop it (a job that died without ending frees {self.name} when its lease ends)"
                )
            if self._write(found[1]):
                return
        raise ConflictError(f"the lock {self.name} kept changing while this job tried to take it; run the job again")

    def renew(self) -> None:
        """Extend the lease, or mark it lost if the lock is no longer this job's."""
        found = self.object.read()
        holder = _holder(found[0]) if found else None
        if holder is None:
            self.lost = f"{self.name} was deleted"
        elif holder.token != self.me.token:
            self.lost = f"{self.name} was taken over by job {holder.owner} (pid {holder.pid} on {holder.host})"
        else:
            self._write(found[1])  # if the lock changed meanwhile, the next renewal finds out

    def check(self) -> None:
        """ConflictError if the lease was lost: the job must stop writing and never finalize the cube."""
        if self.lost is not None:
            raise ConflictError(
                f"this job lost its lease ({self.lost}); it stopped and its finished tiles are kept: run it again "
                "to resume once no other job writes the cube"
            )

    def release(self) -> None:
        """Delete the lock if it is still the one this job wrote (never once the lease was lost)."""
        if self.version is not None and self.lost is None:
            self.object.delete(self.version)
        _HELD.discard(self.me.token)

    def _write(self, version: str | None) -> bool:
        """Write this job's lock with a fresh expiry: create it (``version`` None) or replace the one at ``version``."""
        expires = _iso(datetime.now(UTC) + timedelta(seconds=self.seconds))
        body = json.dumps(asdict(self.me) | {"expires": expires}).encode()
        written = self.object.create(body) if version is None else self.object.replace(body, version)
        if written is not None:
            self.version, self.renewed = written, time.monotonic()
        return written is not None


@contextmanager
def held(url: str, owner: str | None = None, storage_options: dict | None = None) -> Iterator[Lease]:
    """Hold the lease on ``<url>.lock`` for LEASE_SECONDS while the body runs, renewing it every HEARTBEAT_SECONDS
    from a thread, and release it at the end.

    ``owner``: the job id (a resumed job takes its own lock at once); None for a fresh one. ConflictError if
    another job holds it; DataError if the store cannot be read or written.
    """
    lease = Lease(url, owner or uuid.uuid4().hex, storage_options, LEASE_SECONDS)
    try:
        lease.acquire()
    except OSError as exc:
        raise DataError(
            f"cannot take the lock {lease.name} ({type(exc).__name__}: {exc}); check that the output location is "
            "reachable and writable, then run the job again"
        ) from exc
    done = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(lease, done, HEARTBEAT_SECONDS), name="tamrl-lease", daemon=True)
    beat.start()
    try:
        yield lease
    finally:
        done.set()
        beat.join()
        with suppress(OSError):
            lease.release()


def _heartbeat(lease: Lease, done: threading.Event, every: float) -> None:
    """Renew ``lease`` every ``every`` seconds until ``done``. A storage error skips a renewal (it is logged); once
    none has succeeded for the lease's length, another job may have taken the lock, so the lease is lost."""
    while not done.wait(every) and lease.lost is None:
        try:
            lease.renew()
        except OSError:
            log.warning("could not renew the lease on %s; trying again in %.0f s", lease.name, every, exc_info=True)
            if time.monotonic() - lease.renewed > lease.seconds:
                lease.lost = f"{lease.name} could not be renewed for {lease.seconds:.0f} s (storage errors)"


def _object(fs: fsspec.AbstractFileSystem, path: str) -> LocalObject | StoreObject:
    if isinstance(fs, LocalFileSystem):
        return LocalObject(path)
    if "s3" in fs.protocol:
        return S3Object(fs, path)
    return StoreObject(fs, path)


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _holder(body: bytes) -> Holder | None:
    """The holder a lock object names; None for one that is not a lease (unreadable: free to take)."""
    try:
        return Holder(**json.loads(body))
    except (ValueError, TypeError):
        return None


def _precondition_failed(exc: OSError) -> bool:
    return exc.errno == errno.EINVAL  # how s3fs raises S3's 412 PreconditionFailed


@contextmanager
def _temporary(path: str, body: bytes) -> Iterator[str]:
    """A file beside ``path`` holding ``body``, removed afterwards (unless renamed)."""
    temp = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(temp, "wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    try:
        yield temp
    finally:
        with suppress(FileNotFoundError):
            os.unlink(temp)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")
