"""The request log: a record filled in while a request runs, written off the request path.

`RequestRecord` is a plain object the view fills in; `submit()` queues it for two
background threads. The journal appends it to this process's spool file (within
`GATEWAY_LOG_FLUSH_SECONDS`); the writer inserts batches of rows, and the usage
roll-ups that depend on them, in one transaction, and deletes the spool file once its
rows are in. The client never waits for the disk or the database. A failed batch is
retried, not dropped; what is not written when the process stops stays in the spool
and is written, exactly once (rows are keyed by `uid`), by the next process to start.
`flush()` waits for everything submitted so far to be written (tests, shutdown).
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings
from django.db import DataError, IntegrityError, close_old_connections, connection, connections, transaction

from . import metrics, multirow, pricing
from .multirow import Values
from .spool import Orphan, Segment, Spool, database_tag

logger = logging.getLogger(__name__)


def new_uid() -> uuid.UUID:
    """A random (version 4) UUID from the Mersenne Twister, which the random module reseeds from the
    OS in every forked worker: uuid4() reads os.urandom, a system call per request, and the uid is
    an identifier, not a secret."""
    return uuid.UUID(int=random.getrandbits(128), version=4)


@dataclass(slots=True)
class RequestRecord:
    """Everything logged about one request."""

    request_id: str
    endpoint: str = "chat.completions"
    uid: uuid.UUID = field(default_factory=new_uid)  # the gateway's own id: the row is written once
    started: float = field(default_factory=time.perf_counter)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    key_id: int | None = None
    key_prefix: str = ""
    user_id: int | None = None
    model: str = ""
    provider: str = ""
    upstream_model: str = ""
    route_id: int | None = None
    stream: bool = False
    status_code: int = 200
    error_type: str = ""
    error_code: str = ""
    error_message: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_estimated: bool = False
    input_price: Decimal = Decimal(0)
    output_price: Decimal = Decimal(0)
    latency_ms: int = 0
    ttft_ms: int | None = None
    finish_reason: str = ""
    client_disconnected: bool = False
    attempts: list[dict[str, Any]] = field(default_factory=list)
    end_user: str = ""
    metadata: dict[str, Any] | None = None
    request_body: dict[str, Any] | None = None
    response_text: str = ""

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)

    def mark_first_chunk(self) -> None:
        if self.ttft_ms is None:
            self.ttft_ms = self.elapsed_ms()

    def set_usage(self, usage: dict[str, Any] | None) -> None:
        if usage:
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.completion_tokens = int(usage.get("completion_tokens") or 0)

    def fail(self, status: int, type_: str, code: str | None, message: str) -> None:
        self.status_code = status
        self.error_type = type_ or ""
        self.error_code = code or ""
        self.error_message = message[:2000]

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost(self) -> Decimal:
        """Cost in USD from the route's prices per million tokens, to the nano-dollar."""
        return pricing.cost(self.prompt_tokens, self.completion_tokens, self.input_price, self.output_price)

    @property
    def cost_nanos(self) -> int:
        return pricing.cost_nanos(self.prompt_tokens, self.completion_tokens, self.input_price, self.output_price)

    @property
    def is_error(self) -> bool:
        return self.status_code >= 400

    def make_storable(self) -> None:
        """Replace what no database column can hold (NUL characters, in text and JSON alike)."""
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            if "\x00" in value:
                setattr(self, name, value.replace("\x00", REPLACEMENT))
        for name in _JSON_FIELDS:
            value = getattr(self, name)
            if value:
                setattr(self, name, storable(value))

    def make_encodable(self) -> None:
        """Replace what UTF-8 can't encode (lone surrogates) in text and JSON alike."""
        for name in (*_TEXT_FIELDS, *_JSON_FIELDS):
            value = getattr(self, name)
            if value:
                setattr(self, name, _encodable(value))


REPLACEMENT = "\ufffd"  # what a NUL character in client or upstream text is stored as
_TEXT_FIELDS = tuple(
    name for name, kind in RequestRecord.__annotations__.items() if kind == "str" and name != "request_id"
)
_JSON_FIELDS = ("attempts", "metadata", "request_body")


def storable(value: Any) -> Any:
    """`value` (JSON data) with NUL characters replaced in every string, keys included."""
    if isinstance(value, str):
        return value.replace("\x00", REPLACEMENT) if "\x00" in value else value
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value


