"""The request log: a record filled in while a request runs, written off the request path.

`RequestRecord` is a plain object the view fills in; `submit()` hands it to a
background thread that writes batches of rows (and the usage roll-ups that
depend on them) in one transaction. The client never waits for the database.
A failed batch is retried, not dropped; `flush()` waits for everything
submitted so far to be written (tests, shutdown).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import orjson
from django.db import DataError, IntegrityError, close_old_connections, connection, connections, transaction

from . import metrics, pricing

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class RequestRecord:
    """Everything logged about one request."""

    request_id: str
    endpoint: str = "chat.completions"
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


BatchHook = Callable[[list[RequestRecord]], None]
_STOP = object()  # tells the writer thread to finish
REFUSED = (DataError, IntegrityError)  # the database refuses a row's data (not: the database is down)


class LogWriter:
    """A daemon thread that writes submitted records in batches."""

    def __init__(self, batch_size: int = 500, retry_seconds: float = 1.0, max_pending: int = 200_000) -> None:
        self.batch_size = batch_size
        self.retry_seconds = retry_seconds
        self.max_pending = max_pending
        self.hooks: list[BatchHook] = []
        self._queue: queue.SimpleQueue[RequestRecord | object] = queue.SimpleQueue()
        self._lock = threading.Condition()
        self._submitted = 0
        self._done = 0
        self.set_aside = 0  # rows the database refused, kept in SetAsideLogRow instead
        self._thread: threading.Thread | None = None
        # A forked worker inherits this object but not the thread: start afresh there.
        os.register_at_fork(after_in_child=self._forget_thread)

    def _forget_thread(self) -> None:
        self._thread = None
        self._lock = threading.Condition()
        self._queue = queue.SimpleQueue()
        self._submitted = self._done = 0

    def submit(self, record: RequestRecord) -> None:
        """Queue a record; returns at once."""
        if self._thread is None:
            self._start_thread()
        with self._lock:
            self._submitted += 1
        self._queue.put(record)
        metrics.LOG_BACKLOG.inc()

    def pending(self) -> int:
        with self._lock:
            return self._submitted - self._done

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record submitted so far is written; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            target = self._submitted
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> bool:
        """Write what is pending, close the thread's database connections and stop it (shutdown).

        A record submitted after this starts a new thread.
        """
        thread = self._thread
        if thread is None or not thread.is_alive():
            return True
        self._queue.put(_STOP)
        thread.join(timeout)
        return not thread.is_alive()

    def _start_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="request-log-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[RequestRecord] = []
            item = self._queue.get()
            while True:
                if item is _STOP:
                    stopping = True
                    break
                batch.append(cast(RequestRecord, item))
                if len(batch) >= self.batch_size:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write_with_retry(batch)
                metrics.LOG_BACKLOG.dec(len(batch))
            with self._lock:
                self._done += len(batch)
                self._lock.notify_all()
        connections.close_all()
        with self._lock:
            if self._thread is threading.current_thread():
                self._thread = None

    def _write_with_retry(self, batch: list[RequestRecord]) -> None:
        delay = self.retry_seconds
        for record in batch:
            record.make_storable()
        while True:
            try:
                close_old_connections()  # as a request would: drop a broken or expired connection
                self.write(batch)
                metrics.LOG_WRITTEN.inc(len(batch))
                return
            except REFUSED:
                # Some row's data is refused: write the rows one by one and set the refused ones aside,
                # so one bad row never holds the others.
                batch = self._write_each(batch)
                if not batch:
                    return
            except Exception:
                logger.exception("writing %d request-log rows failed; retrying in %.1fs", len(batch), delay)
            if self.pending() > self.max_pending:
                logger.error("request log backlog over %d rows; dropping a batch of %d", self.max_pending, len(batch))
                metrics.LOG_DROPPED.inc(len(batch))
                return
            time.sleep(delay)
            delay = min(delay * 2, 30.0)

    def _write_each(self, batch: list[RequestRecord]) -> list[RequestRecord]:
        """Write `batch` row by row, setting aside rows the database refuses; the rows left unwritten
        when the database itself fails (to retry)."""
        for position, record in enumerate(batch):
            try:
                self.write([record])
                metrics.LOG_WRITTEN.inc()
            except REFUSED as exc:
                self._set_aside(record, exc)
            except Exception:
                logger.exception("writing request-log rows failed; retrying %d", len(batch) - position)
                return batch[position:]
        return []

    def _set_aside(self, record: RequestRecord, exc: Exception) -> None:
        from .models import SetAsideLogRow

        logger.error("the database refused request-log row %s; set aside: %s", record.request_id, exc)
        values = orjson.dumps(to_values(record), default=str).decode()
        try:
            SetAsideLogRow.objects.create(request_id=record.request_id, error=str(exc)[:2000], values=values)
        except Exception:
            logger.exception("setting aside request-log row %s failed; it is lost: %s", record.request_id, values)
        with self._lock:
            self.set_aside += 1
        metrics.LOG_SET_ASIDE.inc()

    def write(self, batch: list[RequestRecord]) -> None:
        """Write one batch and run the hooks, in one transaction.

        Rows go in with one prepared INSERT run over the batch (executemany): the
        ORM's bulk_create compiles SQL for every batch and costs several times more
        CPU per row, which this thread would take from the request path's GIL.
        """
        sql, prepare = _insert_plan()
        rows = [prepare(to_values(r)) for r in batch]
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.executemany(sql, rows)
            for hook in self.hooks:
                hook(batch)


_PLANS: dict[str, tuple[str, Callable[[dict[str, Any]], tuple[Any, ...]]]] = {}


def _insert_plan() -> tuple[str, Callable[[dict[str, Any]], tuple[Any, ...]]]:
    """The INSERT for RequestLog and a function preparing one row's values (built once per database kind)."""
    plan = _PLANS.get(connection.vendor)
    if plan is None:
        plan = _PLANS[connection.vendor] = _build_insert_plan()
    return plan


