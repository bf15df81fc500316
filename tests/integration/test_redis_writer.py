"""The engine's fenced batch writer on the real Redis: idempotent, fenced, slot-safe."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from agents.writer import WRITE_LUA, Fenced
from streams.activity import Activity
from streams.policy import Retention
from tests.conftest import NOON
from tests.integration.conftest import Stack
from tests.integration.engine import Engine


@pytest.fixture
def prefix(stack: Stack) -> Iterator[str]:
    name = f"itw-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(stack.redis_url)
    keys = list(client.scan_iter(match=f"{name}*"))  # also tests' {name}<suffix> prefixes
    if keys:
        client.delete(*keys)


@pytest.fixture
def engines(stack: Stack) -> Iterator[Callable[..., Engine]]:
    made: list[Engine] = []

    def make(prefix: str, now: float = NOON, **env: str) -> Engine:
        engine = Engine(stack.redis_url, prefix, now, env=env)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


def snapshot(stack: Stack, prefix: str) -> dict[str, Any]:
    """Every key under ``prefix`` with its type and full value (not the fences: owner
    epochs and recorded offsets)."""
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    state: dict[str, Any] = {}
    for key in client.scan_iter(match=f"{prefix}:*"):
        if key.endswith(":offsets") or ":epoch:" in key:
            continue
        kind = client.type(key)
        if kind == "zset":
            state[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == "hash":
            state[key] = client.hgetall(key)
        elif kind == "set":
            state[key] = sorted(client.smembers(key))
        elif kind == "list":
            state[key] = client.lrange(key, 0, -1)
        else:
            state[key] = client.get(key)
    return state


def test_redelivered_records_and_resent_events_change_nothing(
    stack: Stack,
    prefix: str,
    engines: Callable[..., Engine],
    make_activity: Callable[..., Activity],
) -> None:
    engine = engines(prefix)
    batch = [
        make_activity(event_id=f"e{i}", member_id=f"m{i % 3}", community=("a", "b")[i % 2])
        for i in range(20)
    ]
    records = engine.records(batch)
    first = engine.process(records)
    assert first.codes == [1] * 20
    state = snapshot(stack, prefix)
    assert state
    # The same records again (redelivered after a lost commit): skipped by offset.
    assert engine.process(records).codes == []
    assert snapshot(stack, prefix) == state
    # A worker that starts afresh skips them too: the offsets are recorded in Redis.
    fresh = engines(prefix)
    assert fresh.process(records).codes == []
    # The same events in new records (a producer retry, a re-import): dropped by id.
    fresh.offsets = list(engine.offsets)
    assert fresh.feed(batch).codes == [0] * 20
    assert snapshot(stack, prefix) == state


def test_a_batch_mixing_new_and_seen_events_applies_only_the_new(
    stack: Stack,
    prefix: str,
    engines: Callable[..., Engine],
    make_activity: Callable[..., Activity],
) -> None:
    engine = engines(prefix)
    engine.feed([make_activity(event_id="old")])
    codes = engine.feed([make_activity(event_id="old"), make_activity(event_id="new")]).codes
    assert codes == [0, 1]
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    assert client.hget(f"{prefix}:{{pycon-us}}:member:alice", "points") == "2"
    assert client.zscore(f"{prefix}:{{pycon-us}}:lb:all:all", "alice") == -2


def test_keys_expire_at_the_planned_time(
    stack: Stack,
    prefix: str,
    engines: Callable[..., Engine],
    make_activity: Callable[..., Activity],
) -> None:
    import time

    engines(prefix, now=time.time()).feed([make_activity(occurred_at="2026-11-25T11:59:00Z")])
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    day_key = f"{prefix}:{{pycon-us}}:lb:day:2026-11-25"
    expected = 1795651200 + Retention().day_seconds  # end of the day + retention
    assert client.expiretime(day_key) == expected
    assert client.ttl(f"{prefix}:{{pycon-us}}:lb:all:all") == -1


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
    engines: Callable[..., Engine],
    make_activity: Callable[..., Activity],
) -> None:
    engine = engines(prefix)
    engine.feed([make_activity(event_id="v", member_id="victim", community="b")])
    victim_state = snapshot(stack, f"{prefix}:{{b}}")
    batch = [
        make_activity(event_id=f"h{i}", member_id=m, community="a", channel=m)
        for i, m in enumerate(HOSTILE_MEMBERS)
    ]
    assert engine.feed(batch).codes == [1] * len(HOSTILE_MEMBERS)
    assert snapshot(stack, f"{prefix}:{{b}}") == victim_state
    written = snapshot(stack, prefix).keys() - victim_state.keys() - {f"{prefix}:communities"}
    assert all(key.startswith(f"{prefix}:{{a}}:") for key in written)
    assert all(key.count("{") == 1 and key.count("}") == 1 for key in written)


def test_a_worker_starting_afresh_reads_hostile_members_dedupe_memory(
    stack: Stack,
    prefix: str,
    engines: Callable[..., Engine],
    make_activity: Callable[..., Activity],
) -> None:
    # The load reads a member's event ids by names it builds from the profile key.
    def events(tag: str) -> list[Activity]:
        return [
            make_activity(event_id=f"{tag}{i}", member_id=m, community="a")
            for i, m in enumerate(HOSTILE_MEMBERS)
        ]

    engine = engines(prefix)
    batch = events("h")
    assert engine.feed(batch).codes == [1] * len(HOSTILE_MEMBERS)
    state = snapshot(stack, prefix)
    fresh = engines(prefix)
    fresh.offsets = list(engine.offsets)
    # The same events in new records: every member's state and memory is read back.
    assert fresh.feed(batch).codes == [0] * len(HOSTILE_MEMBERS)
    assert snapshot(stack, prefix) == state
    more = events("n")
    assert fresh.feed(more).codes == [1] * len(HOSTILE_MEMBERS)


def test_one_write_for_a_batch_leaves_the_same_state_as_one_write_per_event(
    stack: Stack,
    prefix: str,
    engines: Callable[..., Engine],
    make_activity: Callable[..., Activity],
) -> None:
    """A batch's leaderboard, counter, window, profile and first/last seen writes are
    added up and made once; that must not change any outcome."""
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
    batched_engine, single_engine = engines(batched_prefix), engines(one_by_one)
    batched_engine.feed(earlier)
    single_engine.feed(earlier)

    batched_codes = batched_engine.feed(batch).codes
    single_codes = [single_engine.feed([activity]).codes[0] for activity in batch]

    assert batched_codes == single_codes
    assert single_codes.count(0) == 2
    assert single_codes.count(1) == 58

    def renamed(state: dict[str, Any], name: str) -> dict[str, Any]:
        return {key.replace(name, "P"): value for key, value in state.items()}

    batched = renamed(snapshot(stack, batched_prefix), batched_prefix)
    single = renamed(snapshot(stack, one_by_one), one_by_one)
    assert batched == single
    assert batched["P:{pycon-us}:member:ann"]["first_seen"] == str(
        min(int(a.occurred_at * 1000) for a in batch if a.member_id == "ann")
    )
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    for key in client.scan_iter(match=f"{batched_prefix}:*"):
        if ":ids:" in key:
            continue  # a member's day of event ids lives a retention from its first write
        assert client.expiretime(key) == client.expiretime(
            key.replace(batched_prefix, one_by_one)
        ), key
    # A thread key lives 30 days past the event that opened it.
    thread = f"{batched_prefix}:{{pycon-us}}:thread:forum:7"
    opened = min(
        a.occurred_at for a in batch if a.type == "forum.post" and a.event_id not in ("e3", "e10")
    )
    assert client.expiretime(thread) >= int(opened) + Retention().thread_seconds


def test_keys_with_more_members_than_a_chunk_are_added_up_exactly(
    stack: Stack,
    prefix: str,
    engines: Callable[..., Engine],
    make_activity: Callable[..., Activity],
) -> None:
    """A key that several members of a batch move is read and written back in chunks of
    500 names (ZMSCORE + ZADD, HMGET + HSET), or set in chunks when the worker knows the
    scores (ZADD): every member's sum must come out exact, whether the key held the
    member before or not, and whether the worker knew its score or learnt it."""
    engine = engines(prefix)
    members = [f"m{i:04d}" for i in range(1200)]
    # Every other member already holds 15 points (a merged PR, no channel) in the same
    # minute; then all 1,200 send a chat message to one channel in one batch.
    engine.feed(
        [
            make_activity(
                event_id=f"a{i}",
                member_id=m,
                type="github.pr_merged",
                source="github",
                channel=None,
            )
            for i, m in enumerate(members)
            if i % 2 == 0
        ]
    )
    # A restart: the states are read back and the boards' scores are not known, so the
    # next batch adds up in Redis and learns the sums from the reply; the one after sets them.
    restarted = engines(prefix)
    restarted.offsets = list(engine.offsets)
    for tag in "bc":
        restarted.feed(
            [make_activity(event_id=f"{tag}{i}", member_id=m) for i, m in enumerate(members)]
        )
    expected = {m: 2 + (15 if i % 2 == 0 else 0) for i, m in enumerate(members)}
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    base = f"{prefix}:{{pycon-us}}"
    board = client.zrange(f"{base}:lb:all:all", 0, -1, withscores=True)
    assert {m: -int(s) for m, s in board} == expected
    channel = client.zrange(f"{base}:lb:ch:general:all:all", 0, -1, withscores=True)
    assert {m: -int(s) for m, s in channel} == dict.fromkeys(members, 2)
    minute = int(make_activity().occurred_at // 60)
    window = client.hgetall(f"{base}:win:min:{minute}")
    assert {m: int(v) for m, v in window.items()} == expected


def test_a_write_of_an_older_owner_is_refused_and_changes_nothing(
    stack: Stack,
    prefix: str,
    engines: Callable[..., Engine],
    make_activity: Callable[..., Activity],
) -> None:
    zombie = engines(prefix)
    zombie.feed([make_activity(event_id="a1", member_id="ann")])
    paused = zombie.prepare(zombie.records([make_activity(event_id="a2", member_id="ann")]))
    # The partitions move to a new owner (a rebalance while the zombie was paused): it
    # takes newer epochs and claims the community on its first batch.
    owner = engines(prefix)
    owner.offsets = list(zombie.offsets)
    owner.offsets[0] -= 1  # a2 was never committed: the new owner reads it again
    owner.feed([make_activity(event_id="a2", member_id="ann")])
    state = snapshot(stack, prefix)
    with pytest.raises(Fenced):
        zombie.run(zombie.processor.apply(paused))
    assert snapshot(stack, prefix) == state
    assert zombie.processor.cached_members == 0  # it dropped what it believed
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    assert client.hget(f"{prefix}:{{pycon-us}}:member:ann", "points") == "2"


def test_the_fence_reads_and_records_every_partition_of_a_batch(stack: Stack, prefix: str) -> None:
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    offsets, marker = f"{prefix}:{{c}}:offsets", f"{prefix}:{{c}}:marker"
    write = client.register_script(WRITE_LUA)

    def header(fences: list[list[str]]) -> str:
        return json.dumps([fences, {}, {}, [], [["INCR", marker]], [], []])

    # Two partitions of one batch: both recorded, each with its own offset.
    assert write([offsets], [header([["a|0", "1", "5", "100"], ["a|1", "1", "7", "200"]])]) == [
        "ok"
    ]
    assert client.hgetall(offsets) == {"a|0": "1 5 100", "a|1": "1 7 200"}
    # A newer owner took only the second partition: the whole write is refused.
    client.hset(offsets, "a|1", "2 7 200")
    reply = write([offsets], [header([["a|0", "1", "6", "100"], ["a|1", "1", "8", "200"]])])
    assert reply == ["fenced", "a|1", "2 7 200"]
    assert client.get(marker) == "1"
    assert client.hgetall(offsets) == {"a|0": "1 5 100", "a|1": "2 7 200"}
