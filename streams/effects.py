"""Planning the Redis effects of a batch of activities.

The core decides every write: which keys, which increments, when each key expires and
whether a bucket is already past retention (a late event). The shell ships the plan to
Redis in one Lua call per community, which applies an event's ops only if its
``seen`` marker did not exist, so a redelivered ``event_id`` changes nothing.

Per event the arguments are a header ``seen-key, op count, check count, badges-key,
member_id, event_id, occurred_at (epoch ms)``, then the ops, then the award checks.

Ops are flat tuples ``(op, key, field, amount, expire_at)`` with ``op`` one of
``z`` (ZINCRBY), ``h`` (HINCRBY), ``min``/``max`` (keep the smaller/larger integer in
a hash field), ``s`` (SADD); ``expire_at`` is epoch seconds or 0 for "never".

An award check is ``award_id, badge-field, badge, tier, n`` followed by ``n``
conditions ``(test, key, field, threshold)``: ``h`` (hash field >= threshold),
``s`` (set size >= threshold) or ``run`` (the run of consecutive day numbers around
``field`` in the set >= threshold). When every condition holds and the member does not
have the badge-field yet, the award is recorded and queued in the outbox.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from streams.activity import Activity
from streams.badges import Badge, award_id
from streams.keys import KeyLayout, escape
from streams.periods import PERIODS, period_bucket
from streams.windows import GRANULARITIES

CHANNEL_PERIODS: Final = ("week", "all")
DAY_SECONDS: Final = 86400
HEADER: Final = 7  # per-event header length, see the module docstring


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
    # award_id -> (activity, badge, tier) for every award check planned in this batch.
    checks: dict[str, tuple[Activity, Badge, str | None]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one community's plan did: a flag per event (1 applied, 0 duplicate)
    and the ids of the awards it recorded, in order."""

    flags: list[int]
    fired: list[str]


def badge_field(badge: str, tier: str | None) -> str:
    """The member-badges hash field of an award."""
    return badge if tier is None else f"{badge}:{tier}"


def _plan_badges(
    layout: KeyLayout,
    activity: Activity,
    catalog: tuple[Badge, ...],
    ops: list[str | int],
    checks: list[str | int],
    plan: CommunityPlan,
) -> int:
    """Counter ops and award checks of the badges this activity feeds; returns check count."""
    member = activity.member_id
    day = int(activity.occurred_at // DAY_SECONDS)
    counters = layout.badge_counters(member)
    count = 0
    for badge in catalog:
        tests: list[tuple[str, str, str] | None] = []
        fed = False
        for index, condition in enumerate(badge.conditions):
            matches = condition.filter.matches(activity)
            if condition.kind == "count":
                name = f"{badge.id}/{index}"
                if condition.same is not None:
                    group = condition.group(activity) if matches else None
                    if group is None:
                        # A per-value count is only judged on events that carry a value.
                        tests.append(None)
                        continue
                    name = f"{name}/{escape(group)}"
                if matches:
                    ops.extend(("h", counters, name, 1, 0))
                tests.append(("h", counters, name))
            else:
                days = layout.badge_days(member, badge.id, index)
                if matches:
                    ops.extend(("s", days, str(day), 1, 0))
                elif condition.kind == "streak":
                    # A streak is judged around the day of an event that extends it.
                    tests.append(None)
                    continue
                tests.append(("run" if condition.kind == "streak" else "s", days, str(day)))
            fed = fed or matches
        if not fed or None in tests:
            continue
        for tier in badge.tiers:
            identity = award_id(layout.community, member, badge.id, tier.name)
            checks.extend(
                (identity, badge_field(badge.id, tier.name), badge.id, tier.name or "", len(tests))
            )
            for test, threshold in zip(tests, badge.thresholds(tier), strict=True):
                assert test is not None  # noqa: S101 - filtered above
                kind, key, fld = test
                checks.extend((kind, key, "" if kind == "s" else fld, threshold))
            plan.checks[identity] = (activity, badge, tier.name)
            count += 1
    return count


def _expire(end: float, keep: int) -> int:
    return int(end) + keep


def plan_activity(
    plan: CommunityPlan,
    activity: Activity,
    points: Mapping[str, int],
    retention: Retention,
    now: float,
    catalog: tuple[Badge, ...] = (),
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
    op("s", layout.member_days(member), str(int(ts // DAY_SECONDS)), 1, 0)
    checks: list[str | int] = []
    check_count = _plan_badges(layout, activity, catalog, ops, checks, plan)

    plan.event_ids.append(activity.event_id)
    plan.args.extend(
        (
            layout.seen(activity.event_id),
            len(ops) // 5,
            check_count,
            layout.member_badges(member),
            member,
            activity.event_id,
            ts_ms,
        )
    )
    plan.args.extend(ops)
    plan.args.extend(checks)
    plan.late.append(late)
    plan.activities.append(activity)


def plan_batch(
    activities: Iterable[Activity],
    prefix: str,
    points: Mapping[str, int],
    retention: Retention,
    now: float,
    catalog: tuple[Badge, ...] = (),
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
        plan_activity(plan, activity, points, retention, now, catalog)
    return plans
