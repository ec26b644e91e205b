"""core.resp, the gateway's multiplexed Redis connection: its RESP parser on every split
of a reply, and many concurrent calls on the real Redis each getting their own answer."""

from __future__ import annotations

import asyncio

import pytest
import redis

from core.resp import MuxConnection, ReplyError, encode, parse
from tests.conftest import REDIS_URL

REPLIES = [
    (b"+OK\r\n", b"OK"),
    (b":42\r\n", 42),
    (b"$-1\r\n", None),
    (b"$0\r\n\r\n", b""),
    (b"$5\r\nhe\r\no\r\n", b"he\r\no"),  # a bulk string may hold CRLF
    (b"*3\r\n$1\r\na\r\n$-1\r\n:7\r\n", [b"a", None, 7]),
    (b"*2\r\n*1\r\n+x\r\n*0\r\n", [[b"x"], []]),
]


@pytest.mark.parametrize(("raw", "value"), REPLIES)
def test_parse_every_reply_and_wait_on_every_prefix(raw: bytes, value: object) -> None:
    assert parse(raw + b"+next\r\n", 0) == (value, len(raw))
    for cut in range(len(raw)):
        assert parse(raw[:cut], 0) is None, raw[:cut]


def test_an_error_reply_is_an_exception_value() -> None:
    found = parse(b"-WRONGTYPE not a hash\r\n", 0)
    assert found is not None and isinstance(found[0], ReplyError)
    assert str(found[0]) == "WRONGTYPE not a hash"


def test_encode_is_a_resp_array_of_bulk_strings() -> None:
    assert encode("HMGET", b"k", 3) == b"*3\r\n$5\r\nHMGET\r\n$1\r\nk\r\n$1\r\n3\r\n"


def test_concurrent_calls_each_get_their_own_reply(redis_prefix: str) -> None:
    plain = redis.Redis.from_url(REDIS_URL)
    keys = [f"{redis_prefix}resp:{n}" for n in range(300)]
    for n, key in enumerate(keys):
        plain.hset(key, mapping={"n": n, "sq": n * n})

    async def run() -> None:
        mux = MuxConnection(REDIS_URL)
        replies = await asyncio.gather(*(mux.call("HMGET", k, "sq", "n", "none") for k in keys))
        assert replies == [[str(n * n).encode(), str(n).encode(), None] for n in range(300)]
        with pytest.raises(ReplyError):  # a hash command on a string
            plain.set(keys[0] + ":s", "x")
            await mux.call("HGET", keys[0] + ":s", "f")
        assert await mux.call("HMGET", keys[1], "n") == [b"1"]  # still in step after it
        mux.close()  # the next call connects again
        assert await mux.call("HMGET", keys[2], "n") == [b"2"]
        mux.close()

    try:
        asyncio.run(run())
    finally:
        plain.delete(*keys, keys[0] + ":s")
        plain.close()


def test_a_url_naming_a_database_selects_it(redis_prefix: str) -> None:
    url = REDIS_URL.rsplit("/", 1)[0] + "/1"
    other = redis.Redis.from_url(url)
    key = f"{redis_prefix}resp:db1"
    other.set(key, "in db 1")

    async def run() -> object:
        mux = MuxConnection(url)
        try:
            return await mux.call("GET", key)
        finally:
            mux.close()

    try:
        assert asyncio.run(run()) == b"in db 1"
    finally:
        other.delete(key)
        other.close()


def test_a_refused_connection_raises_an_oserror() -> None:
    async def run() -> None:
        await MuxConnection("redis://127.0.0.1:1/0").call("PING")

    with pytest.raises(OSError):
        asyncio.run(run())
