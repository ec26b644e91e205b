"""What one gateway process holds for its lifetime: engine, broker client,
reply channel, artifact store, the API key cache and the status cache."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio.to_thread
from celery import Celery
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.blobs import uses_blob
from core.config import Settings
from core.dispatch import Message, send
from core.replies import ReplyChannel
from core.status import records_of, status_query
from core.status_cache import StatusCache
from core.storage import ArtifactStore, Blob

log = logging.getLogger("stillhouse.api")


@dataclass
class KeyCache:
    """sha256(key) -> tenant id, kept `ttl` seconds so a status poll costs no key query.
    Only reads use it (service.deps): writes always re-check the key in SQL."""

    ttl: float
    max_entries: int = 10_000
    _entries: dict[str, tuple[str, float]] = field(default_factory=dict)
    _lookups: dict[str, asyncio.Future[str | None]] = field(default_factory=dict)

    def get(self, key_hash: str) -> str | None:
        hit = self._entries.get(key_hash)
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def drop(self, key_hash: str) -> None:
        self._entries.pop(key_hash, None)

    def put(self, key_hash: str, tenant_id: str) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key_hash] = (tenant_id, time.monotonic() + self.ttl)

    async def shared(
        self, key_hash: str, lookup: Callable[[], Awaitable[str | None]]
    ) -> str | None:
        """`lookup()`'s answer, run once for all the callers that ask for the same key while
        it runs. Shielded: a caller that goes away does not cancel the others' lookup."""
        task = self._lookups.get(key_hash)
        if task is None:
            task = asyncio.ensure_future(lookup())
            self._lookups[key_hash] = task
            task.add_done_callback(lambda done: self._done(key_hash, done))
        return await asyncio.shield(task)

    def _done(self, key_hash: str, task: asyncio.Future[str | None]) -> None:
        self._lookups.pop(key_hash, None)
        if not task.cancelled():
            task.exception()  # retrieved, even when every caller went away


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    celery: Celery
    store: ArtifactStore
    keys: KeyCache
    # Where predicts wait for their worker's answer (core.replies).
    replies: ReplyChannel
    # The jobs' status records in Redis (core.status); None with the embedded broker.
    status: StatusCache | None = None


class UnitOfWork:
    """The request's transaction plus the task messages it will send: messages
    leave only after the commit, so a worker never sees a row that is not there.
    A send the broker refuses is logged and left to the workers' sweeper: the
    committed row is the record, so the request still succeeds. The jobs it
    `touch`ed are read again after the commit and their status records
    published (core.status), the same way.

    It also remembers the blobs the request created: a request that ends
    without a commit removes them again (`release`), so a failed upload leaves
    neither row nor file behind."""

    def __init__(
        self,
        session: AsyncSession,
        celery: Celery,
        store: ArtifactStore | None = None,
        status: StatusCache | None = None,
    ) -> None:
        self.session = session
        self._celery = celery
        self._outbox: list[Message] = []
        self._status = status
        self._touched: set[str] = set()
        self._store = store
        self._new_blobs: list[Blob] = []
        self._committed = False

    def stored(self, blob: Blob) -> None:
        if blob.created_stamp is not None:
            self._new_blobs.append(blob)

    def enqueue(self, message: Message) -> None:
        self._outbox.append(message)

    def touch(self, job_id: str) -> None:
        """The job's row changes in this transaction: publish its status after the commit."""
        self._touched.add(job_id)

    async def commit(self) -> None:
        await self.session.commit()
        self._committed = True
        outbox, self._outbox = self._outbox, []
        for message in outbox:
            await anyio.to_thread.run_sync(functools.partial(send, self._celery, message))
        touched, self._touched = self._touched, set()
        if touched and self._status is not None:
            await self._publish(self._status, touched)

    async def _publish(self, status: StatusCache, job_ids: set[str]) -> None:
        try:
            rows = (await self.session.execute(status_query(job_ids))).all()
        except Exception:  # the database blinked after the commit: the record heals by TTL
            log.warning("could not read jobs %s to publish their status", job_ids, exc_info=True)
            return
        for record in records_of(rows).values():
            await status.write(record)

    async def release(self) -> None:
        """At the end of the request: without a commit, remove the blobs it created that
        no row records (a concurrent upload of the same file may have recorded one)."""
        blobs, self._new_blobs = self._new_blobs, []
        if self._committed or not blobs or self._store is None:
            return
        store = self._store
        try:
            await self.session.rollback()
            for blob in blobs:
                if await self.session.scalar(uses_blob(blob)) is None:
                    await anyio.to_thread.run_sync(functools.partial(store.discard, blob))
        except Exception:  # the database is away: the collector removes them later
            log.warning("could not remove the blobs of a failed request", exc_info=True)
