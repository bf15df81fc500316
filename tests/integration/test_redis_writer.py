"""The Lua batch writer on the real Redis: idempotent, atomic per event, slot-safe."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from agents.store import BatchWriter, connect_async
from streams.activity import Activity
from streams.effects import Policy, Retention, plan_batch
from tests.conftest import NOON
from tests.integration.conftest import Stack


@pytest.fixture
def prefix(stack: Stack) -> Iterator[str]:
    name = f"itw-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(stack.redis_url)
    keys = list(client.scan_iter(match=f"{name}:*"))
    if keys:
        client.delete(*keys)


def snapshot(stack: Stack, prefix: str) -> dict[str, Any]:
    """Every key under ``prefix`` with its type and full value."""
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    state: dict[str, Any] = {}
    for key in client.scan_iter(match=f"{prefix}:*"):
        kind = client.type(key)
        if kind == "zset":
            state[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == "hash":
            state[key] = client.hgetall(key)
        elif kind == "set":
            state[key] = sorted(client.smembers(key))
        else:
            state[key] = client.get(key)
    return state


def apply(stack: Stack, prefix: str, activities: list[Activity], now: float = NOON) -> Any:
    async def run() -> Any:
        client = connect_async(stack.redis_url)
        try:
            writer = BatchWriter(client, prefix)
            policy = Policy(retention=Retention(dedupe_seconds=3600))
            plans = list(plan_batch(activities, prefix, policy, now).values())
            return [applied.flags for applied in await writer.apply(plans)]
        finally:
            await client.aclose()

    return asyncio.run(run())


def test_applying_the_same_batch_twice_changes_nothing(
    stack: Stack,
    prefix: str,
    make_activity: Callable[..., Activity],
) -> None:
    batch = [
        make_activity(event_id=f"e{i}", member_id=f"m{i % 3}", community=("a", "b")[i % 2])
        for i in range(20)
    ]
    first = apply(stack, prefix, batch)
    assert sorted(sum(first, [])) == [1] * 20
    state = snapshot(stack, prefix)
    assert state
    second = apply(stack, prefix, batch)
    assert sum(second, []) == [0] * 20
    assert snapshot(stack, prefix) == state


def test_a_batch_mixing_new_and_seen_events_applies_only_the_new(
    stack: Stack,
    prefix: str,
    make_activity: Callable[..., Activity],
) -> None:
    apply(stack, prefix, [make_activity(event_id="old")])
    flags = apply(stack, prefix, [make_activity(event_id="old"), make_activity(event_id="new")])
    assert flags == [[0, 1]]
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    assert client.hget(f"{prefix}:{{pycon-us}}:member:alice", "points") == "2"
    assert client.zscore(f"{prefix}:{{pycon-us}}:lb:all:all", "alice") == -2


def test_keys_expire_at_the_planned_time(
    stack: Stack,
    prefix: str,
    make_activity: Callable[..., Activity],
) -> None:
    import time

    now = time.time()
    apply(stack, prefix, [make_activity(occurred_at="2026-11-25T11:59:00Z")], now=now)
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    day_key = f"{prefix}:{{pycon-us}}:lb:day:2026-11-25"
    expected = 1795651200 + Retention().day_seconds  # end of the day + retention
    assert client.expiretime(day_key) == expected
    assert client.ttl(f"{prefix}:{{pycon-us}}:lb:all:all") == -1
    assert 0 < client.ttl(f"{prefix}:{{pycon-us}}:seen:evt-1") <= 3600


HOSTILE_MEMBERS = [
    "}:{b}:member:victim",
    "victim:days",
    "*",
    "ｖｉｃｔｉｍ",
    "x" * 128,
    "victim%3Adays",
    "{b}",
]


def test_hostile_ids_cannot_touch_another_members_or_communitys_keys(
    stack: Stack,
    prefix: str,
    make_activity: Callable[..., Activity],
) -> None:
    apply(stack, prefix, [make_activity(event_id="v", member_id="victim", community="b")])
    victim_state = snapshot(stack, f"{prefix}:{{b}}")
    batch = [
        make_activity(event_id=f"h{i}", member_id=m, community="a", channel=m)
        for i, m in enumerate(HOSTILE_MEMBERS)
    ]
    assert sum(apply(stack, prefix, batch), []) == [1] * len(HOSTILE_MEMBERS)
    assert snapshot(stack, f"{prefix}:{{b}}") == victim_state
    written = snapshot(stack, prefix).keys() - victim_state.keys()
    assert all(key.startswith(f"{prefix}:{{a}}:") for key in written)
    assert all(key.count("{") == 1 and key.count("}") == 1 for key in written)
