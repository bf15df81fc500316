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
    keys = list(client.scan_iter(match=f"{name}*"))  # also tests' {name}<suffix> prefixes
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


def test_one_call_for_a_batch_leaves_the_same_state_as_one_call_per_event(
    stack: Stack,
    prefix: str,
    make_activity: Callable[..., Activity],
) -> None:
    """The script adds up a call's leaderboard, counter, window, profile and first/last
    seen writes and makes them at its end; that must not change any outcome."""
    kinds: list[dict[str, Any]] = [
        {"type": "chat.message", "channel": "general"},
        {"type": "chat.message", "channel": "help"},
        {"type": "github.pr_merged", "source": "github", "channel": ...},
        {
            "type": "forum.post",
            "source": "discourse",
            "channel": ...,
            "attributes": {"thread_id": 7},
        },
        {
            "type": "forum.reply",
            "source": "discourse",
            "channel": ...,
            "attributes": {"thread_id": 7},
        },
        {
            "type": "feedback.submitted",
            "source": "survey",
            "channel": ...,
            "attributes": {"rating": 4},
        },
    ]
    batch = [
        make_activity(
            event_id=f"e{i}",
            member_id=("ann", "bob", "cy")[i % 3 if i % 4 else 0],
            # Out of order in time, across several days, weeks and windows.
            occurred_at=f"2026-11-{19 + (i * 7) % 6:02d}T{(i * 5) % 24:02d}:{i % 60:02d}:00Z",
            **kinds[i % len(kinds)],
        )
        for i in range(60)
    ]
    earlier = [batch[3], batch[10]]  # seen before the batch: duplicates inside it
    batched_prefix = f"{prefix}b"
    one_by_one = f"{prefix}s"
    apply(stack, batched_prefix, earlier)
    apply(stack, one_by_one, earlier)

    batched_flags = apply(stack, batched_prefix, batch)
    single_flags = [apply(stack, one_by_one, [activity])[0][0] for activity in batch]

    assert batched_flags == [single_flags]
    assert single_flags.count(0) == 2
    assert single_flags.count(1) == 58

    def renamed(state: dict[str, Any], name: str) -> dict[str, Any]:
        out = {key.replace(name, "P"): value for key, value in state.items()}
        # Segment change ids hash the key prefix in; compare the changes themselves.
        out["P:{pycon-us}:segchanges"] = sorted(out["P:{pycon-us}:segchanges"].values())
        out["P:{pycon-us}:segchanges:outbox"] = sorted(
            at for _, at in out["P:{pycon-us}:segchanges:outbox"]
        )
        return out

    batched = renamed(snapshot(stack, batched_prefix), batched_prefix)
    single = renamed(snapshot(stack, one_by_one), one_by_one)
    assert batched == single
    assert batched["P:{pycon-us}:member:ann"]["first_seen"] == str(
        min(int(a.occurred_at * 1000) for a in batch if a.member_id == "ann")
    )
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    thread = f"{batched_prefix}:{{pycon-us}}:thread:forum:7"
    for key in client.scan_iter(match=f"{batched_prefix}:*"):
        # Dedupe markers and moderation windows expire relative to the call's own time.
        if ":seen:" not in key and ":mod:" not in key and key != thread:
            assert client.expiretime(key) == client.expiretime(
                key.replace(batched_prefix, one_by_one)
            ), key
    # A thread key lives 30 days past the latest of its events in the call; one event
    # per call, the last one applied sets it (here an earlier one: out of order).
    latest = max(a.occurred_at for a in batch if "thread_id" in (a.attributes or {}))
    assert client.expiretime(thread) == int(latest) + Retention().thread_seconds
