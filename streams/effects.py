"""Planning the Redis effects of a batch of activities.

The core decides every write: which keys, which increments, when each key expires,
whether a bucket is already past retention (a late event), which badge and moderation
checks run. The shell ships the plan to Redis in one Lua call per community
(``agents/apply_batch.lua``), which applies an event's effects only if its ``seen``
marker did not exist, so a redelivered ``event_id`` changes nothing.

Arguments of one community's call: the community header (:data:`COMMUNITY_HEADER`
values, see :func:`community_header`), then, in ``apply`` mode, the key table: its
length ``n`` and ``n`` pairs ``key, expire_at`` (epoch seconds, 0 for "never"; a key
used by several events keeps the latest expiry). Ops name their key by its 1-based
index in that table: a busy key (a period leaderboard, the community counters) is sent
once per call, not once per event. Then per event a header of :data:`HEADER` values
``seen-key, op count, check count, gate count, badges-key, member_id, event_id,
occurred_at ms, member-key, score-days-key ("" when the event is too old to move the
30-day score)``, then the gates, the ops and the award checks.

- A gate (moderation rule) is ``rule, window-key, window ms, limit, channel,
  open-flag-key, flag_id, burst-key``. If any gate is over its limit the event is
  moderated: its ops and checks are skipped, and the flag is raised or extended.
- Ops are ``(op, key index, field, amount)``. Upper-case ops write keys that nothing in
  the call reads, so the script adds them up over the whole call and writes each
  (key, field) once at its end: ``Z`` ZINCRBY, ``H`` HINCRBY, ``S`` SADD, ``LT``/``GT``
  ZADD LT/GT (first/last seen indexes), ``MIN``/``MAX`` keep the smaller/larger integer
  in a hash field. Lower-case ops run in event order, because award checks or the
  segment judgement of the same event read what they write: ``h`` HINCRBY, ``s`` SADD,
  ``open`` (a thread opened by ``field`` at ``amount``), ``reply`` (a reply at
  ``amount`` to the thread; ``field`` is the first-response histogram key).
- An award check is ``award_id, badge-field, badge, tier, n`` and ``n`` conditions
  ``(test, key, field, threshold)``: ``h`` (hash field >= threshold), ``s`` (set size >=
  threshold) or ``run`` (run of consecutive day numbers around ``field`` >= threshold).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from streams.activity import Activity
from streams.badges import Badge, award_id
from streams.keys import KeyLayout, escape
from streams.moderation import ModerationPolicy, content_hash, flag_id
from streams.periods import CHANNEL_PERIODS, PERIODS, period_bucket
from streams.scoring import DEFAULT_POINTS
from streams.segments import SegmentPolicy, score_days
from streams.windows import GRANULARITIES

DAY_SECONDS: Final = 86400
HEADER: Final = 10  # per-event header length, see the module docstring
GATE: Final = 8
COMMUNITY_HEADER: Final = 17
THREAD_OPENERS: Final = {"forum.post": "forum", "github.issue_opened": "github"}
THREAD_REPLIES: Final = {"forum.reply": "forum", "github.comment": "github"}


@dataclass(frozen=True, slots=True)
class Retention:
    """How long time-bucketed keys live after their bucket ends, and event-id memory."""

    day_seconds: int = 93 * 86400
    week_seconds: int = 27 * 7 * 86400
    month_seconds: int = 25 * 31 * 86400
    window_seconds: int = 35 * 86400
    dedupe_seconds: int = 7 * 86400
    thread_seconds: int = 30 * 86400

    def for_period(self, period: str) -> int:
        return {"day": self.day_seconds, "week": self.week_seconds, "month": self.month_seconds}[
            period
        ]


@dataclass(frozen=True, slots=True)
class Policy:
    """Everything the planner needs to know about scoring, keeping and judging events."""

    points: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_POINTS))
    retention: Retention = field(default_factory=Retention)
    catalog: tuple[Badge, ...] = ()
    segments: SegmentPolicy = field(default_factory=SegmentPolicy)
    moderation: ModerationPolicy = field(default_factory=ModerationPolicy)
    _fed_by: dict[str, tuple[Badge, ...]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def badges_fed_by(self, activity_type: str) -> tuple[Badge, ...]:
        """The badges, in catalog order, with a condition that events of this type can
        feed. Only those can change for such an event (the others are never planned)."""
        fed = self._fed_by.get(activity_type)
        if fed is None:
            fed = self._fed_by[activity_type] = tuple(
                badge
                for badge in self.catalog
                if any(c.filter.type in (None, activity_type) for c in badge.conditions)
            )
        return fed


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one community's plan did: a flag per event (1 applied, 0 duplicate,
    2 moderated) and the ids of the awards, flags and segment changes it recorded."""

    flags: list[int]
    awards: list[str] = field(default_factory=list)
    moderation: list[str] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)