def _build_insert_plan() -> tuple[str, Callable[[dict[str, Any]], tuple[Any, ...]]]:
    from django.db import models

    from .models import RequestLog

    fields = [f for f in RequestLog._meta.concrete_fields if not f.primary_key]
    table = connection.ops.quote_name(RequestLog._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"
    # Only JSON, date-time and decimal columns need the database's own adaptation; every other
    # value (str, int, bool, None) goes to the driver as it is.
    adapters: list[tuple[str, Callable[[Any], Any] | None]] = []
    for f in fields:
        if isinstance(f, (models.JSONField, models.DateTimeField, models.DecimalField)):
            adapters.append((f.attname, _db_adapter(f)))
        else:
            adapters.append((f.attname, None))

    def prepare(values: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(values[name] if adapt is None else adapt(values[name]) for name, adapt in adapters)

    return sql, prepare


def _db_adapter(field: Any) -> Callable[[Any], Any]:
    """The database's own adaptation of a value for `field` (JSON, date-time, decimal)."""

    def adapt(value: Any) -> Any:
        return field.get_db_prep_save(value, connection)

    return adapt


def to_values(r: RequestRecord) -> dict[str, Any]:
    """The RequestLog column values (by attribute name) for a record."""
    return {
        "created_at": r.created_at,
        "request_id": r.request_id,
        "endpoint": r.endpoint,
        "api_key_id": r.key_id,
        "key_prefix": r.key_prefix,
        "user_id": r.user_id,
        "model": r.model[:200],
        "provider": r.provider,
        "upstream_model": r.upstream_model[:200],
        "route_id": r.route_id,
        "stream": r.stream,
        "status_code": r.status_code,
        "error_type": r.error_type[:64],
        "error_code": r.error_code[:64],
        "error_message": r.error_message,
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "total_tokens": r.total_tokens,
        "usage_estimated": r.usage_estimated,
        "cost": r.cost,
        "latency_ms": r.latency_ms,
        "ttft_ms": r.ttft_ms,
        "finish_reason": r.finish_reason[:32],
        "client_disconnected": r.client_disconnected,
        "attempts": r.attempts,
        "end_user": r.end_user[:256],
        "metadata": r.metadata,
        "request_body": r.request_body,
        "response_text": r.response_text,
    }
