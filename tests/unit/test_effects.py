"""Planning a batch: the ops each activity produces, late buckets, in-batch repeats."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streams.activity import Activity
from streams.effects import (
    COMMUNITY_HEADER,
    GATE,
    HEADER,
    CommunityPlan,
    Policy,
    Retention,
    plan_batch,
)
from tests.conftest import NOON

Op = tuple[str, str, str, int, int]


def decode(plan: CommunityPlan) -> list[tuple[list[Op], list[tuple[Any, ...]]]]:
    """Split the flattened Lua arguments back into (ops, checks) per event; an op's key
    index is looked up in the key table: ``(op, key, field, amount, expire_at)``."""
    arguments = plan.arguments()
    nkeys = int(arguments[COMMUNITY_HEADER])
    table = arguments[COMMUNITY_HEADER + 1 : COMMUNITY_HEADER + 1 + 2 * nkeys]
    args = arguments[COMMUNITY_HEADER + 1 + 2 * nkeys :]
    assert args == plan.args
    events = []
    i = 0
    while i < len(args):
        nops, nchecks, ngates = int(args[i + 1]), int(args[i + 2]), int(args[i + 3])
        i += HEADER + GATE * ngates
        ops = []
        for k in range(nops):
            op, index, fld, amount = args[i + 4 * k : i + 4 * k + 4]
            key, expire_at = table[2 * int(index) - 2], table[2 * int(index) - 1]
            ops.append((op, key, fld, amount, expire_at))
        i += 4 * nops
        checks = []
        for _ in range(nchecks):
            head = tuple(args[i : i + 5])
            nconds = int(head[4])
            conds = tuple(tuple(args[i + 5 + 4 * k : i + 9 + 4 * k]) for k in range(nconds))
            checks.append((*head[:4], conds))
            i += 5 + 4 * nconds
        events.append((ops, checks))  # type: ignore[arg-type]
    return events


def ops_of(plan: CommunityPlan, index: int = 0) -> list[Op]:
    return decode(plan)[index][0]


def plan_one(
    activity: Activity,
    now: float = NOON,
    retention: Retention | None = None,
    points: dict[str, int] | None = None,
) -> CommunityPlan:
    table = points or {"chat.message": 1, "github.pr_merged": 15}
    plans = plan_batch(
        [activity], "pulse", Policy(points=table, retention=retention or Retention()), now
    )
    return plans[activity.community]


def test_a_chat_message_updates_counts_leaderboards_windows_and_profile(
    make_activity: Callable[..., Activity],
) -> None:
    plan = plan_one(make_activity())
    base = "pulse:{pycon-us}"
    ops = {(o[0], o[1], o[2]): o[3] for o in ops_of(plan)}
    assert plan.args[0] == f"{base}:seen:evt-1"
    assert ops[("H", f"{base}:counts", "chat.message")] == 1
    for key in (
        "lb:day:2026-11-25",
        "lb:week:2026-W48",
        "lb:month:2026-11",
        "lb:all:all",
        "lb:ch:general:week:2026-W48",
        "lb:ch:general:all:all",
    ):
        assert ops[("Z", f"{base}:{key}", "alice")] == -1, key
    minute = int((NOON - 60) // 60)
    assert ops[("H", f"{base}:win:min:{minute}", "alice")] == 1
    assert ops[("H", f"{base}:win:hour:{minute // 60}", "alice")] == 1
    assert ops[("H", f"{base}:win:day:{minute // 1440}", "alice")] == 1
    assert ops[("H", f"{base}:member:alice", "points")] == 1
    assert ops[("H", f"{base}:member:alice", "type:chat.message")] == 1
    assert ops[("MIN", f"{base}:member:alice", "first_seen")] == int((NOON - 60) * 1000)
    assert ops[("S", f"{base}:member:alice:days", str(int(NOON // 86400)))] == 1
    assert plan.late == [False]


def test_points_come_from_the_scoring_table(make_activity: Callable[..., Activity]) -> None:
    plan = plan_one(make_activity(type="github.pr_merged"), points={"github.pr_merged": 40})
    all_time = [o for o in ops_of(plan) if o[1].endswith(":lb:all:all")]
    assert all_time == [("Z", "pulse:{pycon-us}:lb:all:all", "alice", -40, 0)]


def test_period_keys_expire_after_retention_counted_from_the_bucket_end(
    make_activity: Callable[..., Activity],
) -> None:
    retention = Retention(day_seconds=100, week_seconds=200, month_seconds=300)
    ops = ops_of(plan_one(make_activity(), retention=retention))
    expiry = {o[1].rsplit(":", 2)[-2]: o[4] for o in ops if ":lb:" in o[1] and ":ch:" not in o[1]}
    day_end = 1795651200  # 2026-11-26T00:00Z
    week_end = 1795996800  # Monday 2026-11-30T00:00Z
    month_end = 1796083200  # 2026-12-01T00:00Z
    assert expiry == {
        "day": day_end + 100,
        "week": week_end + 200,
        "month": month_end + 300,
        "all": 0,
    }


def test_late_events_skip_expired_buckets_but_still_count_all_time(
    make_activity: Callable[..., Activity],
) -> None:
    old = make_activity(occurred_at="2026-01-05T10:00:00Z")
    retention = Retention(
        day_seconds=86400, week_seconds=400 * 86400, month_seconds=86400, window_seconds=86400
    )
    plan = plan_one(old, retention=retention)
    keys = [o[1] for o in ops_of(plan)]
    assert plan.late == [True]
    assert not any(":lb:day:" in k or ":lb:month:" in k or ":win:" in k for k in keys)
    assert "pulse:{pycon-us}:lb:week:2026-W02" in keys  # the week is still kept
    assert "pulse:{pycon-us}:lb:all:all" in keys
    assert "pulse:{pycon-us}:member:alice" in keys


def test_batch_groups_by_community_and_drops_in_batch_repeats(
    make_activity: Callable[..., Activity],
) -> None:
    batch = [
        make_activity(event_id="a"),
        make_activity(event_id="b", community="django"),
        make_activity(event_id="a"),  # producer retry inside one batch
        make_activity(event_id="a", community="django"),  # same id, other community: distinct
    ]
    plans = plan_batch(batch, "pulse", Policy(points={"chat.message": 1}), NOON)
    assert {c: p.event_ids for c, p in plans.items()} == {"pycon-us": ["a"], "django": ["b", "a"]}


def test_hostile_member_ids_stay_inside_their_own_keys(
    make_activity: Callable[..., Activity],
) -> None:
    evil: dict[str, Any] = {"member_id": "x}:{django}:member:bob", "channel": "* #general"}
    ops = ops_of(plan_one(make_activity(**evil)))
    for op in ops:
        assert op[1].startswith("pulse:{pycon-us}:")
        assert "{django}" not in op[1]
        assert " " not in op[1]
        assert "*" not in op[1]