APPLIED, DUPLICATE, MODERATED = 1, 0, 2


@dataclass(slots=True)
class CommunityPlan:
    """Everything one Lua call applies for one community, in event order."""

    layout: KeyLayout
    header: list[str | int] = field(default_factory=list)
    # The planning time: buckets that expire before it are late.
    now: float = 0.0
    event_ids: list[str] = field(default_factory=list)
    # The key table: key -> 1-based index, and the flat (key, expire_at) pairs.
    key_index: dict[str, int] = field(default_factory=dict)
    keys: list[str | int] = field(default_factory=list)
    args: list[str | int] = field(default_factory=list)
    late: list[bool] = field(default_factory=list)
    activities: list[Activity] = field(default_factory=list)
    # award_id -> (activity, badge, tier) for every award check planned in this batch.
    checks: dict[str, tuple[Activity, Badge, str | None]] = field(default_factory=dict)
    # The planner's lookups of key indices that recur within the call (not sent).
    boards: dict[tuple[int, str | None], tuple[bool, tuple[int, ...]]] = field(
        default_factory=dict, repr=False
    )
    windows: dict[tuple[int, int], int] = field(default_factory=dict, repr=False)
    members: dict[str, tuple[str, int, int]] = field(default_factory=dict, repr=False)
    score_from: int = field(init=False, repr=False)
    score_to: int = field(init=False, repr=False)
    _fixed: tuple[int, int, int, int, int] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        days = score_days(self.now)
        self.score_from, self.score_to = days[0], days[-1]

    def fixed(self) -> tuple[int, int, int, int, int]:
        """Key indices of the community keys every event writes: counts, counts by
        source, events by day, members' first and last seen."""
        if self._fixed is None:
            layout = self.layout
            self._fixed = (
                self.key(layout.counts()),
                self.key(layout.counts_by_source()),
                self.key(layout.events_by_day()),
                self.key(layout.members_first_seen()),
                self.key(layout.members_last_seen()),
            )
        return self._fixed

    def key(self, name: str, expire_at: int = 0) -> int:
        """The index of ``name`` in the key table; its expiry becomes the latest asked."""
        index = self.key_index.get(name)
        if index is None:
            index = self.key_index[name] = len(self.key_index) + 1
            self.keys.extend((name, expire_at))
        else:
            # Only a thread key is asked for with different expiries (each event's time
            # plus the thread retention); a key kept forever (0) stays so.
            known = self.keys[2 * index - 1]
            if known and expire_at > known:  # type: ignore[operator]
                self.keys[2 * index - 1] = expire_at
        return index

    def arguments(self) -> list[str | int]:
        """The whole argument list of this plan's Lua call."""
        return [*self.header, len(self.key_index), *self.keys, *self.args]


