"""The status records' Redis side (see core.status): the workers publish after their
commits (a sync client and a session hook), the gateway reads with one HMGET and
publishes after its own commits and on a miss (an async client).

A publish that fails (Redis away) is logged and never fails the transaction it follows:
the database holds the truth, and a stale record expires within NON_FINAL_TTL_S. After a
failure a publisher skips Redis for PAUSE_S, so a Redis that drops packets does not add
its timeout to every commit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

import redis
import redis.asyncio as aioredis
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.resp import MuxConnection, ReplyError
from core.status import (
    PUBLISH_LUA,
    RECORD_FIELDS,
    StatusRecord,
    publish_args,
    records_of,
    status_key,
    status_query,
    touched,
)

log = logging.getLogger("stillhouse.status")
PAUSE_S = 5.0
# A poll must not hang on a Redis that stopped answering: it falls back to the database.
SOCKET_TIMEOUT_S = 1.0
REDIS_ERRORS = (redis.RedisError, OSError)


def uses_redis(settings: Settings) -> bool:
    """Records are kept where the broker is Redis; the embedded broker (a folder) has none,
    and every status read goes to the database."""
    return settings.resolved_broker_url.startswith(("redis://", "rediss://"))


class _Breaker:
    def __init__(self) -> None:
        self._until = 0.0

    @property
    def open(self) -> bool:
        return time.monotonic() < self._until

    def trip(self, what: str, exc: BaseException) -> None:
        was_open, self._until = self.open, time.monotonic() + PAUSE_S
        if was_open:  # the calls that were in flight together: one line is enough
            return
        log.warning("status cache: %s failed (%s: %s); Redis skipped for %.0f s",
                    what, type(exc).__name__, exc, PAUSE_S)  # fmt: skip


class StatusPublisher:
    """The workers' side: after a commit, read the marked jobs again (one query, on a
    connection of its own) and publish their records."""

    def __init__(self, url: str, prefix: str) -> None:
        self.prefix = prefix
        self._client = redis.Redis.from_url(
            url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S
        )
        self._script = self._client.register_script(PUBLISH_LUA)
        self._breaker = _Breaker()

    def publish(self, engine: Engine, job_ids: Iterable[str]) -> None:
        ids = sorted(set(job_ids))
        if not ids or self._breaker.open:
            return
        try:
            with engine.connect() as conn:
                records = records_of(conn.execute(status_query(ids)).all())
            for record in records.values():
                self.write(record)
        except REDIS_ERRORS as exc:
            self._breaker.trip("publish", exc)
        except Exception:  # the database blinked after the commit: the record heals by TTL
            log.warning("status cache: could not read jobs %s to publish", ids, exc_info=True)

    def write(self, record: StatusRecord) -> bool:
        """Compare-and-set the record (core.status.PUBLISH_LUA); True when written."""
        key = status_key(self.prefix, record.job_id)
        return bool(self._script(keys=[key], args=publish_args(record)))


def install_publisher(sessions: sessionmaker[Session], settings: Settings) -> None:
    """Publish, after each commit of a session `sessions` makes, the jobs its transaction
    marked (core.status.mark); a rolled-back transaction's marks are dropped."""
    if not uses_redis(settings):
        return
    publisher = StatusPublisher(settings.resolved_broker_url, settings.broker_prefix)

    def after_commit(session: Session) -> None:
        job_ids = touched(session)
        bind = session.get_bind()
        if job_ids and isinstance(bind, Engine):
            publisher.publish(bind, job_ids)

    def after_rollback(session: Session) -> None:
        touched(session)

    event.listen(sessions, "after_commit", after_commit)
    event.listen(sessions, "after_rollback", after_rollback)


class StatusCache:
    """The gateway's side: one HMGET per poll; it publishes after its own commits and
    after reading a record the cache lacked (service.jobs.status)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.prefix = url, prefix
        # Polls share one multiplexed connection (core.resp); writes use redis-py.
        self.reads = MuxConnection(url, SOCKET_TIMEOUT_S)
        self._client: aioredis.Redis | None = None
        self._breaker = _Breaker()

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:  # made on first use, inside the gateway's event loop
            # No socket_timeout: redis-py would wrap every send in asyncio.wait_for, a new
            # task per command; the calls below carry one asyncio.timeout each instead.
            self._client = aioredis.Redis.from_url(
                self.url, socket_connect_timeout=SOCKET_TIMEOUT_S, max_connections=256
            )
        return self._client

    async def get(self, job_id: str) -> tuple[str, str, bytes] | None:
        """(tenant id, etag, body) of the job's record, or None: no record, or Redis away."""
        if self._breaker.open:
            return None
        try:
            async with asyncio.timeout(SOCKET_TIMEOUT_S):
                reply = await self.reads.call(
                    "HMGET", status_key(self.prefix, job_id), *RECORD_FIELDS
                )
        except (ReplyError, OSError) as exc:  # TimeoutError and ConnectionError are OSErrors
            self.reads.close()
            self._breaker.trip("read", exc)
            return None
        tenant, etag, body = reply if isinstance(reply, list) else (None, None, None)
        if not (isinstance(tenant, bytes) and isinstance(etag, bytes) and isinstance(body, bytes)):
            return None  # no record
        return tenant.decode(), etag.decode(), body

    async def write(self, record: StatusRecord) -> bool:
        if self._breaker.open:
            return False
        try:
            async with asyncio.timeout(SOCKET_TIMEOUT_S):
                written = await self.client.eval(
                    PUBLISH_LUA, 1, status_key(self.prefix, record.job_id), *publish_args(record)
                )
        except (*REDIS_ERRORS, TimeoutError) as exc:
            self._breaker.trip("publish", exc)
            return False
        return bool(written)

    async def aclose(self) -> None:
        self.reads.close()
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def status_cache(settings: Settings) -> StatusCache | None:
    if not uses_redis(settings):
        return None
    return StatusCache(settings.resolved_broker_url, settings.broker_prefix)
