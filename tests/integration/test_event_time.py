"""Results depend on the input alone: the same history processed at two wall-clock
times 60 days apart, in differently cut batches, gives the same messages."""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from streams.activity import Activity, parse_activity
from streams.simulation import generate
from tests.conftest import activity_dict
from tests.integration.conftest import Stack
from tests.integration.engine import Engine

DAY = 86400.0
NOW = 1_800_000_000.0
PARTITIONS = 4


@pytest.fixture
def prefixes(stack: Stack) -> Iterator[tuple[str, str]]:
    names = (f"ite-{uuid.uuid4().hex[:8]}", f"ite-{uuid.uuid4().hex[:8]}")
    yield names
    client = redis.Redis.from_url(stack.redis_url)
    for name in names:
        keys = list(client.scan_iter(match=f"{name}:*"))
        if keys:
            client.delete(*keys)


def history() -> list[Activity]:
    """45 days of three communities, plus a chat flood and a cross-post burst."""
    events = list(
        generate(6000, now=NOW, seed=5, span_seconds=45 * 86400, members=60, id_prefix="h")
    )
    t = NOW - 10 * DAY
    events += [
        activity_dict(event_id=f"flood-{i}", member_id="spammer", channel="general",
                      occurred_at=_at(t + i))
        for i in range(14)
    ]  # fmt: skip
    events += [
        activity_dict(event_id=f"xp-{i}", member_id="adman", channel=f"c{i}",
                      occurred_at=_at(t + 30 * i), attributes={"content_hash": "same"})
        for i in range(4)
    ]  # fmt: skip
    events.sort(key=lambda e: str(e["occurred_at"]))
    return [parse_activity(e, now=NOW, max_future_skew=300) for e in events]


def _at(ts: float) -> str:
    from streams.periods import format_instant

    return format_instant(ts)


def run(stack: Stack, prefix: str, clock: float, batch: int) -> dict[str, list[Any]]:
    """Process the history at wall time ``clock`` in batches of ``batch`` records per
    partition (members keyed to partitions), then sweep; every message published."""
    engine = Engine(stack.redis_url, prefix, clock, partitions=PARTITIONS)
    try:
        by_partition: dict[int, list[Activity]] = {p: [] for p in range(PARTITIONS)}
        for activity in history():
            by_partition[zlib.crc32(activity.member_id.encode()) % PARTITIONS].append(activity)
        for start in range(0, max(len(v) for v in by_partition.values()), batch):
            records = []
            for partition, activities in by_partition.items():
                records += engine.records(activities[start : start + batch], partition)
            engine.process(records)
        engine.sweep(clock)
        return {name: sink.messages for name, sink in engine.sinks.items()}
    finally:
        engine.close()


def test_a_replay_60_days_later_gives_the_same_messages(
    stack: Stack, prefixes: tuple[str, str]
) -> None:
    live = run(stack, prefixes[0], NOW, batch=500)
    later = run(stack, prefixes[1], NOW + 60 * DAY, batch=37)
    for kind in ("awards", "flags", "segments"):
        assert live[kind], f"no {kind} at stake"
    for kind in ("awards", "flags", "segments"):
        assert sorted(map(repr, later[kind])) == sorted(map(repr, live[kind])), kind
    print({k: len(v) for k, v in live.items()})
