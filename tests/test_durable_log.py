"""The request log is durable: a row is written exactly once, whatever happens to the database
or the process in between. These tests need no server (see test_durable_log_e2e.py for the
gateway under gunicorn, with its database stopped and its workers killed)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from django.db import OperationalError, connection, connections

from completions.models import RequestLog, SetAsideLogRow, UsageDaily
from completions.recorder import LogWriter, RequestRecord, record_from_line, spool_line, storable_line, to_values
from completions.spool import Spool, database_tag
from completions.usage import rollup


def records(n: int, prefix: str = "r") -> list[RequestRecord]:
    return [
        RequestRecord(
            request_id=f"{prefix}-{i}",
            model="mock-gpt-model",
            prompt_tokens=3,
            completion_tokens=i,
            input_price=Decimal("2"),
            output_price=Decimal("8"),
            latency_ms=10 + i,
        )
        for i in range(n)
    ]


def assert_rollups_equal_the_log() -> None:
    rows = list(RequestLog.objects.all())
    usage = list(UsageDaily.objects.all())
    assert sum(u.requests for u in usage) == len(rows)
    assert sum(u.total_tokens for u in usage) == sum(r.total_tokens for r in rows)
    assert sum(u.cost_nanos for u in usage) == sum(int(r.cost * 10**9) for r in rows)


def test_a_record_written_twice_is_one_row_counted_once(transactional_db: Any) -> None:
    writer = LogWriter()
    writer.hooks.append(rollup)
    batch = records(5)
    assert writer.write(batch[:3]) == batch[:3]
    # A retry after a commit whose answer was lost, a spool file replayed again: only the new rows count.
    assert writer.write(batch) == batch[3:]
    assert writer.write([batch[4], batch[4]]) == []
    same_client_id = RequestRecord(request_id="r-0", model="mock-gpt-model")  # request_id may repeat; uid never
    assert writer.write([same_client_id]) == [same_client_id]
    assert RequestLog.objects.count() == 6
    assert sorted(RequestLog.objects.values_list("uid", flat=True)) == sorted(r.uid for r in [*batch, same_client_id])
    assert_rollups_equal_the_log()


# ---- the spool ------------------------------------------------------------------------------


class Database:
    """A hook that makes every batch fail as a database that is down would, while `down` is set."""

    def __init__(self) -> None:
        self.down = threading.Event()

    def __call__(self, batch: list[RequestRecord]) -> None:
        if self.down.is_set():
            raise OperationalError("the database is down (simulated)")


def writer_on(spool: Path, db: Database | None = None, **options: Any) -> LogWriter:
    writer = LogWriter(spool_dir=spool, **{"flush_seconds": 0.01, "retry_seconds": 0.05, **options})
    writer.hooks.append(rollup)
    if db is not None:
        writer.hooks.append(db)
    return writer


def spooled(spool: Path) -> list[RequestRecord]:
    return [record_from_line(line) for f in sorted(spool.glob("log-*.jsonl")) for line in f.read_bytes().splitlines()]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def orphan_file(spool: Path, lines: list[bytes], name: str = "1-dead") -> Path:
    """A spool file as a process that is gone left it (nobody holds its lock)."""
    spool.mkdir(parents=True, exist_ok=True)
    path = spool / f"log-{database_tag(connection.settings_dict)}-{name}.jsonl"
    path.write_bytes(b"".join(lines))
    return path


def test_a_spool_line_holds_the_whole_record() -> None:
    record = RequestRecord(
        request_id="line",
        key_id=7,
        user_id=3,
        model="m\u0000",
        input_price=Decimal("0.37"),
        output_price=Decimal("1.11"),
        prompt_tokens=11,
        completion_tokens=5,
        attempts=[{"provider": "mock", "status": 200, "ms": 1.5}],
        metadata={"team": "a"},
        ttft_ms=4,
        response_text="lone \ud800 surrogate",
    )
    record.make_storable()
    line = spool_line(record)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    back = record_from_line(line)
    assert to_values(back) == to_values(record) and back.cost_nanos == record.cost_nanos
    assert back.uid == record.uid and back.created_at == record.created_at and back.created_at.tzinfo is not None
    assert back.response_text == "lone ? surrogate"  # UTF-8 can't hold it: replaced, in memory as in the spool
    with pytest.raises(ValueError):
        record_from_line(line[:-20])  # cut short by a crash


@pytest.mark.parametrize(
    "where",
    [
        {"end_user": "x\u0000y"},
        {"metadata": {"team\u0000": "a"}},
        {"request_body": {"messages": [{"content": ["deep", {"k": "v\u0000"}]}]}},
        {"attempts": [{"message": "\u0000"}]},
    ],
)
def test_a_nul_anywhere_is_replaced_before_the_row_is_spooled(where: dict[str, Any]) -> None:
    record = RequestRecord(request_id="nul", **where)
    line = storable_line(record)
    in_memory = orjson.dumps(to_values(record), default=str)
    assert b"\\u0000" not in line and b"\\u0000" not in in_memory and "\ufffd".encode() in in_memory
    assert to_values(record_from_line(line)) == to_values(record)
    clean = RequestRecord(request_id="clean", metadata={"text": "a backslash: \\u0000 is not a NUL"})
    assert storable_line(clean) == spool_line(clean) and clean.metadata == {"text": "a backslash: \\u0000 is not a NUL"}


def test_rows_are_spooled_while_the_database_is_down_and_written_once_it_is_back(
    transactional_db: Any, tmp_path: Path
) -> None:
    db = Database()
    db.down.set()
    writer = writer_on(tmp_path, db)
    batch = records(20)
    for record in batch:
        writer.submit(record)
    assert wait_until(lambda: len(spooled(tmp_path)) == 20)
    assert [to_values(r) for r in spooled(tmp_path)] == [to_values(r) for r in batch]
    assert RequestLog.objects.count() == 0
    db.down.clear()
    assert writer.flush(10)
    assert RequestLog.objects.count() == 20
    assert_rollups_equal_the_log()
    assert writer.close()
    assert not list(tmp_path.iterdir())  # a file whose rows are all written is deleted


def test_rows_left_at_shutdown_are_written_exactly_once_by_the_next_start(
    transactional_db: Any, tmp_path: Path
) -> None:
    db = Database()
    db.down.set()
    first = writer_on(tmp_path, db)
    for record in records(50):
        first.submit(record)
    started = time.monotonic()
    assert first.close(10)  # the database is down: nothing to wait for, the rows are in the spool
    assert time.monotonic() - started < 3
    assert len(spooled(tmp_path)) == 50 and RequestLog.objects.count() == 0

    second = writer_on(tmp_path)
    second.start()
    assert second.flush(10)
    assert RequestLog.objects.count() == 50 and second.replayed == 50 and second.duplicates == 0
    assert not list(tmp_path.glob("log-*")) and not list(tmp_path.glob(".*"))
    assert_rollups_equal_the_log()
    assert second.close()

    third = writer_on(tmp_path)
    third.start()
    assert third.flush(10) and third.replayed == 0 and third.close()
    assert RequestLog.objects.count() == 50
    assert_rollups_equal_the_log()


def test_a_file_partly_written_before_a_crash_is_finished_without_duplicates(
    transactional_db: Any, tmp_path: Path
) -> None:
    batch = records(15)
    writer_on(tmp_path).write(batch[:10])  # written, but the process died before deleting its file
    torn = spool_line(records(1, "torn")[0])[:-30]  # the last line, cut short by the crash
    orphan_file(tmp_path, [spool_line(r) for r in batch] + [torn])
    writer = writer_on(tmp_path)
    writer.start()
    assert writer.flush(10) and writer.close()
    assert writer.replayed == 5 and writer.duplicates == 10 and writer.set_aside == 1
    assert sorted(RequestLog.objects.values_list("uid", flat=True)) == sorted(r.uid for r in batch)
    assert_rollups_equal_the_log()  # the ten rows already there are counted once
    (aside,) = SetAsideLogRow.objects.all()
    assert "unreadable line" in aside.error and aside.values == torn.decode()
    assert not list(tmp_path.iterdir())


def test_concurrent_starts_replay_each_file_once(transactional_db: Any, tmp_path: Path) -> None:
    batch = records(120)
    for i in range(6):
        orphan_file(tmp_path, [spool_line(r) for r in batch[i * 20 : (i + 1) * 20]], name=f"{100 + i}-dead")
    other_database = tmp_path / "log-0123456789ab-1-dead.jsonl"
    other_database.write_bytes(spool_line(records(1, "elsewhere")[0]))
    writers = [writer_on(tmp_path, batch_size=7) for _ in range(4)]
    barrier = threading.Barrier(len(writers))

    def start(writer: LogWriter) -> None:
        barrier.wait(5)
        writer.start()

    threads = [threading.Thread(target=start, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert all(w.flush(20) and w.close() for w in writers)
    # Idempotent inserts would hide a file replayed twice; the counts would not.
    assert sum(w.replayed for w in writers) == 120 and sum(w.duplicates for w in writers) == 0
    assert RequestLog.objects.count() == 120
    assert_rollups_equal_the_log()
    assert list(tmp_path.iterdir()) == [other_database]  # another database's rows are not ours to write


def test_claiming_races_give_each_file_to_one_claimer(tmp_path: Path) -> None:
    for round_ in range(20):
        names = {f"log-tag-{round_}-{i}.jsonl" for i in range(5)}
        for name in names:
            (tmp_path / name).write_bytes(b"{}\n")
        claimed: list[str] = []
        barrier = threading.Barrier(8)

        def claim(barrier: threading.Barrier, claimed: list[str]) -> None:
            spool = Spool(tmp_path, "tag")  # its own descriptors: flock treats it as another process
            barrier.wait(5)
            for _ in range(20):
                orphan = spool.claim_orphan()
                if orphan is None:
                    return
                claimed.append(orphan.path.name)
                orphan.finish()

        threads = [threading.Thread(target=claim, args=(barrier, claimed)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(claimed) == sorted(names)
        assert not list(tmp_path.iterdir())


def test_a_live_writer_keeps_its_file(transactional_db: Any, tmp_path: Path) -> None:
    db = Database()
    db.down.set()
    live = writer_on(tmp_path, db)
    for record in records(5):
        live.submit(record)
    assert wait_until(lambda: len(spooled(tmp_path)) == 5)
    other = writer_on(tmp_path)
    other.start()
    assert other.flush(5) and other.replayed == 0 and other.close()
    assert len(spooled(tmp_path)) == 5  # still the live writer's: its lock is held
    db.down.clear()
    assert live.flush(10) and live.close()
    assert RequestLog.objects.count() == 5


def test_past_the_memory_bound_rows_wait_in_the_spool_not_in_memory(transactional_db: Any, tmp_path: Path) -> None:
    db = Database()
    db.down.set()
    writer = writer_on(tmp_path, db, max_pending=10)
    batch = records(300)
    for i, record in enumerate(batch):
        writer.submit(record)
        if i % 50 == 0:
            time.sleep(0.03)  # several appends
    assert wait_until(lambda: len(spooled(tmp_path)) == 300)
    assert writer.in_memory() <= 10 and writer.dropped == 0
    db.down.clear()
    assert writer.flush(20)
    assert writer.in_memory() == 0
    assert sorted(RequestLog.objects.values_list("uid", flat=True)) == sorted(r.uid for r in batch)
    assert_rollups_equal_the_log()
    assert writer.close()


def test_a_spool_that_cannot_be_written_costs_durability_not_the_log(transactional_db: Any, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    db = Database()
    db.down.set()
    writer = writer_on(tmp_path / "a-file" / "spool", db, max_pending=10)
    for record in records(15):
        writer.submit(record)
    # Held in memory up to the bound; past it, with no spool, dropped (and logged).
    assert wait_until(lambda: writer.dropped + writer.in_memory() == 15)
    assert writer.in_memory() <= 10 and writer.dropped >= 5
    db.down.clear()
    assert writer.flush(10) and writer.close()
    assert RequestLog.objects.count() == 15 - writer.dropped
    assert_rollups_equal_the_log()


# ---- the writer's connection -------------------------------------------------------------------


def test_back_to_back_batches_skip_the_health_check_an_idle_connection_gets_it(
    transactional_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[str] = []
    wrapper = type(connections["default"])
    is_usable = wrapper.is_usable

    def counted(self: Any) -> bool:
        if threading.current_thread().name == "request-log-writer":
            checks.append("SELECT 1")
        return is_usable(self)

    monkeypatch.setattr(wrapper, "is_usable", counted)
    writer = writer_on(tmp_path)
    batch = records(4)
    for record in batch[:3]:
        writer.submit(record)
        assert writer.flush(10)  # a batch each, each on the connection the one before used
    assert checks == []  # the first batch opened the connection; the next two had just seen it work
    writer.check_idle_seconds = 0.0  # as if the connection had been idle: checked before the batch
    writer.submit(batch[3])
    assert writer.flush(10) and writer.close()
    assert checks == ["SELECT 1"]
    assert RequestLog.objects.count() == 4
    assert_rollups_equal_the_log()


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="drops a PostgreSQL connection")
def test_a_connection_dropped_between_batches_is_replaced_at_once(transactional_db: Any, tmp_path: Path) -> None:
    writer = writer_on(tmp_path, retry_seconds=30.0)  # a wait would outlast the flush
    batch = records(6)
    for record in batch[:3]:
        writer.submit(record)
    assert writer.flush(10)
    with connection.cursor() as cursor:  # as a server restart would: every other session ends
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchall()
    for record in batch[3:]:
        writer.submit(record)
    assert writer.flush(10), "the writer waited instead of reconnecting"
    assert writer.close()
    assert sorted(RequestLog.objects.values_list("uid", flat=True)) == sorted(r.uid for r in batch)
    assert_rollups_equal_the_log()


def test_each_record_gets_its_own_version_4_uid_also_in_a_forked_worker() -> None:
    import os
    import uuid

    from completions.recorder import new_uid

    uids = {new_uid() for _ in range(10_000)}
    assert len(uids) == 10_000
    assert all(u.version == 4 and u.variant == uuid.RFC_4122 for u in uids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a worker forked from the master: its uids must not repeat the master's
        os.write(write, new_uid().bytes)
        os._exit(0)
    os.waitpid(pid, 0)
    child = uuid.UUID(bytes=os.read(read, 16))
    assert child != new_uid() and child not in uids
