"""S0: the physical limits on this machine, with nothing of community-pulse in the way.

- ``consume``: a bare aiokafka consumer (manual assignment of all partitions, no group)
  reading the pre-loaded topic and decoding every value with orjson, nothing else.
- ``redis_raw``: the Redis writes our pipeline makes for those events, added up per
  batch as the engine's writer does (``agents/writer.py``): per batch, one ``ZINCRBY``
  per (leaderboard, member), one ``HINCRBY`` per (counter or window key, field), one
  ``HSET`` per member of its profile fields and engine ``state``, ``SADD`` of active
  days, ``ZADD LT/GT`` of first/last seen and an ``EXPIREAT`` per expiring key. Plain
  commands, pre-encoded in RESP before the clock starts, each batch written over one
  socket as one pipeline. No Lua, no fence, no client library in the timed part.

  The ``state`` field is a fixed placeholder of ``STATE_BYTES``: a real member's state
  grows with its recent events (S5 reports their sizes), so this is a lower bound.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import defaultdict
from dataclasses import dataclass, field
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
from streams.windows import STORED

# The size of the placeholder written as each member's engine state.
STATE_BYTES = 200
# Expiry of time-bucketed keys: any time in the future costs Redis the same.
EXPIRE_SECONDS = 35 * 86400
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


@dataclass(slots=True)
class _Profile:
    """What a member's profile hash holds (running totals over the workload)."""

    points: int = 0
    events: int = 0
    first_seen: int = 0
    last_seen: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


def _batch_commands(
    prefix: str, events: list[tuple[dict[str, Any], float]], profiles: dict[str, _Profile]
) -> list[tuple[bytes, ...]]:
    """The plain commands of one batch of events, added up per key and field."""
    zincr: dict[tuple[str, str], int] = defaultdict(int)
    hincr: dict[tuple[str, str], int] = defaultdict(int)
    expiring: set[str] = set()
    touched: dict[str, tuple[KeyLayout, str]] = {}
    days: dict[str, set[int]] = defaultdict(set)
    for event, ts in events:
        layout = KeyLayout(prefix, event["community"])
        member, kind = event["member_id"], event["type"]
        earned = DEFAULT_POINTS[kind]
        channel = event.get("channel")
        day = int(ts // 86400)
        hincr[(layout.counts(), kind)] += 1
        hincr[(layout.counts_by_source(), f"{kind}|{event['source']}")] += 1
        hincr[(layout.events_by_day(), str(day))] += 1
        for period in PERIODS:
            label = period_bucket(period, ts).label
            boards = [layout.leaderboard(period, label)]
            if channel is not None and period in CHANNEL_PERIODS:
                boards.append(layout.leaderboard(period, label, channel))
            for key in boards:
                zincr[(key, member)] -= earned
                if period != "all":
                    expiring.add(key)
        for name, granularity in STORED.items():
            key = layout.window(name, int(ts // granularity))
            hincr[(key, member)] += earned
            expiring.add(key)
        key = layout.member(member)
        touched[key] = (layout, member)
        profile = profiles.setdefault(key, _Profile())
        at = int(ts * 1000)
        profile.points += earned
        profile.events += 1
        profile.by_type[kind] = profile.by_type.get(kind, 0) + 1
        profile.first_seen = min(profile.first_seen or at, at)
        profile.last_seen = max(profile.last_seen, at)
        days[key].add(day)
    cmds: list[tuple[Any, ...]] = [("ZINCRBY", k, v, m) for (k, m), v in zincr.items()]
    cmds += [("HINCRBY", k, f, v) for (k, f), v in hincr.items()]
    state = "x" * STATE_BYTES
    firsts: dict[str, list[Any]] = defaultdict(list)
    lasts: dict[str, list[Any]] = defaultdict(list)
    for key, (layout, member) in touched.items():
        p = profiles[key]
        types = [x for kind, n in p.by_type.items() for x in (f"type:{kind}", n)]
        cmds.append(
            ("HSET", key, "state", state, "points", p.points, "events", p.events)
            + ("first_seen", p.first_seen, "last_seen", p.last_seen, "segment", "beginner")
            + tuple(types)
        )
        cmds.append(("SADD", layout.member_days(member), *sorted(days[key])))
        firsts[layout.members_first_seen()] += [p.first_seen, member]
        lasts[layout.members_last_seen()] += [p.last_seen, member]
    for index, flag in ((firsts, "LT"), (lasts, "GT")):
        cmds += [("ZADD", key, flag, *pairs) for key, pairs in index.items()]
    expire_at = int(time.time()) + EXPIRE_SECONDS
    cmds += [("EXPIREAT", key, expire_at) for key in expiring]
    return [tuple(str(a).encode() for a in cmd) for cmd in cmds]


def _resp(cmd: tuple[bytes, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(cmd)]
    for arg in cmd:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def redis_raw(stack: Stack, workload: Workload, prefix: str, batch: int = 500) -> dict[str, Any]:
    """Write the workload's effects as plain commands, ``batch`` events per pipeline
    (the worker's default batch size)."""
    from streams.activity import parse_timestamp

    chunks: list[tuple[bytes, int]] = []
    profiles: dict[str, _Profile] = {}
    decoded = [orjson.loads(value) for _, value in workload.messages]
    for start in range(0, len(decoded), batch):
        events = [(e, parse_timestamp(e["occurred_at"])) for e in decoded[start : start + batch]]
        cmds = _batch_commands(prefix, events, profiles)
        chunks.append((b"".join(_resp(cmd) for cmd in cmds), len(cmds)))
    total_cmds = sum(n for _, n in chunks)
    del decoded, profiles
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
        "redis_commands_per_event": round(total_cmds / n, 2),
        "batch": batch,
        "state_bytes": STATE_BYTES,
        "events_per_s": round(n / elapsed, 1),
        "commands_per_s": round(total_cmds / elapsed, 1),
        "redis_cpu_s": round(cpu, 2),
        "redis_cpu_us_per_event": round(cpu / n * 1e6, 1),
        "seconds": round(elapsed, 3),
    }
