"""A small request/reply channel for synchronous calls into a worker (predict).

The Celery message carries the request's id only. The request itself (inputs,
the model's file key, a deadline) waits in the channel for the worker, and the
worker's answer comes back the same way; nothing of it touches the database.
The channel follows the broker: Redis when the broker is Redis, a folder beside
the filesystem broker's when it is the embedded one.

The gateway side is async (`post`, `wait`, `forget`); the worker side is sync
(`fetch`, `answer`). Both sides build their channel with `reply_channel(settings)`.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

from core.config import Settings

Record = dict[str, Any]
# A worker's reply is the outputs, or {"error": one of these, "detail": a sentence}.
INVALID_INPUT = "invalid_input"  # the model cannot take these inputs: the gateway's 422
INTERNAL = "internal"  # anything else went wrong in the worker: a 502

# The embedded gateway looks for a reply file this often: a stat per look, and a few
# milliseconds are small beside the filesystem broker's own 0.2 s poll.
FILE_POLL_S = 0.005
# Files older than this are left over from a gateway that stopped waiting without
# removing them (it crashed, or a reply came after its timeout); `timeout_s` is at most
# 300 s, so no live request is this old.
FILE_STALE_S = 900.0
FILE_SWEEP_EVERY_S = 60.0


class ChannelUnavailable(Exception):
    """The channel's server (Redis) cannot be reached now."""


@contextmanager
def _reaching(url: str) -> Iterator[None]:
    try:
        yield
    except (redis.RedisError, OSError) as exc:
        host = url.split("@")[-1].split("://")[-1]  # no password in a message
        raise ChannelUnavailable(f"{type(exc).__name__} talking to {host}: {exc}") from exc


class ReplyChannel(ABC):
    # The gateway's side.
    @abstractmethod
    async def post(self, request_id: str, record: Record, ttl_s: float) -> None:
        """Leave a request for a worker; it expires after `ttl_s` seconds."""

    @abstractmethod
    async def wait(self, request_id: str, timeout_s: float) -> Record | None:
        """The first reply to the request, or None after `timeout_s` seconds."""

    @abstractmethod
    async def forget(self, request_id: str) -> None:
        """Remove the request and any reply: it has been answered, or given up."""

    async def aclose(self) -> None:
        return None

    # The worker's side.
    @abstractmethod
    def fetch(self, request_id: str) -> Record | None:
        """The request, or None when it is gone (answered, given up or expired)."""

    @abstractmethod
    def answer(self, request_id: str, reply: Record, ttl_s: float) -> None:
        """Hand the reply to the waiting gateway; unread, it expires after `ttl_s` seconds."""


def _seconds(ttl_s: float) -> int:
    return max(1, math.ceil(ttl_s))


class RedisReplies(ReplyChannel):
    """A request is a string key (SET with EX); the reply a list the worker RPUSHes and the
    gateway BLPOPs, so the gateway is woken by the reply itself, without polling."""

    def __init__(self, url: str, prefix: str = "") -> None:
        self.url = url
        self.prefix = prefix
        self._async: aioredis.Redis | None = None
        self._sync: redis.Redis | None = None

    def _key(self, request_id: str, kind: str) -> str:
        return f"{self.prefix}stillhouse:predict:{request_id}:{kind}"

    @property
    def _aclient(self) -> aioredis.Redis:
        if self._async is None:  # made on first use, inside the gateway's event loop
            self._async = aioredis.Redis.from_url(self.url)
        return self._async

    @property
    def _client(self) -> redis.Redis:
        if self._sync is None:
            self._sync = redis.Redis.from_url(self.url)
        return self._sync

    async def post(self, request_id: str, record: Record, ttl_s: float) -> None:
        with _reaching(self.url):
            await self._aclient.set(
                self._key(request_id, "request"), json.dumps(record), ex=_seconds(ttl_s)
            )

    async def wait(self, request_id: str, timeout_s: float) -> Record | None:
        # BLPOP takes a fractional timeout (Redis >= 6); 0 would mean "forever".
        with _reaching(self.url):
            found = await self._aclient.blpop(
                [self._key(request_id, "reply")], timeout=max(timeout_s, 0.01)
            )
        if found is None:
            return None
        reply: Record = json.loads(found[1])
        return reply

    async def forget(self, request_id: str) -> None:
        with _reaching(self.url):
            await self._aclient.delete(
                self._key(request_id, "request"), self._key(request_id, "reply")
            )

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async.aclose()
            self._async = None

    def fetch(self, request_id: str) -> Record | None:
        raw = self._client.get(self._key(request_id, "request"))
        if raw is None:
            return None
        record: Record = json.loads(raw)
        return record

    def answer(self, request_id: str, reply: Record, ttl_s: float) -> None:
        key = self._key(request_id, "reply")
        with self._client.pipeline(transaction=True) as pipe:
            pipe.rpush(key, json.dumps(reply))
            pipe.expire(key, _seconds(ttl_s))
            pipe.execute()


class FileReplies(ReplyChannel):
    """One file per request and per reply in a folder both processes see, each written
    aside and moved into place (os.replace), so a reader never sees half a file. The
    gateway polls for the reply every few milliseconds."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._swept = -math.inf

    def _path(self, request_id: str, kind: str) -> Path:
        return self.folder / f"{request_id}.{kind}.json"

    def _write(self, path: Path, record: Record) -> None:
        aside = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
        aside.write_text(json.dumps(record))
        os.replace(aside, path)

    @staticmethod
    def _read(path: Path) -> Record | None:
        try:
            record: Record = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        return record

    async def post(self, request_id: str, record: Record, ttl_s: float) -> None:
        # The worker checks the record's own deadline; files left behind are swept.
        self._write(self._path(request_id, "request"), record)

    async def wait(self, request_id: str, timeout_s: float) -> Record | None:
        path = self._path(request_id, "reply")
        deadline = time.monotonic() + timeout_s
        while True:
            reply = self._read(path)
            if reply is not None:
                return reply
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            await asyncio.sleep(min(FILE_POLL_S, left))

    async def forget(self, request_id: str) -> None:
        for kind in ("request", "reply"):
            self._path(request_id, kind).unlink(missing_ok=True)

    def fetch(self, request_id: str) -> Record | None:
        return self._read(self._path(request_id, "request"))

    def answer(self, request_id: str, reply: Record, ttl_s: float) -> None:
        # A gateway that gave up has removed the request: no reply file to leave behind.
        # (One that gives up between this check and the write leaves one; the sweep takes it.)
        if self._path(request_id, "request").exists():
            self._write(self._path(request_id, "reply"), reply)
        self._sweep()

    def _sweep(self) -> None:
        """At most once a minute, remove the files of requests no one waits for any more."""
        now = time.time()
        if now - self._swept < FILE_SWEEP_EVERY_S:
            return
        self._swept = now
        for path in self.folder.iterdir():
            try:
                if now - path.stat().st_mtime > FILE_STALE_S:
                    path.unlink(missing_ok=True)
            except FileNotFoundError:
                continue


def reply_channel(settings: Settings) -> ReplyChannel:
    """The channel that goes with the configured broker."""
    url = settings.resolved_broker_url
    if url.startswith(("redis://", "rediss://")):
        return RedisReplies(url, settings.broker_prefix)
    if url.startswith("filesystem"):
        return FileReplies(settings.broker_folder / "replies")
    scheme = url.split("://", 1)[0]
    raise ValueError(
        f"Synchronous predicts need a redis:// or filesystem:// broker, not {scheme}://; "
        "set STILLHOUSE_BROKER_URL to a Redis URL."
    )
