"""The gateway's key cache: concurrent reads whose key is not cached share one lookup, so an
entry that expires under 64 polls costs one query, not 64 queued for the pool."""

from __future__ import annotations

import asyncio

import pytest

from service.state import KeyCache


def test_concurrent_misses_share_one_lookup_and_its_failure() -> None:
    cache = KeyCache(ttl=5.0)
    calls: list[str] = []

    async def lookup() -> str | None:
        calls.append("query")
        await asyncio.sleep(0.05)
        return "tenant-1"

    async def failing() -> str | None:
        calls.append("query")
        await asyncio.sleep(0.01)
        raise ConnectionRefusedError("the database is away")

    async def run() -> None:
        found = await asyncio.gather(*(cache.shared("h", lookup) for _ in range(64)))
        assert found == ["tenant-1"] * 64 and calls == ["query"]
        assert await cache.shared("h", lookup) == "tenant-1"  # a later miss asks again
        assert len(calls) == 2
        outcomes = await asyncio.gather(
            *(cache.shared("h", failing) for _ in range(8)), return_exceptions=True
        )
        assert all(isinstance(o, ConnectionRefusedError) for o in outcomes)
        assert len(calls) == 3
        # A caller that goes away does not cancel the lookup the others wait for.
        first = asyncio.ensure_future(cache.shared("k", lookup))
        second = asyncio.ensure_future(cache.shared("k", lookup))
        await asyncio.sleep(0)
        first.cancel()
        assert await second == "tenant-1"
        with pytest.raises(asyncio.CancelledError):
            await first

    asyncio.run(run())
