"""The request log's spool: append-only files of JSON lines, so no log row lives only in memory.

A process appends every finished request's record to a file of its own in the spool
directory before it writes it to the database, and deletes the file once all its rows
are written. A file still there belongs to a process that could not finish: the database
was down when it stopped, or it was killed. Another process replays it at its start.

Ownership is an exclusive `flock` on the open file, which the kernel drops when the
process dies, however it dies (SIGKILL included). A live process holds the lock on each
of its files; a file whose lock is free is an orphan. A replayer takes the lock (without
waiting) and then checks that the path still names the file it locked, so of several
workers starting together exactly one replays each file, and a file deleted meanwhile is
never replayed. A file is deleted only by its lock holder, before the lock is released.

The spool directory must be on a local filesystem (flock is not shared across hosts).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SUFFIX = ".jsonl"
STALE_TEMP_SECONDS = 600  # a half-created file (its creator died between open and rename) is removed after this


def database_tag(settings_dict: dict[str, Any]) -> str:
    """A short name for the database a spool file's rows belong to: a process replays only its own database's."""
    ident = "|".join(str(settings_dict.get(k) or "") for k in ("ENGINE", "HOST", "PORT", "NAME"))
    return hashlib.sha256(ident.encode()).hexdigest()[:12]


class Segment:
    """One spool file this process appends to: how many rows it holds and how many are written."""

    __slots__ = ("done", "fd", "opened", "path", "rows", "sealed", "size", "synced")

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.rows = 0  # rows appended
        self.size = 0  # bytes appended
        self.done = 0  # rows written to the database (or set aside)
        self.sealed = False  # no more rows will be appended
        self.opened = self.synced = time.monotonic()


class Orphan:
    """A spool file left by a process that is gone, locked by this one to replay it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    def batches(self, size: int) -> Iterator[list[bytes]]:
        """The file's lines, `size` at a time."""
        with os.fdopen(os.dup(self.fd), "rb") as lines:  # a dup shares the lock; closing it keeps it
            lines.seek(0)
            batch: list[bytes] = []
            for line in lines:
                if line.strip():
                    batch.append(line)
                if len(batch) >= size:
                    yield batch
                    batch = []
            if batch:
                yield batch

    def finish(self) -> None:
        """Every row is written: delete the file, then release it."""
        try:
            os.unlink(self.path)
        finally:
            os.close(self.fd)

    def release(self) -> None:
        """Stop replaying and leave the file for a later start."""
        os.close(self.fd)


