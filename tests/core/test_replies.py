"""Both reply channels, each side as its process uses it: the gateway's async calls,
the worker's sync ones. Redis is the shared test server under a prefix of this
test's own; the file channel a temporary folder."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from core.config import Settings
from core.replies import ChannelUnavailable, FileReplies, RedisReplies, ReplyChannel, reply_channel
from tests.conftest import REDIS_URL

RECORD = {"inputs": [[0.5, 1.0]], "deadline": 1.0e12, "model_id": "m"}
REPLY = {"outputs": [[0.25]], "predictions": None, "worker_id": "w"}


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    return f"{redis_prefix}replies-{uuid.uuid4().hex[:6]}:"


@pytest.fixture(params=["redis", "file"])
def channel(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReplyChannel]:
    if request.param == "redis":
        yield RedisReplies(REDIS_URL, request.getfixturevalue("prefix"))
    else:
        yield FileReplies(tmp_path / "replies")


def test_a_request_and_its_reply_make_the_round_trip(channel: ReplyChannel) -> None:
    async def gateway() -> dict | None:
        await channel.post("r1", RECORD, ttl_s=30)
        # The gateway waits first; the worker's side runs in a thread, as in its own process.
        waiting = asyncio.create_task(channel.wait("r1", timeout_s=5))
        assert await asyncio.to_thread(channel.fetch, "r1") == RECORD
        await asyncio.to_thread(channel.answer, "r1", REPLY, 30)
        reply = await waiting
        await channel.forget("r1")
        await channel.aclose()
        return reply

    assert asyncio.run(gateway()) == REPLY
    assert channel.fetch("r1") is None  # forgotten: a late delivery finds nothing to run


def test_the_first_reply_is_taken_and_a_missing_one_times_out(channel: ReplyChannel) -> None:
    async def gateway() -> tuple[dict | None, dict | None]:
        await channel.post("r2", RECORD, ttl_s=30)
        channel.answer("r2", {**REPLY, "worker_id": "first"}, ttl_s=30)
        first = await channel.wait("r2", timeout_s=5)
        await channel.post("r3", RECORD, ttl_s=30)
        nothing = await channel.wait("r3", timeout_s=0.2)
        for request_id in ("r2", "r3"):
            await channel.forget(request_id)
        await channel.aclose()
        return first, nothing

    first, nothing = asyncio.run(gateway())
    assert first is not None and first["worker_id"] == "first"
    assert nothing is None


def test_redis_keys_sit_under_the_prefix_and_expire(prefix: str) -> None:
    channel = RedisReplies(REDIS_URL, prefix)
    client = redis.Redis.from_url(REDIS_URL)

    async def post() -> None:
        await channel.post("r4", RECORD, ttl_s=12.5)
        await channel.aclose()

    asyncio.run(post())
    channel.answer("r4", REPLY, ttl_s=7)
    request_key = f"{prefix}stillhouse:predict:r4:request"
    reply_key = f"{prefix}stillhouse:predict:r4:reply"
    assert sorted(k.decode() for k in client.scan_iter(f"{prefix}*")) == [reply_key, request_key]
    assert 0 < client.ttl(request_key) <= 13 and 0 < client.ttl(reply_key) <= 7


def test_a_reply_to_a_forgotten_file_request_leaves_no_file(tmp_path: Path) -> None:
    channel = FileReplies(tmp_path / "replies")
    asyncio.run(channel.post("r5", RECORD, ttl_s=30))
    asyncio.run(channel.forget("r5"))  # the gateway gave up
    channel.answer("r5", REPLY, ttl_s=30)  # the worker answers late
    assert list((tmp_path / "replies").iterdir()) == []


def test_an_unreachable_redis_is_reported_as_such() -> None:
    channel = RedisReplies("redis://127.0.0.1:1/0")
    with pytest.raises(ChannelUnavailable, match="127.0.0.1:1"):
        asyncio.run(channel.post("r6", RECORD, ttl_s=5))


def test_the_channel_follows_the_broker(tmp_path: Path) -> None:
    assert isinstance(reply_channel(Settings(data_dir=tmp_path)), FileReplies)
    assert isinstance(reply_channel(Settings(broker_url=REDIS_URL)), RedisReplies)
    with pytest.raises(ValueError, match="redis:// or filesystem://"):
        reply_channel(Settings(broker_url="amqp://guest@localhost//"))
