"""The gateway's log lines: one JSON object per line on stdout, written off the event loop.

Every line, the per-request line and the gateway's own warnings and errors alike (and
gunicorn's and uvicorn's, see gunicorn.conf.py), has the same shape:

    {"time": "2026-12-01T10:00:00.123Z", "level": "info", "logger": "gateway.request",
     "message": "request", "pid": 4242, ...the line's own fields...}

The request line (`request_line`, called once per request from `Exchange.close()`)
carries the request id, the key's prefix (never the key), the user id, endpoint, model,
provider, status, tokens, cost, latency, time to first token and the attempts. It holds
no prompt or response text and no error message (a validation message may quote what
the client sent): only the error's type and code. Other lines pass through the
credential redaction (`redaction.py`) before they are written.

`LOG_FORMAT=plain` writes the same lines as `time level logger message key=value ...`
for a terminal (`make run`); `LOG_LEVEL` sets the level (WARNING drops the request lines).

`BackgroundStreamHandler` formats a line in the caller (microseconds) and writes it from
a thread of its own, so a slow reader of stdout never stalls the event loop; if the
reader stops altogether, lines beyond `max_pending` are counted and dropped, not held.

This module imports nothing of Django: gunicorn's master process uses its formatter too.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from typing import IO, TYPE_CHECKING, Any

import orjson

from .redaction import redact

if TYPE_CHECKING:
    from .exchange import Exchange

request_logger = logging.getLogger("gateway.request")

FORMATS = ("json", "plain")


_second: list[Any] = [None, ""]  # the last second formatted, and its text


def _timestamp(created: float) -> str:
    seconds = int(created)
    if _second[0] != seconds:
        _second[:] = [seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))]
    return f"{_second[1]}.{int((created - seconds) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, pid, the record's `fields`, the exception."""

    def format_fields(self, created: float, level: str, logger: str, message: str, fields: dict[str, Any]) -> str:
        """A line of the gateway's own, from known-safe fields (no redaction needed)."""
        line = {"time": _timestamp(created), "level": level.lower(), "logger": logger, "message": message, "pid": _pid}
        line.update(fields)
        return orjson.dumps(line, default=str).decode()

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] | None = getattr(record, "fields", None)
        if fields is not None:
            return self.format_fields(record.created, record.levelname, record.name, str(record.msg), fields)
        line: dict[str, Any] = {
            "time": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": _pid,
        }
        # Anything but the gateway's own request line may carry text from elsewhere: redact it.
        line["message"] = redact(line["message"])
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = redact(record.exc_text)
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return orjson.dumps(line, default=str).decode()


class PlainFormatter(logging.Formatter):
    """`time level logger message key=value ...`, for a terminal."""

    def format_fields(self, created: float, level: str, logger: str, message: str, fields: dict[str, Any]) -> str:
        pairs = "".join(f" {k}={_plain(v)}" for k, v in fields.items() if v not in ("", None))
        return f"{_timestamp(created)} {level} {logger} {message}{pairs}"

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] | None = getattr(record, "fields", None)
        if fields is not None:
            return self.format_fields(record.created, record.levelname, record.name, str(record.msg), fields)
        text = f"{_timestamp(record.created)} {record.levelname} {record.name} "
        text += redact(record.getMessage())
        if record.exc_info:
            text += "\n" + redact(self.formatException(record.exc_info))
        return text


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value, default=str).decode()


_pid = os.getpid()


def _renew_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_renew_pid)


