"""Database access from async code: one long-lived thread, healthy connections."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

T = TypeVar("T")


def with_fresh_connection(fn: Callable[..., T]) -> Callable[..., T]:
    """Wrap `fn` so it first drops a broken or expired connection, as a request would."""

    def run(*args: Any, **kwargs: Any) -> T:
        close_old_connections()
        return fn(*args, **kwargs)

    return run


async def run_db(fn: Callable[..., T], *args: Any) -> T:
    """Run sync ORM code off the event loop.

    The gateway handler has no per-request thread context, so this lands on
    asgiref's one shared thread, whose connection is reused and health-checked.
    """
    return await sync_to_async(with_fresh_connection(fn), thread_sensitive=True)(*args)
