"""What one gateway process holds for its lifetime: engine, broker client,
artifact store and the API key cache."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import anyio.to_thread
from celery import Celery
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.config import Settings
from core.dispatch import Message, send
from core.storage import ArtifactStore


@dataclass
class KeyCache:
    """sha256(key) -> tenant id, kept `ttl` seconds so a status poll costs no key query.
    Only reads use it (service.deps): writes always re-check the key in SQL."""

    ttl: float
    max_entries: int = 10_000
    _entries: dict[str, tuple[str, float]] = field(default_factory=dict)

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


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    celery: Celery
    store: ArtifactStore
    keys: KeyCache


class UnitOfWork:
    """The request's transaction plus the task messages it will send: messages
    leave only after the commit, so a worker never sees a row that is not there.
    A send the broker refuses is logged and left to the workers' sweeper: the
    committed row is the record, so the request still succeeds."""

    def __init__(self, session: AsyncSession, celery: Celery) -> None:
        self.session = session
        self._celery = celery
        self._outbox: list[Message] = []

    def enqueue(self, message: Message) -> None:
        self._outbox.append(message)

    async def commit(self) -> None:
        await self.session.commit()
        outbox, self._outbox = self._outbox, []
        for message in outbox:
            await anyio.to_thread.run_sync(functools.partial(send, self._celery, message))
