"""SIGTERM during streams: the production command stops accepting, lets the streams finish within the
grace period, cuts what would outlast it, and writes a log row for every request before it exits.

The gateway runs as the image runs it (`gunicorn -c gunicorn.conf.py`, two workers) with a short
grace period (GUNICORN_GRACEFUL_TIMEOUT=8, of which GATEWAY_SHUTDOWN_RESERVE_SECONDS=3 are kept
for writing the log). Eight streams of about two seconds and one of twenty are running when the
master gets SIGTERM. The database stays up (the log's spool for a database outage is another test's).
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import httpx
import pytest

from completions.keys import create_api_key
from completions.models import ModelRoute, RequestLog
from tests.processes import GatewayProcess

pytestmark = pytest.mark.slow
SHORT, LONG = 8, 1


class Stream(threading.Thread):
    def __init__(self, url: str, key: str, model: str, words: int, request_id: str) -> None:
        super().__init__(daemon=True)
        self.url, self.key, self.model, self.words, self.request_id = url, key, model, words, request_id
        self.events: list[str] = []
        self.first = threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        content = " ".join(f"w{i}" for i in range(self.words))
        body = {"model": self.model, "stream": True, "messages": [{"role": "user", "content": content}]}
        headers = {"Authorization": f"Bearer {self.key}", "x-request-id": self.request_id}
        try:
            with httpx.stream("POST", self.url + "/v1/chat/completions", json=body, headers=headers, timeout=60) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        self.events.append(line)
                        self.first.set()
        except Exception as exc:  # the long stream is cut: its connection closes mid-body
            self.error = exc
        finally:
            self.first.set()

    @property
    def done(self) -> bool:
        return bool(self.events) and self.events[-1] == "data: [DONE]"


def test_sigterm_lets_streams_finish_and_writes_every_row(transactional_db: Any, django_user_model: Any) -> None:
    ModelRoute.objects.create(model_name="short-stream", provider="mock", options={"chunk_delay_ms": 200})
    ModelRoute.objects.create(model_name="long-stream", provider="mock", options={"chunk_delay_ms": 1000})
    _, key = create_api_key(django_user_model.objects.create_user("draining"), "k")
    env = {"GUNICORN_GRACEFUL_TIMEOUT": "8", "GATEWAY_SHUTDOWN_RESERVE_SECONDS": "3", "GATEWAY_DEBUG_HEADERS": "true"}
    with GatewayProcess("gunicorn", workers=2, env=env) as gateway:
        assert gateway.proc is not None
        streams = [Stream(gateway.url, key, "short-stream", 10, f"drain-short-{i}") for i in range(SHORT)]
        streams += [Stream(gateway.url, key, "long-stream", 20, f"drain-long-{i}") for i in range(LONG)]
        for s in streams:
            s.start()
        for s in streams:
            assert s.first.wait(15) and s.events, f"{s.request_id} got no first chunk"
        gateway.proc.send_signal(signal.SIGTERM)
        sent_term = time.monotonic()
        time.sleep(1.0)
        with pytest.raises(httpx.ConnectError):  # no longer accepting
            httpx.get(gateway.url + "/healthz", timeout=2)
        for s in streams:
            s.join(20)
        exit_code = gateway.proc.wait(20)
        took = time.monotonic() - sent_term

    assert exit_code == 0
    assert took < 8 + 2, f"the server took {took:.1f} s to stop (grace period 8 s)"
    short, long = streams[:SHORT], streams[SHORT:]
    assert all(s.done and s.error is None for s in short), [(s.request_id, s.events[-1:], s.error) for s in short]
    assert all(not s.done for s in long)  # it would have outlasted the grace period: cut
    rows = {row.request_id: row for row in RequestLog.objects.filter(request_id__startswith="drain-")}
    assert set(rows) == {s.request_id for s in streams}, "a row for every request, written before the exit"
    for s in short:
        row = rows[s.request_id]
        assert (row.status_code, row.client_disconnected, row.finish_reason) == (200, False, "stop")
        assert row.completion_tokens == 10
    for s in long:
        assert rows[s.request_id].client_disconnected and rows[s.request_id].usage_estimated