def make_formatter() -> logging.Formatter:
    """The formatter LOG_FORMAT names (json, the default, or plain).

    The gateway's formats use no source file, line, thread or process name, so the logging
    module is told not to look them up for every record (a stack walk and system calls per
    line, as the logging documentation's "Optimization" section describes); the pid comes from
    this module, renewed in a forked child."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    kind = os.environ.get("LOG_FORMAT", "json").strip().lower() or "json"
    if kind not in FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(FORMATS)}; got {kind!r}.")
    return JsonFormatter() if kind == "json" else PlainFormatter()


class BackgroundStreamHandler(logging.Handler):
    """Format in the caller, write from a thread: the event loop never waits on stdout.

    The thread is woken once per batch, not per line, and lets lines gather for `GATHER_SECONDS`
    before one write: waking it for every request line (a condition's notify, then the thread
    taking the GIL for one small write) was 8% of a worker's event loop at 64 connections."""

    GATHER_SECONDS = 0.01

    def __init__(self, stream: IO[str] | None = None, max_pending: int = 100_000) -> None:
        super().__init__()
        # None: the stream LOG_STREAM names (stdout, or stderr for management commands, whose own
        # output is on stdout), as it is when the line is written
        self.stream = stream
        self.max_pending = max_pending
        self.dropped = 0
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # a forked child starts its own thread

    def _reset(self) -> None:
        self._lines: deque[str] = deque()
        self._wake = threading.Condition(threading.Lock())
        self._queued = self._written = 0
        self._signalled = False  # the thread was woken and has not taken the lines yet
        self._thread: threading.Thread | None = None
        self._closed = False

    def emit(self, record: logging.LogRecord) -> None:
        # logging.Handler.handle() holds this handler's lock around emit: one caller at a time.
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.put(line)

    def put(self, line: str) -> None:
        """Queue one formatted line (callers other than emit hold `self.lock`)."""
        if self._closed:
            self._write([line])
            return
        if self._queued - self._written >= self.max_pending:
            self.dropped += 1
            return
        self._queued += 1
        self._lines.append(line)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
            self._thread.start()
        if not self._signalled:
            self._signalled = True
            with self._wake:
                self._wake.notify()

    def _write(self, lines: list[str]) -> None:
        stream = self.stream or (sys.stderr if os.environ.get("LOG_STREAM") == "stderr" else sys.stdout)
        try:
            stream.write("\n".join(lines) + "\n")
            stream.flush()
        except Exception:  # a closed stdout: nothing left to tell
            pass

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._lines and not self._closed:
                    self._wake.wait()
            if not self._closed:
                time.sleep(self.GATHER_SECONDS)  # let the lines of the next few ms join this write
            self._signalled = False  # from here a new line wakes the thread again (or finds it awake)
            batch: list[str] = []
            while self._lines and len(batch) < 5000:
                batch.append(self._lines.popleft())
            if batch:
                self._write(batch)
            with self._wake:
                self._written += len(batch)
                self._wake.notify_all()
                if self._closed and not self._lines:
                    return

    def flush(self, timeout: float = 5.0) -> None:
        """Wait (at most `timeout` seconds) until every line emitted so far is written."""
        if self._thread is None:
            return
        target = self._queued
        deadline = time.monotonic() + timeout
        with self._wake:
            while self._written < target and self._thread is not None and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._wake.wait(left)

    def close(self) -> None:
        """Write what is queued, then write any later line directly (process exit)."""
        self.flush()
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        super().close()


def attempts_for_log(attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each attempt's route, outcome, status and duration: never its message (upstream words)."""
    out = []
    for a in attempts:
        entry: dict[str, Any] = {"route": a.get("route"), "ok": a.get("ok"), "ms": a.get("ms")}
        if "status" in a:
            entry["status"] = a["status"]
            entry["error"] = a.get("error")
        if a.get("skipped"):
            entry["skipped"] = a["skipped"]
        out.append(entry)
    return out


def request_line(exchange: Exchange) -> None:
    """The request's JSON line (one per request; see the module docstring for what it leaves out)."""
    if not request_logger.isEnabledFor(logging.INFO):
        return
    r = exchange.record
    fields = {
        "request_id": r.request_id,
        "key_prefix": r.key_prefix,
        "user_id": r.user_id,
        "endpoint": r.endpoint,
        "model": r.model[:200],
        "provider": r.provider,
        "upstream_model": r.upstream_model,
        "stream": r.stream,
        "status": r.status_code,
        "error_type": r.error_type,
        "error_code": r.error_code,
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "usage_estimated": r.usage_estimated,
        "cost_usd": r.cost_nanos / 1e9 if (r.input_price or r.output_price) else 0.0,
        "latency_ms": r.latency_ms,
        "ttft_ms": r.ttft_ms,
        "finish_reason": r.finish_reason,
        "client_disconnected": r.client_disconnected,
        "attempts": attempts_for_log(r.attempts),
    }
    handler = _sole_handler()
    if handler is None:
        request_logger.info("request", extra={"fields": fields})
        return
    # The usual configuration (one background handler, the gateway's formatter): the same line,
    # without a LogRecord and the logging module's dispatch, which cost more than the line.
    formatter: JsonFormatter | PlainFormatter = handler.formatter  # type: ignore[assignment]
    line = formatter.format_fields(time.time(), "INFO", request_logger.name, "request", fields)
    with handler.lock:  # type: ignore[union-attr]
        handler.put(line)


def _sole_handler() -> BackgroundStreamHandler | None:
    """The handler the request line reaches when it is exactly one BackgroundStreamHandler with the
    gateway's formatter and nothing filters on the way (else None: go through logging)."""
    found: list[logging.Handler] = []
    logger: logging.Logger | None = request_logger
    while logger is not None:
        if logger.filters:
            return None
        found.extend(logger.handlers)
        if not logger.propagate:
            break
        logger = logger.parent
    if len(found) != 1:
        return None
    handler = found[0]
    if (
        type(handler) is not BackgroundStreamHandler
        or handler.filters
        or handler.level > logging.INFO
        or type(handler.formatter) not in (JsonFormatter, PlainFormatter)
    ):
        return None
    return handler
