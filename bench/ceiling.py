"""S0: the physical limits on this machine, with nothing of community-pulse in the way.

- ``consume``: a bare aiokafka consumer (manual assignment of all partitions, no group)
  reading the pre-loaded topic and decoding every value with orjson, nothing else.
- ``redis_raw``: the same Redis increments our pipeline makes for those events (period
  and channel leaderboards, window buckets, member hash, active days, counts, dedupe
  marker), as plain commands pre-encoded in RESP before the clock starts and written
  over one socket in deep pipelines. No Lua, no client library in the timed part.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import hiredis
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.stack import PARTITIONS, BenchError, Stack, redis_cpu
from bench.workload import Workload
from streams.keys import KeyLayout
from streams.periods import PERIODS, period_bucket
from streams.scoring import DEFAULT_POINTS
from streams.windows import GRANULARITIES

CHANNEL_PERIODS = ("week", "all")


async def _consume(stack: Stack, topic: str, expected: int, max_records: int) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        # The harness created the topic, so its partitions are known.
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        launched = time.monotonic()
        count = 0
        first_at = 0.0
        byte_count = 0
        loads = orjson.loads
        deadline = launched + 300
        while count < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=max_records)
            for records in batches.values():
                for record in records:
                    loads(record.value)
                    byte_count += len(record.value or b"")
                count += len(records)
            if count and not first_at:
                first_at = time.monotonic()
            if time.monotonic() > deadline:
                raise BenchError(f"S0 consume: only {count}/{expected} records in 300 s")
        done = time.monotonic()
    finally:
        await consumer.stop()
    return {
        "events": count,
        # From the first fetch request on: one fetch round trip is part of consuming.
        "events_per_s": round(count / (done - launched), 1),
        "mb_per_s": round(byte_count / (done - launched) / 1e6, 2),
        "first_to_last_s": round(done - first_at, 3),
        "launch_to_last_s": round(done - launched, 3),
        "max_records": max_records,
    }


def consume(stack: Stack, topic: str, expected: int, max_records: int = 10_000) -> dict[str, Any]:
    return asyncio.run(_consume(stack, topic, expected, max_records))


def _increments(prefix: str, event: dict[str, Any], ts: float) -> list[tuple[bytes, ...]]:
    """The plain-command equivalent of one event's effects (see README, key layout)."""
    layout = KeyLayout(prefix, event["community"])
    member = event["member_id"]
    earned = DEFAULT_POINTS[event["type"]]
    channel = event.get("channel")
    cmds: list[tuple[Any, ...]] = [
        ("SET", layout.seen(event["event_id"]), "1", "NX", "EX", 604800),
        ("HINCRBY", layout.counts(), event["type"], 1),
    ]
    for period in PERIODS:
        label = period_bucket(period, ts).label
        cmds.append(("ZINCRBY", layout.leaderboard(period, label), -earned, member))
        if channel is not None and period in CHANNEL_PERIODS:
            cmds.append(("ZINCRBY", layout.leaderboard(period, label, channel), -earned, member))
    for name, granularity in GRANULARITIES.items():
        cmds.append(("HINCRBY", layout.window(name, int(ts // granularity)), member, earned))
    key = layout.member(member)
    cmds += [
        ("HINCRBY", key, "points", earned),
        ("HINCRBY", key, "events", 1),
        ("HINCRBY", key, f"type:{event['type']}", 1),
        ("HSETNX", key, "first_seen", int(ts * 1000)),
        ("HSET", key, "last_seen", int(ts * 1000)),
        ("SADD", layout.member_days(member), period_bucket("day", ts).label),
    ]
    return [tuple(str(a).encode() for a in cmd) for cmd in cmds]


def _resp(cmd: tuple[bytes, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(cmd)]
    for arg in cmd:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def redis_raw(
    stack: Stack, workload: Workload, prefix: str, chunk_events: int = 2000
) -> dict[str, Any]:
    from streams.activity import parse_timestamp

    chunks: list[tuple[bytes, int]] = []
    buf: list[bytes] = []
    ncmds = 0
    total_cmds = 0
    for i, (_, value) in enumerate(workload.messages, 1):
        event = orjson.loads(value)
        for cmd in _increments(prefix, event, parse_timestamp(event["occurred_at"])):
            buf.append(_resp(cmd))
            ncmds += 1
        if i % chunk_events == 0:
            chunks.append((b"".join(buf), ncmds))
            total_cmds += ncmds
            buf, ncmds = [], 0
    if buf:
        chunks.append((b"".join(buf), ncmds))
        total_cmds += ncmds
    parts = urlsplit(stack.redis_url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379))
    reader = hiredis.Reader()

    def roundtrip(payload: bytes, replies: int) -> None:
        sock.sendall(payload)
        got = 0
        while got < replies:
            data = sock.recv(1 << 20)
            if not data:
                raise BenchError("S0 redis: connection closed")
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                if isinstance(reply, hiredis.ReplyError):
                    raise BenchError(f"S0 redis: {reply}")
                got += 1

    try:
        if parts.password:
            roundtrip(_resp((b"AUTH", parts.password.encode())), 1)
        cpu0 = redis_cpu(stack.redis())
        started = time.monotonic()
        for payload, replies in chunks:
            roundtrip(payload, replies)
        elapsed = time.monotonic() - started
        cpu = redis_cpu(stack.redis()) - cpu0
    finally:
        sock.close()
    n = len(workload.messages)
    return {
        "events": n,
        "commands": total_cmds,
        "commands_per_event": round(total_cmds / n, 2),
        "events_per_s": round(n / elapsed, 1),
        "commands_per_s": round(total_cmds / elapsed, 1),
        "redis_cpu_s": round(cpu, 2),
        "redis_cpu_us_per_event": round(cpu / n * 1e6, 1),
        "seconds": round(elapsed, 3),
    }
