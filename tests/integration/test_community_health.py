"""Segments, moderation, first response and the health figures on the real Redis
(through the worker's own processor and writer, with the clock injected)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from agents.store import Reader, connect
from streams.activity import Activity, parse_activity
from streams.effects import APPLIED, MODERATED
from tests.conftest import activity_dict
from tests.integration.conftest import Stack
from tests.integration.engine import Engine, Result

DAY = 86400.0
NOW = 1_800_000_000.0  # the injected clock: 2027-01-15T08:00:00Z


@pytest.fixture
def prefix(stack: Stack) -> Iterator[str]:
    name = f"ith-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(stack.redis_url)
    keys = list(client.scan_iter(match=f"{name}:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def engine(stack: Stack, prefix: str) -> Iterator[Engine]:
    made = Engine(stack.redis_url, prefix, NOW)
    yield made
    made.close()


def event(n: int, at: float, **fields: Any) -> Activity:
    from streams.periods import format_instant

    fields.setdefault("channel", None)
    return parse_activity(
        activity_dict(
            event_id=f"e{n}-{uuid.uuid4().hex[:6]}", occurred_at=format_instant(at), **fields
        ),
        now=max(at, NOW),
        max_future_skew=300,
    )


def apply(engine: Engine, batch: list[Activity], now: float = NOW) -> Result:
    engine.now = now
    return engine.feed(batch)


def records(stack: Stack, key: str) -> dict[str, Any]:
    import orjson

    raw = redis.Redis.from_url(stack.redis_url, decode_responses=True).hgetall(key)
    return {k: orjson.loads(v) for k, v in raw.items()}


def test_segments_upgrade_on_the_crossing_event_and_downgrade_after_the_grace(
    stack: Stack, prefix: str, engine: Engine
) -> None:
    base = f"{prefix}:{{pycon-us}}"
    # 6 forum posts (18 points) then a reply (2 more): 20 points crosses "intermediate".
    posts = [event(i, NOW - DAY + i, type="forum.post", member_id="ann") for i in range(6)]
    assert apply(engine, posts).changes == []
    crossing = event(99, NOW - DAY + 60, type="forum.reply", member_id="ann")
    second = apply(engine, [crossing])
    assert len(second.changes) == 1
    change = records(stack, f"{base}:segchanges")[second.changes[0]]
    assert (change["from"], change["to"], change["score"]) == ("beginner", "intermediate", 20)
    assert change["at_ms"] == int(crossing.occurred_at * 1000)
    reader = Reader(connect(stack.redis_url), prefix)
    view = reader.member("pycon-us", "ann", NOW)
    assert view is not None
    assert (view["segment"], view["segment_score_30d"], view["newcomer"]) == (
        "intermediate",
        20,
        True,
    )

    # The points age out 30 UTC days after their day; the grace (7 days) starts then.
    # The sweep judges by stream time: the newest event time, advanced by the wall
    # clock while the partition is idle (here from NOW on).
    stream_base = crossing.occurred_at - NOW
    due = (int(crossing.occurred_at // DAY) + 30 + 7) * DAY
    assert engine.sweep(NOW + 31 * DAY) == []
    assert engine.sweep(due - stream_base - 1) == []
    (down,) = engine.sweep(due - stream_base)
    assert (down["from"], down["to"], down["score_30d"]) == ("intermediate", "beginner", 0)
    # Dated at the end of the grace, whenever the sweep ran.
    from streams.periods import format_instant

    assert down["changed_at"] == format_instant(due)
    assert engine.sweep(due + DAY) == []
    assert reader.health("pycon-us", due + DAY)["segments"] == {
        "beginner": 1,
        "intermediate": 0,
        "advanced": 0,
    }


def test_a_score_that_recovers_within_the_grace_is_not_downgraded(
    stack: Stack, prefix: str, engine: Engine
) -> None:
    old = [event(i, NOW - 33 * DAY + i, type="github.pr_merged", member_id="bo") for i in range(2)]
    assert len(apply(engine, old, now=NOW - 33 * DAY).changes) == 1  # 30 points
    # The score fell to 0 about three days ago: the grace runs; events now restore it.
    back = [
        event(7, NOW, type="github.pr_merged", member_id="bo"),
        event(8, NOW, type="event.volunteer_shift", member_id="bo"),
    ]
    result = apply(engine, back)
    assert (result.codes, result.changes) == ([APPLIED, APPLIED], [])
    assert engine.sweep(NOW + 8 * DAY) == []  # back at 35 points: grace cleared
    assert len(records(stack, f"{prefix}:{{pycon-us}}:segchanges")) == 1


def test_a_grace_that_ended_before_the_next_event_downgrades_at_its_end(
    stack: Stack, prefix: str, engine: Engine
) -> None:
    old = [event(i, NOW - 40 * DAY + i, type="github.pr_merged", member_id="cy") for i in range(2)]
    apply(engine, old, now=NOW - 40 * DAY)
    # No sweep ran; the next event comes after the grace ended: the downgrade is applied
    # first, dated at the end of the grace, then the event upgrades again.
    result = apply(engine, [event(7, NOW, type="event.volunteer_shift", member_id="cy")])
    changes = records(stack, f"{prefix}:{{pycon-us}}:segchanges")
    down, up = (changes[i] for i in result.changes)
    due = (int(old[0].occurred_at // DAY) + 30 + 7) * DAY
    assert (down["to"], down["at_ms"]) == ("beginner", int(due * 1000))
    assert (up["to"], up["at_ms"]) == ("intermediate", int(NOW * 1000))


def test_flood_raises_one_flag_per_burst_and_moderated_messages_earn_nothing(
    stack: Stack, prefix: str, engine: Engine
) -> None:
    base = f"{prefix}:{{pycon-us}}"
    burst = [event(i, NOW - 100 + i, member_id="bot", channel="general") for i in range(15)]
    result = apply(engine, burst)
    assert result.codes == [1] * 10 + [MODERATED] * 5
    assert len(result.flags) == 1
    flag = records(stack, f"{base}:flags")[result.flags[0]]
    assert flag["rule"] == "flood"
    assert flag["event_ids"] == [a.event_id for a in burst[:11]]
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    assert client.lrange(f"{base}:mod:burst:{result.flags[0]}", 0, -1) == [
        a.event_id for a in burst
    ]
    assert client.zscore(f"{base}:lb:all:all", "bot") == -10
    # A second burst after a quiet minute is a new flag.
    again = [event(100 + i, NOW + 100 + i, member_id="bot", channel="general") for i in range(11)]
    second = apply(engine, again)
    assert second.codes[-1] == MODERATED
    assert len(second.flags) == 1
    assert second.flags != result.flags


def test_cross_posting_in_a_third_channel_is_flagged(
    stack: Stack, prefix: str, engine: Engine
) -> None:
    copies = [
        event(i, NOW - 100 + i * 10, member_id="ad", channel=c, attributes={"content_hash": "abc"})
        for i, c in enumerate("xyzw")
    ]
    result = apply(engine, copies)
    assert result.codes == [1, 1, MODERATED, MODERATED]
    # One flag per burst: the fourth copy, in yet another channel, joins the open flag.
    assert len(result.flags) == 1
    flags = records(stack, f"{prefix}:{{pycon-us}}:flags")
    assert [f["rule"] for f in flags.values()] == ["cross-post"]
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    burst = client.lrange(f"{prefix}:{{pycon-us}}:mod:burst:{result.flags[0]}", 0, -1)
    assert burst == [copies[2].event_id, copies[3].event_id]


def test_first_response_matches_threads_and_ignores_self_replies(
    stack: Stack, prefix: str, engine: Engine
) -> None:
    t = NOW - 3600
    batch = [
        event(1, t, type="forum.post", member_id="asker", attributes={"thread_id": "q1"}),
        event(2, t + 10, type="forum.reply", member_id="asker", attributes={"thread_id": "q1"}),
        event(3, t + 100, type="forum.reply", member_id="helper", attributes={"thread_id": "q1"}),
        event(4, t + 200, type="forum.reply", member_id="late", attributes={"thread_id": "q1"}),
        event(5, t, type="github.issue_opened", member_id="dev", attributes={"thread_id": 42}),
        event(6, t + 5000, type="github.comment", member_id="maint", attributes={"thread_id": 42}),
        event(7, t, type="forum.reply", member_id="x", attributes={"thread_id": "unknown"}),
    ]
    apply(engine, batch)
    # A reply applied before its thread's opening event (it came on another partition).
    apply(
        engine,
        [event(8, t + 30, type="forum.reply", member_id="quick", attributes={"thread_id": "q2"})],
    )
    apply(
        engine,
        [event(9, t, type="forum.post", member_id="asker2", attributes={"thread_id": "q2"})],
    )
    health = Reader(connect(stack.redis_url), prefix).health("pycon-us", NOW)
    assert health["first_response"]["forum"] == {
        "le:60": "1",
        "le:300": "1",
        "sum": "130",
        "count": "2",
    }
    assert health["first_response"]["github"] == {"le:7200": "1", "sum": "5000", "count": "1"}


def test_health_figures_equal_an_independent_count(
    stack: Stack, prefix: str, engine: Engine
) -> None:
    specs = [  # member, days ago, type, rating
        ("old", 45, "chat.message", None),
        ("old", 40, "chat.message", None),
        ("quiet", 20, "forum.post", None),
        ("week", 5, "feedback.submitted", 4),
        ("today", 0.1, "feedback.submitted", 2),
        ("today", 0.2, "chat.message", None),
        ("new", 3, "github.pr_opened", None),
    ]
    batch = []
    for n, (member, ago, kind, rating) in enumerate(specs):
        extra = {"attributes": {"rating": rating}} if rating else {}
        batch.append(event(n, NOW - ago * DAY, type=kind, member_id=member, **extra))
    apply(engine, batch)
    h = Reader(connect(stack.redis_url), prefix).health("pycon-us", NOW)
    assert h["members"] == 5
    assert h["active"] == {"1d": 1, "7d": 3, "30d": 4}
    assert h["new"] == {"7d": 3, "30d": 4}  # week, today, new; plus quiet within 30 d
    assert h["inactive"] == 1  # "old"
    assert h["engagement_ratio"] == pytest.approx(4 / 5)
    assert h["contributions_per_active_member"] == pytest.approx(5 / 4)
    assert h["feedback"] == {"responses": 2, "rating_avg": 3.0}
    assert h["events"][("chat.message", "discord")] == 3
