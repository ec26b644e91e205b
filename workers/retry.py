"""Riding out a database blip inside a stage. A worker that holds a stage
keeps holding it while the database is unreachable: each call is re-run from
the start with exponential backoff, for up to `db_retry_s` from its first
failure, and only then does the error reach the stage (which lets the stage go).

Only "could not reach the database" errors are retried. A LeaseLost, a
constraint violation or a bug is raised at once: retrying cannot change them."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from workers.context import WorkerContext

log = logging.getLogger("stillhouse.worker")
T = TypeVar("T")

# The database went away, refused a connection, or cut one (a restart, a failover, a
# network blip). psycopg's errors arrive wrapped in SQLAlchemy's.
DB_TRANSIENT: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeout,
    ConnectionError,
)
FIRST_WAIT_S = 0.2
MAX_WAIT_S = 5.0  # a recovered database is noticed within this long


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, DB_TRANSIENT):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def retrying(budget_s: float, what: str, call: Callable[[], T]) -> T:
    """`call()`, re-run while it fails with a transient database error, waiting
    0.2 s, 0.4 s, ... (at most 5 s) between tries, until `budget_s` seconds have
    passed since the first failure; then that error is raised."""
    failed_at: float | None = None
    wait = FIRST_WAIT_S
    while True:
        try:
            result = call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            now = time.monotonic()
            if failed_at is None:
                failed_at = now
                log.warning(
                    "database unreachable while %s (%s); retrying for up to %.0f s",
                    what,
                    brief(exc),
                    budget_s,
                )
            if now - failed_at + wait > budget_s:
                log.error(
                    "database still unreachable after %.0f s; gave up %s", now - failed_at, what
                )
                raise
            # Jitter, so the threads and workers that lost the database together do not
            # knock on it together when it returns.
            time.sleep(wait * random.uniform(0.8, 1.0))
            wait = min(wait * 2, MAX_WAIT_S)
            continue
        if failed_at is not None:
            log.warning(
                "database back after %.1f s; %s went on", time.monotonic() - failed_at, what
            )
        return result


def transact(ctx: WorkerContext, what: str, work: Callable[[Session], T]) -> T:
    """`work(session)` in one transaction, re-run whole while the database is
    unreachable (see `retrying`). A failed try rolled back, so `work` must be
    safe to run again; a commit whose answer was lost may have landed, so a
    write re-run after it must be a no-op the second time (fenced updates are;
    metric points are inserted with ON CONFLICT DO NOTHING)."""

    def once() -> T:
        with ctx.sessions.begin() as session:
            return work(session)

    return retrying(ctx.settings.db_retry_s, what, once)


def read(ctx: WorkerContext, what: str, work: Callable[[Session], T]) -> T:
    """`work(session)` on a session outside a transaction block, retried like `transact`."""

    def once() -> T:
        with ctx.sessions() as session:
            return work(session)

    return retrying(ctx.settings.db_retry_s, what, once)


def brief(exc: BaseException) -> str:
    first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0] if first else ''}"
