"""Multi-row INSERTs on PostgreSQL: many rows in one statement, several statements in one round trip.

The request-log writer inserts its batches and upserts their roll-ups with these. One
`INSERT ... VALUES (...), (...)` per batch, with the values bound server-side, costs a
fraction of the CPU of a statement per row (psycopg dumps the parameters in C; Django's
client-side binding quotes each one in Python), and the statements of one step go to the
server in one pipeline: one round trip, whatever the number of rows (psycopg sends the BEGIN
that opens a transaction, when a statement is the transaction's first, on a round trip of its own).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

MAX_PARAMETERS = 65535  # bind parameters in one PostgreSQL statement at most (a 16-bit count)


@dataclass(frozen=True)
class Values:
    """`head` VALUES (...), (...) `tail`: an INSERT of rows `width` columns wide."""

    head: str  # INSERT INTO table (a, b, ...)
    tail: str  # ON CONFLICT ..., RETURNING ...
    width: int

    @property
    def rows_per_statement(self) -> int:
        return MAX_PARAMETERS // self.width

    def sql(self, rows: int) -> bytes:
        return _sql(self, rows)

    def single(self) -> str:
        """The statement for one row (executemany, SQLite)."""
        return f"{self.head} VALUES ({', '.join(['%s'] * self.width)}) {self.tail}"


def _sql(statement: Values, rows: int) -> bytes:
    # PostgreSQL's own placeholders ($1, $2, ...), for a RawCursor: psycopg does not cache its
    # conversion of %s placeholders for statements this long, and converting one in Python
    # costs more than dumping its parameters. Not cached whole either (a statement of 500 log
    # rows is some 100 KB, and batches come in every size): the placeholders of each row are
    # made once per width, and joining them costs microseconds.
    groups = _groups.get(statement.width, [])
    if len(groups) < rows:
        groups = _groups[statement.width] = _placeholders(statement.width, max(rows, 2 * len(groups)))
    return f"{statement.head} VALUES {','.join(groups[:rows])} {statement.tail}".encode()


_groups: dict[int, list[str]] = {}  # width: "($1,$2)", "($3,$4)", ... (replaced whole, never changed)


def _placeholders(width: int, rows: int) -> list[str]:
    rows = min(rows, MAX_PARAMETERS // width)
    return ["(" + ",".join(f"${n}" for n in range(row * width + 1, (row + 1) * width + 1)) + ")" for row in range(rows)]


class Result:
    """What one statement did over all its rows: how many it inserted or updated, and the rows its
    RETURNING clause gave, read from the answers only when asked for (loading a value, a UUID
    say, costs CPU the caller may not need to spend)."""

    def __init__(self, cursors: list[Any]) -> None:
        self._cursors = cursors
        self._rows: list[tuple[Any, ...]] | None = None

    @property
    def rowcount(self) -> int:
        return sum(c.rowcount for c in self._cursors)

    def rows(self) -> list[tuple[Any, ...]]:
        if self._rows is None:
            self._rows = [row for c in self._cursors for row in c.fetchall()]
        return self._rows


def execute(cursor: Any, work: Sequence[tuple[Values, Sequence[Sequence[Any]]]]) -> list[Result]:
    """Run each statement over its rows (split to stay under the parameter limit) in one pipeline,
    on a Django cursor of a PostgreSQL (psycopg 3) connection; what each statement did. Errors
    come out as Django's database errors.

    The cursors bind their parameters server-side whatever Django's own cursors do (RawCursor:
    the statements carry PostgreSQL's placeholders, no conversion), and the statements are not
    prepared (prepare=False), so a transaction-pooling proxy sees nothing it could not route.
    They are client-side cursors: nothing is held on the server once the pipeline is read."""
    import psycopg

    results = [Result([]) for _ in work]
    if not any(rows for _, rows in work):
        return results
    db = cursor.db
    raw = db.connection
    with db.wrap_database_errors, raw.pipeline():
        for result, (statement, rows) in zip(results, work, strict=True):
            step = statement.rows_per_statement
            for start in range(0, len(rows), step):
                part = rows[start : start + step]
                sink = psycopg.RawCursor(raw)
                result._cursors.append(sink)
                sink.execute(statement.sql(len(part)), list(chain.from_iterable(part)), prepare=False)
        # Leaving the pipeline sent it and read every answer: the results wait for nothing.
    return results
