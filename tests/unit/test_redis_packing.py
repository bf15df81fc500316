"""The worker's asyncio Redis client packs commands with hiredis; the bytes on the wire
must be exactly what redis-py's own packer sends."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection

from agents.store import connect_async

COMMANDS: list[tuple[Any, ...]] = [
    ("EVALSHA", "0" * 40, 1, "pulse:{c}:offsets", b'[["t|0","1","5","9"]]', b"\x00\xff"),
    ("CONFIG GET", "maxmemory"),
    (b"CLIENT SETNAME", "w-1"),
    ("HSET", "pulse:{c}:m:\u05e9\u05dc\u05d5\u05dd", "type:chat.message", 12, "\u202e<script>"),
    ("ZINCRBY", "k", -3, "member"),
    ("ZADD", "k", 1.5, "m"),  # a float: redis-py's packer
    ("SET", "k", b"x" * 70_000),  # past redis-py's buffer cutoff
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: str(a[0]))
def test_packed_bytes_equal_redis_pys(args: tuple[Any, ...]) -> None:
    client = connect_async("redis://127.0.0.1:1/0")
    ours = client.connection_pool.connection_class()
    assert type(ours).__name__ == "HiredisConnection"
    assert b"".join(ours.pack_command(*args)) == b"".join(Connection().pack_command(*args))


def test_arguments_redis_py_refuses_are_still_refused() -> None:
    ours = connect_async("redis://127.0.0.1:1/0").connection_pool.connection_class()
    with pytest.raises(redis.exceptions.DataError):
        ours.pack_command("SET", "k", True)


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("rediss://127.0.0.1:1/0", SSLConnection),
        ("unix:///tmp/no.sock", UnixDomainSocketConnection),
    ],
)
def test_tls_and_unix_socket_connections_keep_their_class(url: str, base: type) -> None:
    cls = connect_async(url).connection_pool.connection_class
    assert issubclass(cls, base)
