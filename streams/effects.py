"""Planning the Redis effects of a batch of activities.

The core decides every write: which keys, which increments, when each key expires and
whether a bucket is already past retention (a late event). The shell ships the plan to
Redis in one Lua call per community, which applies an event's ops only if its
``seen`` marker did not exist, so a redelivered ``event_id`` changes nothing.

Ops are flat tuples ``(op, key, field, amount, expire_at)`` with ``op`` one of
``z`` (ZINCRBY), ``h`` (HINCRBY), ``min``/``max`` (keep the smaller/larger integer in
a hash field), ``s`` (SADD); ``expire_at`` is epoch seconds or 0 for "never".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from streams.activity import Activity
from streams.keys import KeyLayout
from streams.periods import PERIODS, period_bucket
from streams.windows import GRANULARITIES

CHANNEL_PERIODS: Final = ("week", "all")


@dataclass(frozen=True, slots=True)
class Retention:
    """How long time-bucketed keys live after their bucket ends, and event-id memory."""

    day_seconds: int = 93 * 86400
    week_seconds: int = 27 * 7 * 86400
    month_seconds: int = 25 * 31 * 86400
    window_seconds: int = 35 * 86400
    dedupe_seconds: int = 7 * 86400

    def for_period(self, period: str) -> int:
        return {"day": self.day_seconds, "week": self.week_seconds, "month": self.month_seconds}[
            period
        ]


@dataclass(slots=True)
class CommunityPlan:
    """Everything one Lua call applies for one community, in event order."""

    layout: KeyLayout
    event_ids: list[str] = field(default_factory=list)
    # Flattened Lua arguments: per event, seen key, op count, then 5 strings per op.
    args: list[str | int] = field(default_factory=list)
    late: list[bool] = field(default_factory=list)
    activities: list[Activity] = field(default_factory=list)


def _expire(end: float, keep: int) -> int:
    return int(end) + keep


def plan_activity(
    plan: CommunityPlan,
    activity: Activity,
    points: Mapping[str, int],
    retention: Retention,
    now: float,
) -> None:
    """Append one activity's ops to ``plan``; buckets past retention are skipped (late)."""
    layout = plan.layout
    member = activity.member_id
    ts = activity.occurred_at
    earned = points[activity.type]
    ops: list[str | int] = []
    late = False

    def op(kind: str, key: str, fld: str, amount: int, expire_at: int) -> None:
        ops.extend((kind, key, fld, amount, expire_at))

    op("h", layout.counts(), activity.type, 1, 0)
    for period in PERIODS:
        bucket = period_bucket(period, ts)
        expire_at = 0
        if bucket.end is not None:
            expire_at = _expire(bucket.end, retention.for_period(period))
            if expire_at <= now:
                late = True
                continue
        op("z", layout.leaderboard(period, bucket.label), member, -earned, expire_at)
        if activity.channel is not None and period in CHANNEL_PERIODS:
            op(
                "z",
                layout.leaderboard(period, bucket.label, activity.channel),
                member,
                -earned,
                expire_at,
            )
    for name, granularity in GRANULARITIES.items():
        index = int(ts // granularity)
        expire_at = _expire((index + 1) * granularity, retention.window_seconds)
        if expire_at <= now:
            late = True
            continue
        op("h", layout.window(name, index), member, earned, expire_at)
    member_key = layout.member(member)
    ts_ms = int(ts * 1000)
    op("h", member_key, "points", earned, 0)
    op("h", member_key, "events", 1, 0)
    op("h", member_key, f"type:{activity.type}", 1, 0)
    op("min", member_key, "first_seen", ts_ms, 0)
    op("max", member_key, "last_seen", ts_ms, 0)
    op("s", layout.member_days(member), period_bucket("day", ts).label, 1, 0)

    plan.event_ids.append(activity.event_id)
    plan.args.append(layout.seen(activity.event_id))
    plan.args.append(len(ops) // 5)
    plan.args.extend(ops)
    plan.late.append(late)
    plan.activities.append(activity)


def plan_batch(
    activities: Iterable[Activity],
    prefix: str,
    points: Mapping[str, int],
    retention: Retention,
    now: float,
) -> dict[str, CommunityPlan]:
    """Group a batch by community (one Redis slot each) and plan every activity.

    A batch may hold the same ``event_id`` twice (a producer retry); only the first is
    planned, the Lua dedupe would drop the second anyway.
    """
    plans: dict[str, CommunityPlan] = {}
    seen: set[tuple[str, str]] = set()
    for activity in activities:
        identity = (activity.community, activity.event_id)
        if identity in seen:
            continue
        seen.add(identity)
        plan = plans.get(activity.community)
        if plan is None:
            plan = plans[activity.community] = CommunityPlan(KeyLayout(prefix, activity.community))
        plan_activity(plan, activity, points, retention, now)
    return plans