def _encodable(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode()
    if isinstance(value, dict):
        return {_encodable(k): _encodable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encodable(v) for v in value]
    return value


BatchHook = Callable[[list[RequestRecord]], None]
REFUSED = (DataError, IntegrityError)  # the database refuses a row's data (not: the database is down)
JOURNAL_BATCH = 2000  # records the journal appends at once at most


# ---- a record as a line of the spool ---------------------------------------------------------


def spool_line(record: RequestRecord) -> bytes:
    """The record's values as one JSON line (`started`, a clock reading, means nothing once read back)."""
    try:
        return orjson.dumps(record, default=str, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        # Text UTF-8 can't hold (a lone surrogate in an upstream's JSON): stored replaced, as NUL is.
        record.make_encodable()
        return orjson.dumps(record, default=str, option=orjson.OPT_APPEND_NEWLINE)


def storable_line(record: RequestRecord) -> bytes:
    """The spool line of the record made storable (`make_storable`, which changes the record too).

    The line is JSON, where a NUL character anywhere (text, JSON values and keys) is written
    `\\u0000`: only a record whose line holds that goes through `make_storable`, which walks every
    text field and JSON value in Python, and is written again."""
    line = spool_line(record)
    if b"\\u0000" in line:  # also a text holding a backslash then "u0000": made storable for nothing
        record.make_storable()
        line = spool_line(record)
    return line


_FIELDS = tuple(name for name in RequestRecord.__dataclass_fields__ if name != "started")
_DECODE: dict[str, Callable[[Any], Any]] = {
    "uid": uuid.UUID,
    "created_at": datetime.fromisoformat,
    "input_price": Decimal,
    "output_price": Decimal,
}


def record_from_line(line: bytes) -> RequestRecord:
    """The record a spool line holds; ValueError if it holds none (a line cut short by a crash)."""
    data = orjson.loads(line)
    if not isinstance(data, dict) or not data.get("uid") or not isinstance(data.get("request_id"), str):
        raise ValueError("not a request-log record")
    values: dict[str, Any] = {}
    for name in _FIELDS:
        if name in data:
            value, decode = data[name], _DECODE.get(name)
            values[name] = decode(value) if decode is not None and value is not None else value
    return RequestRecord(**values)


# ---- the writer ------------------------------------------------------------------------------


@dataclass(eq=False)
class _Chunk:
    """Records the journal appended to the spool (or failed to), handed to the database writer."""

    rows: int
    segment: Segment | None  # None: the spool failed, the records are only in memory
    start: int = 0  # their bytes in the segment
    end: int = 0
    records: list[RequestRecord] | None = None  # None: past the memory bound, read back from the spool


class _Run:
    """One start of the writer's two threads; close() ends it, and a later submit starts another."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.chunks: queue.SimpleQueue[_Chunk | object] = queue.SimpleQueue()
        self.stop = object()  # this run's end-of-input mark (a previous run's is ignored)
        self.stopping = threading.Event()  # close() was called: wait no more for the database
        self.stop_by = math.inf  # when close() gives up writing
        self.scanned = threading.Event()  # the spool files other processes left were replayed (or tried)
        self.journal: threading.Thread | None = None
        self.writer: threading.Thread | None = None


class LogWriter:
    """Writes submitted records to the database in batches, and to the spool first.

    Two daemon threads: the journal appends submitted records to this process's spool
    file every `flush_seconds` (so a record no longer lives only in memory after that),
    then hands them to the writer, which inserts them and runs the hooks in one
    transaction per batch and deletes a spool file once all its rows are in. A batch
    the database fails is retried until it goes in, never dropped; past `max_pending`
    rows waiting in memory, the journal keeps new rows only in the spool and the writer
    reads them back. At start, the writer replays the spool files that processes gone
    before it left (see `completions.spool`).
    """

    check_idle_seconds = 2.0  # the connection's health is checked before a batch after this long idle

    def __init__(
        self,
        batch_size: int = 500,
        retry_seconds: float = 1.0,
        max_pending: int = 200_000,
        *,
        spool_dir: str | os.PathLike[str] | None = None,
        flush_seconds: float | None = None,
        rescan_seconds: float = 30.0,
    ) -> None:
        self.batch_size = batch_size
        self.retry_seconds = retry_seconds
        self.max_pending = max_pending  # rows held in memory at most while the database is behind
        self.spool_dir = Path(settings.GATEWAY_LOG_SPOOL_DIR if spool_dir is None else spool_dir)
        self.flush_seconds = settings.GATEWAY_LOG_FLUSH_SECONDS if flush_seconds is None else flush_seconds
        self.rescan_seconds = rescan_seconds  # how often to look for files of processes that died meanwhile
        self.hooks: list[BatchHook] = []
        self.set_aside = 0  # rows the database refused, kept in SetAsideLogRow instead
        self.replayed = 0  # rows written from other processes' spool files
        self.duplicates = 0  # rows of those files already in the log (skipped)
        self.dropped = 0  # rows lost: the spool failed (disk full?) while the memory bound was reached
        self._reset()
        # A forked worker inherits this object but not the threads: start afresh there.
        os.register_at_fork(after_in_child=self._after_fork)

    def _reset(self) -> None:
        self._queue: queue.SimpleQueue[RequestRecord | object] = queue.SimpleQueue()
        self._used: tuple[Any, float] | None = None  # the writer's connection and when a batch last went in
        self._lock = threading.Condition()
        self._wake = threading.Event()  # flush() and close() cut the journal's wait short
        self._submitted = self._done = 0
        self._in_memory = 0  # rows handed to the writer with their records
        self._run: _Run | None = None

    def _after_fork(self) -> None:
        if self._run is not None:
            self._run.spool.forget()
        self._reset()

    # ---- the interface -------------------------------------------------------------------------

    def submit(self, record: RequestRecord) -> None:
        """Queue a record; returns at once (no I/O here: the journal thread does it)."""
        if self._run is None:
            self.start()
        with self._lock:
            self._submitted += 1
            metrics.LOG_BACKLOG.set(self._submitted - self._done)
        self._queue.put(record)

    def start(self) -> None:
        """Start the threads (at the worker's start, so it replays what others left at once)."""
        with self._lock:
            if self._run is not None:
                return
            run = _Run(Spool(self.spool_dir, database_tag(connections["default"].settings_dict)))
            run.journal = threading.Thread(target=self._journal, args=(run,), name="request-log-spool", daemon=True)
            run.writer = threading.Thread(target=self._writer, args=(run,), name="request-log-writer", daemon=True)
            self._run = run
            run.journal.start()
            run.writer.start()

    def pending(self) -> int:
        with self._lock:
            return self._submitted - self._done

    def in_memory(self) -> int:
        """Rows waiting for the database with their records in memory (at most `max_pending`)."""
        with self._lock:
            return self._in_memory

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record submitted so far is written, and the spool files other
        processes left are replayed; False on timeout."""
        deadline = time.monotonic() + timeout
        run = self._run
        if run is not None:
            self._wake.set()
            if not run.scanned.wait(timeout):
                return False
        with self._lock:
            target = self._submitted
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> bool:
        """Shutdown: append what is queued to the spool, write what the database takes before
        `timeout`, and stop. Rows left unwritten stay in the spool for the next start; False if
        the threads did not stop in time (their rows are in the spool too).

        A record submitted after this starts new threads.
        """
        run = self._run
        if run is None or run.journal is None or run.writer is None:
            return True
        deadline = time.monotonic() + timeout
        run.stop_by = deadline - min(2.0, timeout / 4)
        run.stopping.set()
        self._queue.put(run.stop)
        self._wake.set()
        for thread in (run.journal, run.writer):
            thread.join(max(0.0, deadline - time.monotonic()))
        if run.journal.is_alive() or run.writer.is_alive():
            logger.error("the request-log threads did not stop within %.0f s; their rows are in the spool", timeout)
            return False
        left = run.spool.close()
        unspooled = 0
        while True:
            try:
                item = run.chunks.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Chunk) and item.segment is None:
                unspooled += item.rows
        if unspooled:
            logger.error("%d request-log rows were neither written nor spooled; they are lost", unspooled)
        if left:
            logger.warning("%d request-log rows are left in the spool (%s) for the next start", left, self.spool_dir)
        with self._lock:
            self._run = None
            self.dropped += unspooled
            metrics.LOG_DROPPED.inc(unspooled)
            self._in_memory = 0
            self._done = self._submitted - self._queue.qsize()  # the rest is the spool's (or submitted since)
            self._lock.notify_all()
        return True

    # ---- the journal thread ----------------------------------------------------------------------

    def _journal(self, run: _Run) -> None:
        full = False  # the last append took JOURNAL_BATCH records: more are waiting, don't wait
        try:
            while True:
                try:
                    item = self._queue.get(timeout=run.spool.max_age)
                except queue.Empty:
                    run.spool.seal_if_old()
                    continue
                if item is not run.stop and not full and self.flush_seconds > 0:
                    self._wake.wait(self.flush_seconds)  # gather a flush interval's records into one append
                self._wake.clear()
                batch: list[RequestRecord] = []
                stop = False
                while True:
                    if item is run.stop:
                        stop = True
                        break
                    if isinstance(item, RequestRecord):
                        batch.append(item)
                    if len(batch) >= JOURNAL_BATCH:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                full = len(batch) >= JOURNAL_BATCH
                if batch:
                    self._spool(run, batch)
                if stop:
                    return
                run.spool.seal_if_old()
        except Exception:
            logger.exception("the request-log journal stopped")
        finally:
            try:
                run.spool.seal()
            except OSError:
                logger.exception("sealing the request-log spool failed")
            run.chunks.put(run.stop)

    def _spool(self, run: _Run, batch: list[RequestRecord]) -> None:
        """Append a batch to the spool and hand it to the writer (with the records, if memory allows)."""
        lines: list[bytes] = []
        spooled: list[RequestRecord] = []
        unspooled: list[RequestRecord] = []
        for record in batch:
            try:
                lines.append(storable_line(record))
                spooled.append(record)
            except Exception:
                logger.exception("request-log row %s can't be spooled; it is held in memory only", record.request_id)
                record.make_storable()
                unspooled.append(record)
        if lines:
            try:
                segment, start, end = run.spool.append(lines)
            except OSError:
                logger.exception(
                    "spooling %d request-log rows in %s failed; held in memory only", len(lines), run.spool.directory
                )
                unspooled += spooled
            else:
                self._hand_over(run, _Chunk(len(spooled), segment, start, end), spooled)
        if unspooled:
            self._hand_over(run, _Chunk(len(unspooled), None), unspooled)

    def _hand_over(self, run: _Run, chunk: _Chunk, records: list[RequestRecord]) -> None:
        with self._lock:
            keep = self._in_memory + chunk.rows <= self.max_pending
            if keep:
                self._in_memory += chunk.rows
            elif chunk.segment is None:
                self.dropped += chunk.rows
                metrics.LOG_DROPPED.inc(chunk.rows)
                self._done += chunk.rows
                self._lock.notify_all()
        if keep:
            chunk.records = records
        elif chunk.segment is None:
            logger.error(
                "request log over %d rows in memory and the spool failed; %d rows dropped", self.max_pending, chunk.rows
            )
            return
        run.chunks.put(chunk)

    # ---- the writer thread -------------------------------------------------------------------

    def _writer(self, run: _Run) -> None:
        try:
            self._replay_orphans(run)
            run.scanned.set()
            scanned_at = time.monotonic()
            while True:
                try:
                    item = run.chunks.get(timeout=self.rescan_seconds)
                except queue.Empty:
                    item = None
                if item is run.stop:
                    return
                if isinstance(item, _Chunk) and not self._write_chunk(run, item):
                    return  # shutting down: the rest is in the spool
                if time.monotonic() - scanned_at >= self.rescan_seconds:
                    self._replay_orphans(run)
                    scanned_at = time.monotonic()
        except Exception:
            logger.exception("the request-log writer stopped")
        finally:
            run.scanned.set()
            connections.close_all()

    def _write_chunk(self, run: _Run, chunk: _Chunk) -> bool:
        """Write one chunk; False if shutdown came first (its rows stay in the spool)."""
        records = chunk.records
        if records is None:
            assert chunk.segment is not None
            try:
                records = self._decode(run.spool.read(chunk.segment, chunk.start, chunk.end), chunk.segment.path)
            except OSError:
                logger.exception(
                    "reading request-log rows back from %s failed; left for the next start", chunk.segment.path
                )
                with self._lock:
                    self._done += chunk.rows
                    self._lock.notify_all()
                return True
        for i in range(0, len(records), self.batch_size):
            if self._write_batch(run, records[i : i + self.batch_size]) is None:
                return False
        with self._lock:
            self._done += chunk.rows
            if chunk.records is not None:
                self._in_memory -= chunk.rows
            metrics.LOG_BACKLOG.set(self._submitted - self._done)
            self._lock.notify_all()
        if chunk.segment is not None:
            run.spool.acknowledge(chunk.segment, chunk.rows)
        return True

    def _write_batch(self, run: _Run, batch: list[RequestRecord]) -> list[RequestRecord] | None:
        """Write `batch`, retrying until it goes in; the records inserted, or None if shutdown came first."""
        delay = self.retry_seconds
        inserted: list[RequestRecord] = []
        while True:
            if run.stopping.is_set() and time.monotonic() >= run.stop_by:
                return None
            unchecked = False
            try:
                unchecked = self._ready_connection()
                inserted += self.write(batch)
                self._used = (connection.connection, time.monotonic())
                return inserted
            except REFUSED:
                self._used = None
                # Some row's data is refused: write the rows one by one and set the refused ones aside,
                # so one bad row never holds the others.
                written, batch = self._write_each(batch)
                inserted += written
                if not batch:
                    return inserted
            except Exception as exc:
                self._used = None
                if unchecked:
                    # The connection was not checked, as it had just worked: it may have dropped since
                    # (the server restarted). Again at once, checked: a dead connection is replaced.
                    logger.warning("writing %d request-log rows failed (%s); retrying at once", len(batch), exc)
                    continue
                logger.exception("writing %d request-log rows failed; retrying in %.1fs", len(batch), delay)
            if run.stopping.is_set():
                return None  # no waiting for the database at shutdown: the rows are in the spool
            run.stopping.wait(delay)
            delay = min(delay * 2, 30.0)

    def _ready_connection(self) -> bool:
        """Drop a broken or expired connection, as a request would; True if its health check was skipped.

        The check (a SELECT 1 round trip on PostgreSQL) is skipped on the connection the last batch
        went through, if that batch went in less than `check_idle_seconds` ago: under load, batches
        follow each other, and a connection that just worked is as checked as a SELECT 1 would make
        it. A write that fails on it is retried at once, checked (see _write_batch)."""
        close_old_connections()  # CONN_MAX_AGE, errors seen since the last use
        used = self._used
        if (
            used is not None
            and connection.connection is not None
            and connection.connection is used[0]
            and time.monotonic() - used[1] < self.check_idle_seconds
        ):
            connection.health_check_done = True
            return True
        return False

    def _write_each(self, batch: list[RequestRecord]) -> tuple[list[RequestRecord], list[RequestRecord]]:
        """Write `batch` row by row, setting aside rows the database refuses; the rows inserted, and
        those left unwritten when the database itself fails (to retry)."""
        inserted: list[RequestRecord] = []
        for position, record in enumerate(batch):
            try:
                inserted += self.write([record])
            except REFUSED as exc:
                self._set_aside(record, exc)
            except Exception:
                logger.exception("writing request-log rows failed; retrying %d", len(batch) - position)
                return inserted, batch[position:]
        return inserted, []

    def _replay_orphans(self, run: _Run) -> None:
        """Write the spool files left by processes that are gone, one at a time, each exactly once."""
        tried: set[str] = set()
        while not run.stopping.is_set():
            try:
                orphan = run.spool.claim_orphan(skip=tried)
            except OSError:
                logger.exception("looking for request-log spool files in %s failed", run.spool.directory)
                return
            if orphan is None:
                return
            tried.add(orphan.path.name)
            self._replay(run, orphan)

    def _replay(self, run: _Run, orphan: Orphan) -> None:
        inserted = duplicates = 0
        try:
            for lines in orphan.batches(self.batch_size):
                records = self._decode(lines, orphan.path)
                if not records:
                    continue
                set_aside = self.set_aside
                written = self._write_batch(run, records)
                if written is None:
                    logger.warning("replaying %s stopped at shutdown; it is left for the next start", orphan.path)
                    orphan.release()
                    return
                inserted += len(written)
                duplicates += len(records) - len(written) - (self.set_aside - set_aside)
        except OSError:
            logger.exception("reading spool file %s failed; it is left for the next start", orphan.path)
            orphan.release()
            return
        try:
            orphan.finish()
        except OSError:
            logger.exception("removing replayed spool file %s failed", orphan.path)
        with self._lock:
            self.replayed += inserted
            self.duplicates += duplicates
        logger.info("replayed %s: %d rows written, %d already in the log", orphan.path.name, inserted, duplicates)

    def _decode(self, lines: list[bytes], source: Path) -> list[RequestRecord]:
        """The records of spool lines; a line that holds none (cut short by a crash) is set aside."""
        records: list[RequestRecord] = []
        for line in lines:
            try:
                records.append(record_from_line(line))
            except (ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
                self._set_aside_text(
                    "", f"unreadable line in spool file {source.name}: {exc}", line.decode(errors="replace")
                )
        return records

    def _set_aside(self, record: RequestRecord, exc: Exception) -> None:
        logger.error("the database refused request-log row %s; set aside: %s", record.request_id, exc)
        self._set_aside_text(record.request_id, str(exc), orjson.dumps(to_values(record), default=str).decode())

    def _set_aside_text(self, request_id: str, error: str, values: str) -> None:
        from .models import SetAsideLogRow

        try:
            SetAsideLogRow.objects.create(
                request_id=request_id, error=error[:2000], values=values.replace("\x00", "\\u0000")
            )
        except Exception:
            logger.exception("setting aside request-log row %s failed; it is lost: %s", request_id, values)
        with self._lock:
            self.set_aside += 1
        metrics.LOG_SET_ASIDE.inc()

    def write(self, batch: list[RequestRecord]) -> list[RequestRecord]:
        """Write one batch and run the hooks on the rows it inserted, in one transaction; those rows.

        A record whose uid is already in the log is skipped (ON CONFLICT DO NOTHING): a
        batch retried after a commit whose answer was lost, a spool file replayed again.
        The hooks see only the rows inserted, so the roll-ups count every row once.

        Rows go in with SQL built once per database kind, not the ORM's bulk_create, which
        compiles SQL for every batch and costs several times more CPU per row, CPU this
        thread would take from the request path's GIL. On PostgreSQL that is one multi-row
        INSERT per batch (see `completions.multirow`); on SQLite, one INSERT run over the batch.
        """
        insert = _insert_plan()
        with transaction.atomic():
            with connection.cursor() as cursor:
                new = insert(cursor, batch)
            if new is None:
                inserted = list(batch)  # every row went in (so no uid was there twice): the common case
            else:
                inserted = []
                for record in batch:
                    if record.uid in new:
                        new.discard(record.uid)  # a uid twice in one batch is one row
                        inserted.append(record)
            if inserted:
                for hook in self.hooks:
                    hook(inserted)
        metrics.LOG_WRITTEN.inc(len(inserted))
        return inserted


# ---- the INSERT --------------------------------------------------------------------------------

# The RequestLog columns the writer fills (attribute names), in the order `log_row` gives them.
LOG_COLUMNS = (
    "created_at",
    "uid",
    "request_id",
    "endpoint",
    "api_key_id",
    "key_prefix",
    "user_id",
    "model",
    "provider",
    "upstream_model",
    "route_id",
    "stream",
    "status_code",
    "error_type",
    "error_code",
    "error_message",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "usage_estimated",
    "cost",
    "latency_ms",
    "ttft_ms",
    "finish_reason",
    "client_disconnected",
    "attempts",
    "end_user",
    "metadata",
    "request_body",
    "response_text",
)


def _same(value: Any) -> Any:
    return value


def log_row(r: RequestRecord, encode_json: Callable[[Any], Any] = _same) -> tuple[Any, ...]:
    """The RequestLog column values for a record, in LOG_COLUMNS order; `encode_json` encodes the JSON ones.

    A tuple built at once, not a dict per row turned into a tuple: this runs for every row."""
    return (
        r.created_at,
        r.uid,
        r.request_id,
        r.endpoint,
        r.key_id,
        r.key_prefix,
        r.user_id,
        r.model[:200],
        r.provider,
        r.upstream_model[:200],
        r.route_id,
        r.stream,
        r.status_code,
        r.error_type[:64],
        r.error_code[:64],
        r.error_message,
        r.prompt_tokens,
        r.completion_tokens,
        r.total_tokens,
        r.usage_estimated,
        r.cost,
        r.latency_ms,
        r.ttft_ms,
        r.finish_reason[:32],
        r.client_disconnected,
        encode_json(r.attempts),
        r.end_user[:256],
        encode_json(r.metadata),
        encode_json(r.request_body),
        r.response_text,
    )


def to_values(r: RequestRecord) -> dict[str, Any]:
    """The RequestLog column values (by attribute name) for a record."""
    return dict(zip(LOG_COLUMNS, log_row(r), strict=True))


# (Django cursor, batch): the uids inserted, or None if every row was (the batch held no uid twice)
Insert = Callable[[Any, list[RequestRecord]], set[uuid.UUID] | None]

_PLANS: dict[str, Insert] = {}


def _insert_plan() -> Insert:
    """The INSERT for RequestLog and how to run it (built once per database kind)."""
    plan = _PLANS.get(connection.vendor)
    if plan is None:
        plan = _PLANS[connection.vendor] = _PostgresInsert() if connection.vendor == "postgresql" else _CountedInsert()
    return plan


def _log_statement() -> Values:
    from .models import RequestLog

    meta = RequestLog._meta
    quote = connection.ops.quote_name
    columns = ", ".join(quote(meta.get_field(name).column) for name in LOG_COLUMNS)
    uid = quote(meta.get_field("uid").column)
    return Values(
        f"INSERT INTO {quote(meta.db_table)} ({columns})",
        f"ON CONFLICT ({uid}) DO NOTHING RETURNING {uid}",
        len(LOG_COLUMNS),
    )


def _json_text(value: Any) -> str | None:
    """A JSON column's value as JSON text (the server reads it as jsonb); None stays SQL NULL, as
    Django stores it."""
    if value is None:
        return None
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError: a non-string key, an integer past 64 bits
        return json.dumps(value)


class _PostgresInsert:
    """PostgreSQL (psycopg 3): one multi-row INSERT per batch, its values bound server-side. When it
    inserted fewer rows than it was given (a uid already in the log, or twice in the batch), its
    RETURNING rows tell which went in; otherwise they are not even read. Values go to psycopg as
    they are; only the JSON columns are encoded here, as text the server reads as jsonb."""

    def __init__(self) -> None:
        self.statement = _log_statement()

    def __call__(self, cursor: Any, batch: list[RequestRecord]) -> set[uuid.UUID] | None:
        rows = [log_row(r, _json_text) for r in batch]
        (result,) = multirow.execute(cursor, [(self.statement, rows)])
        if result.rowcount == len(rows):
            return None  # every row went in: no need to read which
        return {row[0] for row in result.rows()}


class _Skipped(Exception):
    """Some row of a batch was already in the log: undo the batch's savepoint and go row by row."""


class _CountedInsert:
    """SQLite: its executemany discards RETURNING rows, so run the batch without them and count;
    only when some row was skipped (rare: a replay), undo it and insert row by row, which tells
    which rows went in. A statement per row always would halve the writer's rows per second."""

    def __init__(self) -> None:
        from django.db import models

        from .models import RequestLog

        statement = _log_statement()
        self.sql = statement.single()
        self.counted = self.sql.partition(" RETURNING ")[0]
        # Only JSON, date-time, decimal and UUID columns need the database's own adaptation; every
        # other value (str, int, bool, None) goes to the driver as it is.
        kinds = (models.JSONField, models.DateTimeField, models.DecimalField, models.UUIDField)
        fields = [RequestLog._meta.get_field(name) for name in LOG_COLUMNS]
        self.adapted = [(i, f) for i, f in enumerate(fields) if isinstance(f, kinds)]

    def __call__(self, cursor: Any, batch: list[RequestRecord]) -> set[uuid.UUID] | None:
        db = cursor.db
        rows = []
        for r in batch:
            row = list(log_row(r))
            for i, f in self.adapted:
                row[i] = f.get_db_prep_save(row[i], db)
            rows.append(row)
        try:
            with transaction.atomic():
                cursor.executemany(self.counted, rows)
                if cursor.rowcount != len(rows):
                    raise _Skipped
            return None
        except _Skipped:
            pass
        found: set[uuid.UUID] = set()
        for row in rows:
            cursor.execute(self.sql, row)
            got = cursor.fetchone()
            if got is not None:
                found.add(got[0] if isinstance(got[0], uuid.UUID) else uuid.UUID(got[0]))
        return found