class Spool:
    """This process's spool files in `directory`, for the database named by `tag`.

    `append` is called by one thread (the journal), `read`, `acknowledge` and
    `claim_orphan` by another (the database writer); segment state is kept under a lock.
    """

    def __init__(
        self,
        directory: Path,
        tag: str,
        *,
        max_bytes: int = 8 * 1024 * 1024,
        max_age: float = 10.0,
        fsync_seconds: float = 1.0,
    ) -> None:
        self.directory = Path(directory)
        self.tag = tag
        self.max_bytes = max_bytes  # a file is sealed (a new one started) past this size...
        self.max_age = max_age  # ...or this age, so a replay after a crash redoes little
        self.fsync_seconds = fsync_seconds  # what a machine crash (not a process kill) may lose
        self._lock = threading.Lock()
        self._current: Segment | None = None
        self._segments: dict[str, Segment] = {}
        self._started = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self._seq = 0

    @property
    def prefix(self) -> str:
        return f"log-{self.tag}-"

    # ---- appending (the journal thread) ---------------------------------------------------------

    def append(self, lines: list[bytes]) -> tuple[Segment, int, int]:
        """Append lines (each ending in a newline); the segment and the byte range they occupy."""
        data = b"".join(lines)
        with self._lock:
            segment = self._current or self._open()
        start = segment.size
        try:
            _write_all(segment.fd, data)
        except OSError:
            # A partial line may end the file now: append no more to it (a replay skips that line).
            self.seal()
            raise
        now = time.monotonic()
        if now - segment.synced >= self.fsync_seconds:
            os.fsync(segment.fd)
            segment.synced = now
        with self._lock:
            segment.size += len(data)
            segment.rows += len(lines)
        if segment.size >= self.max_bytes or now - segment.opened >= self.max_age:
            self.seal()
        return segment, start, start + len(data)

    def seal(self) -> None:
        """Append no more to the current file (the next append starts a new one)."""
        with self._lock:
            segment, self._current = self._current, None
            if segment is None:
                return
            segment.sealed = True
            if segment.done >= segment.rows:
                self._delete(segment)
                return
            try:
                os.fsync(segment.fd)  # under the lock: once sealed, the writer may delete it
            except OSError:
                logger.exception("syncing spool file %s failed", segment.path)

    def seal_if_old(self) -> None:
        """Seal the current file if it reached its age (an idle process keeps no file)."""
        segment = self._current
        if segment is not None and time.monotonic() - segment.opened >= self.max_age:
            self.seal()

    def _open(self) -> Segment:
        """A new file, locked before it gets its name (so no replayer can take it for an orphan)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            self._seq += 1
            name = f"{self.prefix}{os.getpid()}-{self._started}-{self._seq:06d}-{secrets.token_hex(3)}{SUFFIX}"
            temp = self.directory / f".{name}.tmp"
            fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.rename(temp, self.directory / name)
            except OSError:  # a cleaner of stale temporary files is looking at it: try another name
                os.close(fd)
                continue
            _fsync_directory(self.directory)
            segment = Segment(self.directory / name, fd)
            self._current = self._segments[name] = segment
            return segment
        raise OSError(f"could not create a spool file in {self.directory}")

    # ---- writing (the database writer thread) ---------------------------------------------------

    def read(self, segment: Segment, start: int, end: int) -> list[bytes]:
        """The lines appended in bytes [start, end) of a segment."""
        data = b""
        while len(data) < end - start:
            chunk = os.pread(segment.fd, end - start - len(data), start + len(data))
            if not chunk:
                break
            data += chunk
        return [line for line in data.splitlines(keepends=True) if line.strip()]

    def acknowledge(self, segment: Segment, rows: int) -> None:
        """`rows` of a segment are written; a sealed segment whose rows all are is deleted."""
        with self._lock:
            segment.done += rows
            if segment.sealed and segment.done >= segment.rows:
                self._delete(segment)

    def _delete(self, segment: Segment) -> None:
        """Delete a file whose rows are all written (a file left behind is replayed: its rows are skipped)."""
        self._segments.pop(segment.path.name, None)
        try:
            os.unlink(segment.path)
        except FileNotFoundError:
            pass
        except OSError:
            logger.exception("removing spool file %s failed", segment.path)
        finally:
            os.close(segment.fd)

    def claim_orphan(self, skip: set[str] | frozenset[str] = frozenset()) -> Orphan | None:
        """Lock the next file of this database left by a process that is gone (not named in `skip`), or None."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return None
        for name in names:
            path = self.directory / name
            if name.startswith(".") and name.endswith(".tmp"):
                self._remove_stale_temp(path)
                continue
            if not (name.startswith(self.prefix) and name.endswith(SUFFIX)) or name in self._segments or name in skip:
                continue
            fd = _lock_if_free(path)
            if fd is not None:
                return Orphan(path, fd)
        return None

    def _remove_stale_temp(self, path: Path) -> None:
        try:
            if time.time() - path.stat().st_mtime < STALE_TEMP_SECONDS:
                return
        except FileNotFoundError:
            return
        fd = _lock_if_free(path)
        if fd is not None:
            Orphan(path, fd).finish()

    # ---- the end ---------------------------------------------------------------------------

    def close(self) -> int:
        """Seal, delete the files whose rows are all written and release the others (left for the
        next start); how many rows those hold."""
        self.seal()
        left = 0
        with self._lock:
            for segment in list(self._segments.values()):
                if segment.done >= segment.rows:
                    self._delete(segment)
                    continue
                left += segment.rows - segment.done
                logger.warning(
                    "%d request-log rows left in %s; a process starting on this database writes them",
                    segment.rows - segment.done,
                    segment.path,
                )
                try:
                    os.fsync(segment.fd)
                finally:
                    os.close(segment.fd)
            self._segments.clear()
        return left

    def forget(self) -> None:
        """In a forked child: let go of the parent's files without touching their locks or contents."""
        for segment in self._segments.values():
            try:
                os.close(segment.fd)  # closing the child's copy keeps the parent's lock
            except OSError:
                pass
        self._segments.clear()
        self._current = None


def _lock_if_free(path: Path) -> int | None:
    """An open, exclusively locked descriptor of `path`, or None if another process holds it or it is gone."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.stat(path).st_ino != os.fstat(fd).st_ino:  # deleted (and maybe re-created) since we opened it
            raise FileNotFoundError(path)
    except OSError:  # BlockingIOError: its owner or another replayer has it
        os.close(fd)
        return None
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