def community_header(
    layout: KeyLayout, policy: Policy, now: float, mode: str = "apply"
) -> list[str | int]:
    """The community-wide arguments of the Lua call (order is the script's contract).

    ``mode`` is ``apply`` for a batch of events, or ``sweep`` for segment downgrades (then
    the member-key prefix and the member ids to judge follow the header).
    """
    seg = policy.segments
    return [
        mode,
        policy.retention.dedupe_seconds,
        layout.awards(),
        layout.awards_by_time(),
        layout.award_outbox(),
        layout.award_counts(),
        layout.flags(),
        layout.flag_outbox(),
        layout.moderation_counts(),
        layout.segment_changes(),
        layout.segment_outbox(),
        layout.segment_index(""),
        int(now * 1000),
        seg.intermediate_at,
        seg.advanced_at,
        int(now // DAY_SECONDS),
        seg.downgrade_grace * 1000,
    ]


def badge_field(badge: str, tier: str | None) -> str:
    """The member-badges hash field of an award."""
    return badge if tier is None else f"{badge}:{tier}"


def _expire(end: float, keep: int) -> int:
    return int(end) + keep


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
                    ops.extend(("h", plan.key(counters), name, 1))
                tests.append(("h", counters, name))
            else:
                days = layout.badge_days(member, badge.id, index)
                if matches:
                    ops.extend(("s", plan.key(days), str(day), 1))
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


def _plan_gates(layout: KeyLayout, activity: Activity, policy: ModerationPolicy) -> list[str | int]:
    """Moderation gates of a chat message (none for other events or without a channel)."""
    if activity.type != "chat.message" or activity.channel is None:
        return []
    member, channel = activity.member_id, activity.channel
    community = layout.community
    gates: list[str | int] = []
    flood = flag_id(community, member, "flood", activity.event_id)
    gates.extend(
        (
            "flood",
            layout.flood_window(member, channel),
            policy.flood_window * 1000,
            policy.flood_messages,
            channel,
            layout.open_flag("flood", member, channel),
            flood,
            layout.burst(flood),
        )
    )
    digest = content_hash(activity)
    if digest is not None:
        cross = flag_id(community, member, "cross-post", activity.event_id)
        gates.extend(
            (
                "cross-post",
                layout.crosspost_window(member, digest),
                policy.crosspost_window * 1000,
                policy.crosspost_channels,
                channel,
                layout.open_flag("cross-post", member, digest),
                cross,
                layout.burst(cross),
            )
        )
    return gates


def _boards(
    plan: CommunityPlan, day: int, channel: str | None, retention: Retention
) -> tuple[bool, tuple[int, ...]]:
    """Whether some leaderboard bucket of ``day`` is past retention, and the key indices
    of the boards an event of that day (and channel) moves, in :data:`PERIODS` order."""
    cached = plan.boards.get((day, channel))
    if cached is not None:
        return cached
    layout = plan.layout
    late = False
    indices: list[int] = []
    for period in PERIODS:
        bucket = period_bucket(period, day * DAY_SECONDS)
        expire_at = 0
        if bucket.end is not None:
            expire_at = _expire(bucket.end, retention.for_period(period))
            if expire_at <= plan.now:
                late = True
                continue
        indices.append(plan.key(layout.leaderboard(period, bucket.label), expire_at))
        if channel is not None and period in CHANNEL_PERIODS:
            board = layout.leaderboard(period, bucket.label, channel)
            indices.append(plan.key(board, expire_at))
    cached = plan.boards[(day, channel)] = (late, tuple(indices))
    return cached


def _window(plan: CommunityPlan, name: str, index: int, granularity: int, keep: int) -> int:
    """The key index of a window bucket; 0 when the bucket is past retention."""
    cached = plan.windows.get((granularity, index))
    if cached is None:
        expire_at = _expire((index + 1) * granularity, keep)
        cached = (
            0 if expire_at <= plan.now else plan.key(plan.layout.window(name, index), expire_at)
        )
        plan.windows[(granularity, index)] = cached
    return cached


def _member(plan: CommunityPlan, member: str) -> tuple[str, int, int]:
    """A member's profile key, its key index and the index of the member's days set."""
    cached = plan.members.get(member)
    if cached is None:
        layout = plan.layout
        key = layout.member(member)
        cached = (key, plan.key(key), plan.key(layout.member_days(member)))
        plan.members[member] = cached
    return cached


def plan_activity(plan: CommunityPlan, activity: Activity, policy: Policy) -> None:
    """Append one activity to ``plan``; buckets past ``plan.now`` plus retention are
    skipped (late).

    The hot path of the worker: about 20 ops per event. Key indices that recur within
    a call (the day's leaderboards, window buckets, a member's keys) are looked up once
    per plan, see :func:`_boards`, :func:`_window` and :func:`_member`.
    """
    layout = plan.layout
    retention = policy.retention
    key = plan.key
    member = activity.member_id
    kind = activity.type
    ts = activity.occurred_at
    ts_ms = int(ts * 1000)
    day = int(ts // DAY_SECONDS)
    day_field = str(day)
    earned = policy.points[kind]
    counts, by_source, by_day, first_seen, last_seen = plan.fixed()
    ops: list[str | int] = [
        "H", counts, kind, 1,
        "H", by_source, f"{kind}|{activity.source}", 1,
        "H", by_day, day_field, 1,
    ]  # fmt: skip
    late, boards = _boards(plan, day, activity.channel, retention)
    for index in boards:
        ops.extend(("Z", index, member, -earned))
    keep = retention.window_seconds
    for name, granularity in GRANULARITIES.items():
        index = _window(plan, name, int(ts // granularity), granularity, keep)
        if index:
            ops.extend(("H", index, member, earned))
        else:
            late = True
    member_key, member_index, days_index = _member(plan, member)
    ops.extend(
        (
            "H", member_index, "points", earned,
            "H", member_index, "events", 1,
            "H", member_index, f"type:{kind}", 1,
            "MIN", member_index, "first_seen", ts_ms,
            "MAX", member_index, "last_seen", ts_ms,
            "S", days_index, day_field, 1,
            "LT", first_seen, member, ts_ms,
            "GT", last_seen, member, ts_ms,
        )
    )  # fmt: skip
    attributes = activity.attributes
    if attributes:
        _plan_attributes(plan, activity, attributes, retention, ts_ms, day, ops)
    score_key = ""
    if earned and plan.score_from <= day <= plan.score_to:
        score_key = layout.member_score_days(member)
        ops.extend(("h", key(score_key), day_field, earned))
    checks: list[str | int] = []
    check_count = _plan_badges(layout, activity, policy.badges_fed_by(kind), ops, checks, plan)
    gates = _plan_gates(layout, activity, policy.moderation)

    plan.event_ids.append(activity.event_id)
    plan.args.extend(
        (
            layout.seen(activity.event_id),
            len(ops) // 4,
            check_count,
            len(gates) // GATE,
            layout.member_badges(member),
            member,
            activity.event_id,
            ts_ms,
            member_key,
            score_key,
        )
    )
    plan.args.extend(gates)
    plan.args.extend(ops)
    plan.args.extend(checks)
    plan.late.append(late)
    plan.activities.append(activity)


def _plan_attributes(
    plan: CommunityPlan,
    activity: Activity,
    attributes: Mapping[str, object],
    retention: Retention,
    ts_ms: int,
    day: int,
    ops: list[str | int],
) -> None:
    """Ops fed by an activity's attributes: feedback ratings and discussion threads."""
    layout = plan.layout
    key = plan.key
    if activity.type == "feedback.submitted":
        rating = attributes.get("rating")
        if isinstance(rating, int):
            feedback = key(layout.feedback_by_day())
            ops.extend(("H", feedback, f"{day}:sum", rating, "H", feedback, f"{day}:n", 1))
    thread = attributes.get("thread_id")
    if isinstance(thread, str | int) and not isinstance(thread, bool):
        thread_expiry = _expire(activity.occurred_at, retention.thread_seconds)
        if (kind := THREAD_OPENERS.get(activity.type)) is not None:
            opened = key(layout.thread(kind, str(thread)[:128]), thread_expiry)
            ops.extend(("open", opened, activity.member_id, ts_ms))
        elif (kind := THREAD_REPLIES.get(activity.type)) is not None:
            replied = key(layout.thread(kind, str(thread)[:128]), thread_expiry)
            ops.extend(("reply", replied, layout.first_response(kind), ts_ms))


class BatchPlanner:
    """Plans a batch one activity at a time: :func:`plan_batch` for a caller that must
    stay responsive while it plans (it can stop between activities)."""

    __slots__ = ("plans", "_now", "_policy", "_prefix", "_seen")

    def __init__(self, prefix: str, policy: Policy, now: float) -> None:
        self.plans: dict[str, CommunityPlan] = {}
        self._prefix = prefix
        self._policy = policy
        self._now = now
        self._seen: set[tuple[str, str]] = set()

    def add(self, activity: Activity) -> None:
        """Plan ``activity`` unless its ``event_id`` was planned already in this batch."""
        identity = (activity.community, activity.event_id)
        if identity in self._seen:
            return
        self._seen.add(identity)
        plan = self.plans.get(activity.community)
        if plan is None:
            layout = KeyLayout(self._prefix, activity.community)
            plan = self.plans[activity.community] = CommunityPlan(
                layout, community_header(layout, self._policy, self._now), now=self._now
            )
        plan_activity(plan, activity, self._policy)


def plan_batch(
    activities: Iterable[Activity], prefix: str, policy: Policy, now: float
) -> dict[str, CommunityPlan]:
    """Group a batch by community (one Redis slot each) and plan every activity.

    A batch may hold the same ``event_id`` twice (a producer retry); only the first is
    planned, the Lua dedupe would drop the second anyway.
    """
    planner = BatchPlanner(prefix, policy, now)
    for activity in activities:
        planner.add(activity)
    return planner.plans
