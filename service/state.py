"""What one gateway process holds for its lifetime: engine, broker client,
artifact store and the API key cache."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from celery import Celery
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.config import Settings
from core.queues import TaskName
from core.storage import ArtifactStore


@dataclass
class KeyCache:
    """sha256(key) -> tenant id, kept `ttl` seconds so a status poll costs no key query."""

    ttl: float
    max_entries: int = 10_000
    _entries: dict[str, tuple[str, float]] = field(default_factory=dict)

    def get(self, key_hash: str) -> str | None:
        hit = self._entries.get(key_hash)
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

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
    leave only after the commit, so a worker never sees a row that is not there."""

    def __init__(self, session: AsyncSession, celery: Celery) -> None:
        self.session = session
        self._celery = celery
        self._outbox: list[tuple[str, list[Any], str]] = []

    def enqueue(self, task: TaskName, args: list[Any], queue: str) -> None:
        self._outbox.append((task.value, args, queue))

    async def commit(self) -> None:
        await self.session.commit()
        outbox, self._outbox = self._outbox, []
        for name, args, queue in outbox:
            await anyio.to_thread.run_sync(functools.partial(self._send, name, args, queue))

    def _send(self, name: str, args: list[Any], queue: str) -> None:
        self._celery.send_task(name, args=args, queue=queue)
