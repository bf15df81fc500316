"""The engine's one evaluator: applies one activity to a member's state and adds the
effects to the batch's writes.

``evaluate(state, activity, policy, out, stream_time)`` is the only implementation of
every rule: scoring, leaderboards and windows (with lateness), community counters,
first-response threads, badges, segments and moderation. The worker, ``pulse
rebuild``, ``pulse badges backtest`` and the tests all call it. It reads no clock:
everything is judged in event time, so a replay of the same input gives the same
awards, flags and segment changes, with the same ids and times.

- **Dedupe.** An event whose ``event_id`` the member's state remembers (received
  within the dedupe retention before the member's newest record) is a duplicate and
  changes nothing.
- **Moderation** runs first on a chat message: over a limit, the message is moderated
  (no points, no badge) and raises or extends its burst's flag.
- **Late.** A leaderboard or window bucket whose end plus retention is at or before
  the stream time (the newest event time of the partition) is not written.
- **Segments.** An event that lifts the 30-day score (of the event's UTC day) over a
  threshold upgrades at once, at the event's time. A score that falls below the
  segment's lower threshold (points age out day by day) starts the downgrade grace on
  the UTC day it falls; the downgrade happens at the end of the grace, dated then, when
  the member's next event or the stream time passes it (:func:`advance`).
"""

from __future__ import annotations

from bisect import bisect_right, insort_right
from functools import lru_cache
from operator import itemgetter
from typing import Final

from streams.activity import Activity
from streams.badges import Badge, award_id
from streams.effects import APPLIED, DUPLICATE, MODERATED, CommunityWrites, Spread
from streams.keys import KeyLayout, escape
from streams.moderation import content_hash, flag_id
from streams.periods import CHANNEL_PERIODS, PERIODS, period_bucket
from streams.policy import Policy, Retention
from streams.segments import SCORE_DAYS, SEGMENTS, SegmentPolicy, change_id
from streams.state import DAY_MS, MemberState, dedupe_horizon, event_digest
from streams.windows import STORED

DAY_SECONDS: Final = 86400
THREAD_OPENERS: Final = {"forum.post": "forum", "github.issue_opened": "github"}
THREAD_REPLIES: Final = {"forum.reply": "forum", "github.comment": "github"}
RANK: Final = {name: rank for rank, name in enumerate(SEGMENTS)}
# At most this many event ids are listed in a flood flag (oldest first).
FLAG_EVENTS: Final = 100
# A moderation rule keeps (and judges) a member's messages of this many of its windows
# before the member's newest event.
KEPT_WINDOWS: Final = 2
_time = itemgetter(0)


def evaluate(
    state: MemberState,
    activity: Activity,
    policy: Policy,
    out: CommunityWrites,
    stream_time: float,
    received: int = 0,
) -> int:
    """Apply ``activity`` to ``state`` (in place) and add its effects to ``out``.

    ``stream_time`` (epoch seconds) is the newest event time of the activity's
    partition, this activity included. ``received`` (epoch ms) is when its record was
    received: the Kafka record timestamp, part of the input like the event itself (0:
    unknown, the event time stands in). Event ids are remembered for the dedupe
    retention after the member's newest receipt, so a re-import of an old history
    within that time is recognised, and a replay of the same records decides alike.
    Returns :data:`APPLIED`, :data:`DUPLICATE` or :data:`MODERATED`; the code, the
    activity and whether it was late are also appended to ``out``.
    """
    at = int(activity.occurred_at * 1000)
    member = activity.member_id
    digest = event_digest(activity.event_id)
    if state.remembers(digest):
        out.activities.append(activity)
        out.codes.append(DUPLICATE)
        out.late.append(False)
        return DUPLICATE
    day = at // DAY_MS
    receipt = received or at
    receipt_day = receipt // DAY_MS
    if receipt_day not in state.seen:
        out.new_ids.add((member, receipt_day))
    state.remember(receipt_day, digest)
    days = out.ids.get(member)
    if days is None:
        days = out.ids[member] = {}
    batch = days.get(receipt_day)
    if batch is None:
        days[receipt_day] = bytearray(digest)
    else:
        batch += digest
    if receipt > state.received:
        state.received = receipt
        horizon = dedupe_horizon(receipt, policy.retention.dedupe_seconds)
        for old in [d for d in state.seen if d < horizon]:
            del state.seen[old]
    out.members[member] = state
    # Downgrades that fell due before this event are judged on the score as it was.
    if state.due and state.due <= at:
        advance(state, member, at, policy.segments, out)
    if at > state.newest:
        state.newest = at
        _forget(state, policy)
    if (
        activity.type == "chat.message"
        and activity.channel is not None
        and _moderated(state, activity, at, policy, out)
    ):
        out.activities.append(activity)
        out.codes.append(MODERATED)
        out.late.append(False)
        return MODERATED
    late = _score(state, activity, at, day, policy, out, stream_time)
    _badges(state, activity, at, day, policy.badges_fed_by(activity.type), out)
    out.activities.append(activity)
    out.codes.append(APPLIED)
    out.late.append(late)
    return APPLIED


def _forget(state: MemberState, policy: Policy) -> None:
    """Drop what no later event can need, judged against the member's newest event."""
    newest = state.newest
    today = newest // DAY_MS
    if state.pruned != today:
        oldest_score = today - SCORE_DAYS
        for day in [d for d in state.score if d <= oldest_score]:
            del state.score[day]
        state.pruned = today
    if not (state.flood or state.crosspost or state.bursts):
        return
    mod = policy.moderation
    flood_from = newest - KEPT_WINDOWS * mod.flood_window * 1000
    for channel, messages in list(state.flood.items()):
        old = bisect_right(messages, flood_from, key=_time)
        if old == len(messages):
            del state.flood[channel]
        elif old:
            del messages[:old]
    cross_from = newest - KEPT_WINDOWS * mod.crosspost_window * 1000
    for digest, channels in list(state.crosspost.items()):
        if max(channels.values()) <= cross_from:
            del state.crosspost[digest]
    longest = KEPT_WINDOWS * max(mod.flood_window, mod.crosspost_window) * 1000
    for scope, (_, end) in list(state.bursts.items()):
        if end < newest - longest:
            del state.bursts[scope]


# -- scoring, leaderboards, windows, community counters ----------------------------------


def _boards(out: CommunityWrites, day: int, channel: str | None, retention: Retention) -> Spread:
    """The leaderboards an event of ``day`` (and channel) moves, made once per batch;
    their expiries go to ``out.expire`` (the all-time boards never expire)."""
    keys, expiries, first = _board_keys(out.layout, day, channel, retention)
    out.expire.update(expiries)
    spread = out.boards[(day, channel)] = Spread(keys, first)
    return spread


# Keys and expiries (epoch s) of a spread, and the earliest of those expiries.
_Keys = tuple[tuple[str, ...], tuple[tuple[str, int], ...], float]


@lru_cache(maxsize=4096)
def _board_keys(layout: KeyLayout, day: int, channel: str | None, retention: Retention) -> _Keys:
    """The leaderboards of ``day`` (and channel) with their expiries. Cached, like
    :func:`_window_keys`: a batch names the same few days again and again, and an
    import of a long history keeps naming them batch after batch."""
    keys: list[str] = []
    expiries: list[tuple[str, int]] = []
    first = float("inf")
    for period in PERIODS:
        bucket = period_bucket(period, day * DAY_SECONDS)
        boards = [layout.leaderboard(period, bucket.label)]
        if channel is not None and period in CHANNEL_PERIODS:
            boards.append(layout.leaderboard(period, bucket.label, channel))
        keys += boards
        if bucket.end is not None:
            expire_at = int(bucket.end) + retention.for_period(period)
            first = min(first, expire_at)
            expiries += [(key, expire_at) for key in boards]
    return tuple(keys), tuple(expiries), first


def _windows(out: CommunityWrites, minute: int, keep: int) -> Spread:
    """The window buckets (minute, hour) of an event in ``minute``, made once per batch;
    their expiries go to ``out.expire``. Daily buckets are the day leaderboards."""
    keys, expiries, first = _window_keys(out.layout, minute, keep)
    out.expire.update(expiries)
    spread = out.windows[minute] = Spread(keys, first)
    return spread


@lru_cache(maxsize=4096)
def _window_keys(layout: KeyLayout, minute: int, keep: int) -> _Keys:
    """The window keys of ``minute`` and their expiries (epoch s). Cached: most events
    fall in a minute of the last few hours, and formatting keys is a share of the work."""
    ts = minute * 60
    keys: list[str] = []
    expiries: list[tuple[str, int]] = []
    for name, granularity in STORED.items():
        index = ts // granularity
        key = layout.window(name, index)
        keys.append(key)
        expiries.append((key, (index + 1) * granularity + keep))
    return tuple(keys), tuple(expiries), min(at for _, at in expiries)


def _add(table: dict[str, dict[str, int]], key: str, name: str, amount: int) -> None:
    row = table.get(key)
    if row is None:
        table[key] = {name: amount}
    else:
        row[name] = row.get(name, 0) + amount


def _late(
    out: CommunityWrites,
    table: dict[str, dict[str, int]],
    spread: Spread,
    member: str,
    amount: int,
    stream_time: float,
) -> bool:
    """Add ``amount`` to the keys of ``spread`` that are not past their retention;
    returns whether some key was (the event is late for it)."""
    late = False
    for key in spread.keys:
        expire_at = out.expire.get(key, 0)
        if expire_at and expire_at <= stream_time:
            late = True
        else:
            _add(table, key, member, amount)
    return late


def _score(
    state: MemberState,
    activity: Activity,
    at: int,
    day: int,
    policy: Policy,
    out: CommunityWrites,
    stream_time: float,
) -> bool:
    """Points, profile, windows, leaderboards and counters of an applied event; returns
    whether some bucket was past retention (late)."""
    member, kind = activity.member_id, activity.type
    earned = policy.points[kind]
    state.points += earned
    state.events += 1
    by_type = state.by_type
    by_type[kind] = by_type.get(kind, 0) + 1
    if not state.first_seen or at < state.first_seen:
        state.first_seen = at
        out.firsts.add(member)
    if at > state.last_seen:
        state.last_seen = at
    if day != state.last_day:
        out.active_days.setdefault(member, set()).add(day)
        state.last_day = max(state.last_day, day)
    tally = out.tally
    counted = (kind, activity.source, day)
    tally[counted] = tally.get(counted, 0) + 1
    late = False
    boards = out.boards.get((day, activity.channel))
    if boards is None:
        boards = _boards(out, day, activity.channel, policy.retention)
    if stream_time < boards.first_expiry:
        amounts = boards.amounts
        amounts[member] = amounts.get(member, 0) - earned
    else:
        late = _late(out, out.zextra, boards, member, -earned, stream_time) or late
    minute = at // 60_000
    windows = out.windows.get(minute)
    if windows is None:
        windows = _windows(out, minute, policy.retention.window_seconds)
    if stream_time < windows.first_expiry:
        amounts = windows.amounts
        amounts[member] = amounts.get(member, 0) + earned
    else:
        late = _late(out, out.hextra, windows, member, earned, stream_time) or late
    if earned and day > state.newest // DAY_MS - SCORE_DAYS:
        state.score[day] = state.score.get(day, 0) + earned
        _judge(state, member, at, day, policy.segments, out)
    attributes = activity.attributes
    if attributes:
        _attributes(activity, attributes, at, day, policy.retention, out)
    return late


def _attributes(
    activity: Activity,
    attributes: dict[str, object],
    at: int,
    day: int,
    retention: Retention,
    out: CommunityWrites,
) -> None:
    """Feedback ratings and discussion threads."""
    layout = out.layout
    if activity.type == "feedback.submitted":
        rating = attributes.get("rating")
        if isinstance(rating, int) and not isinstance(rating, bool):
            _add(out.hextra, layout.feedback_by_day(), f"{day}:sum", rating)
            _add(out.hextra, layout.feedback_by_day(), f"{day}:n", 1)
    thread = attributes.get("thread_id")
    if isinstance(thread, str | int) and not isinstance(thread, bool):
        expire_at = int(activity.occurred_at) + retention.thread_seconds
        if (kind := THREAD_OPENERS.get(activity.type)) is not None:
            key = layout.thread(kind, str(thread)[:128])
            out.threads.append(("open", key, activity.member_id, at, expire_at))
        elif (kind := THREAD_REPLIES.get(activity.type)) is not None:
            key = layout.thread(kind, str(thread)[:128])
            out.threads.append(("reply", key, activity.member_id, at, expire_at))


# -- segments ----------------------------------------------------------------------------


def _lower_threshold(segment: str, policy: SegmentPolicy) -> int:
    return policy.advanced_at if segment == "advanced" else policy.intermediate_at


def _change(
    state: MemberState, member: str, target: str, at: int, score: int, out: CommunityWrites
) -> None:
    community = out.layout.community
    identity = change_id(community, member, state.segment, target, at)
    out.changes.append(
        (
            identity,
            {"member_id": member, "from": state.segment, "to": target, "at_ms": at, "score": score},
        )
    )
    state.segment = target
    state.below_since = 0


def _schedule(
    state: MemberState, member: str, at: int, policy: SegmentPolicy, out: CommunityWrites
) -> None:
    """Set when the score falls below the segment's lower threshold, as of ``at``,
    given no further events, and when the downgrade grace then ends."""
    before = state.due
    if state.segment == "beginner":
        state.below_since = state.due = 0
    else:
        low = _lower_threshold(state.segment, policy)
        day = at // DAY_MS
        score = state.score_at(day)
        if score < low:
            if not state.below_since:
                state.below_since = at
        else:
            # Points age out of the score 30 days after their day; the score falls
            # below on the first day that leaves it under the threshold.
            state.below_since = 0
            for old_day in sorted(d for d in state.score if day - SCORE_DAYS < d <= day):
                score -= state.score[old_day]
                if score < low:
                    state.below_since = (old_day + SCORE_DAYS) * DAY_MS
                    break
        state.due = state.below_since + policy.downgrade_grace * 1000 if state.below_since else 0
    if state.due != before:
        out.dues[member] = state.due


def _judge(
    state: MemberState, member: str, at: int, day: int, policy: SegmentPolicy, out: CommunityWrites
) -> None:
    """After an event earned points: upgrade at once, or (re)start the downgrade clock."""
    score = state.score_at(day)
    target = policy.segment_for(score)
    if RANK[target] > RANK[state.segment]:
        _change(state, member, target, at, score, out)
    _schedule(state, member, max(at, state.newest), policy, out)


def advance(
    state: MemberState, member: str, until: int, policy: SegmentPolicy, out: CommunityWrites
) -> int:
    """Apply the downgrades due at or before ``until`` (ms): each one is dated at the end
    of its grace, whenever it is noticed. Returns how many were applied."""
    applied = 0
    while state.due and state.due <= until:
        due = state.due
        score = state.score_at(due // DAY_MS)
        target = policy.segment_for(score)
        if RANK[target] < RANK[state.segment]:
            _change(state, member, target, due, score, out)
            applied += 1
        state.below_since = 0
        _schedule(state, member, due, policy, out)
        if state.due == due:  # cannot happen with a positive grace; never loop
            state.due = 0
            out.dues[member] = 0
    return applied


# -- badges ------------------------------------------------------------------------------


def run_length(days: set[int], day: int, cap: int) -> int:
    """Consecutive days in ``days`` around ``day`` (counted as present), up to ``cap``."""
    length, d = 1, day - 1
    while length < cap and d in days:
        length, d = length + 1, d - 1
    d = day + 1
    while length < cap and d in days:
        length, d = length + 1, d + 1
    return length


def _badges(
    state: MemberState,
    activity: Activity,
    at: int,
    day: int,
    catalog: tuple[Badge, ...],
    out: CommunityWrites,
) -> None:
    """Update the counters of the badges this activity feeds, then award every tier
    whose conditions all hold."""
    counters, days = state.counters, state.days
    for badge in catalog:
        values: list[tuple[str, str, int]] = []  # (test, name, day)
        fed, judged = False, True
        for condition, name in zip(badge.conditions, badge.names, strict=True):
            matches = condition.filter.matches(activity)
            if condition.kind == "count":
                if condition.same is not None:
                    group = condition.group(activity) if matches else None
                    if group is None:
                        # A per-value count is only judged on events that carry a value.
                        judged = False
                        continue
                    name = f"{name}/{escape(group)}"
                if matches:
                    counters[name] = counters.get(name, 0) + 1
                values.append(("count", name, day))
            else:
                if matches:
                    days.setdefault(name, set()).add(day)
                elif condition.kind == "streak":
                    # A streak is judged around the day of an event that extends it.
                    judged = False
                    continue
                values.append((condition.kind, name, day))
            fed = fed or matches
        if not fed or not judged:
            continue
        for tier, field, thresholds in badge.levels:
            if field in state.badges:
                continue
            met = True
            for (test, name, on_day), threshold in zip(values, thresholds, strict=True):
                if test == "count":
                    value = counters.get(name, 0)
                elif test == "distinct_days":
                    value = len(days.get(name, ()))
                else:
                    value = run_length(days.get(name, set()), on_day, threshold)
                if value < threshold:
                    met = False
                    break
            if met:
                _award(state, activity, at, badge, tier.name, field, out)


def _award(
    state: MemberState,
    activity: Activity,
    at: int,
    badge: Badge,
    tier: str | None,
    field: str,
    out: CommunityWrites,
) -> None:
    layout, member = out.layout, activity.member_id
    state.badges[field] = at
    identity = award_id(layout.community, member, badge.id, tier)
    out.awards.append(
        (
            identity,
            {
                "member_id": member,
                "badge": badge.id,
                "tier": tier or "",
                "at_ms": at,
                "evidence": activity.event_id,
            },
        )
    )


# -- moderation --------------------------------------------------------------------------


def _moderated(
    state: MemberState, activity: Activity, at: int, policy: Policy, out: CommunityWrites
) -> bool:
    """Run the flood and cross-post rules on a chat message; raise or extend the flag of
    the first rule over its limit. Returns whether the message is moderated."""
    assert activity.channel is not None  # noqa: S101 - checked by the caller
    mod = policy.moderation
    member, channel, event_id = activity.member_id, activity.channel, activity.event_id
    community = out.layout.community
    moderated = False
    # A rule keeps the member's messages of its last KEPT_WINDOWS windows before the
    # newest event (:func:`_forget`); a message older than that is not judged by it
    # (nor remembered: it would only wait for the next pruning).
    newest = state.newest
    window = mod.flood_window * 1000
    if at > newest - KEPT_WINDOWS * window:
        # Sorted (by time, then id): the window is a slice.
        messages = state.flood.setdefault(channel, [])
        start = bisect_right(messages, at - window, key=_time)
        recent = bisect_right(messages, at, lo=start, key=_time) - start
        insort_right(messages, (at, event_id))
    else:
        recent = 0
    if recent >= mod.flood_messages:
        moderated = True
        end = bisect_right(messages, at, lo=start, key=_time)
        burst = sorted(messages[start:end])[:FLAG_EVENTS]
        _flag(
            state, "flood", channel, channel, flag_id(community, member, "flood", event_id),
            window, at, burst[0][0], [e for _, e in burst], activity, out,
        )  # fmt: skip
    digest = content_hash(activity)
    window = mod.crosspost_window * 1000
    if digest is not None and at > newest - KEPT_WINDOWS * window:
        channels = state.crosspost.setdefault(digest, {})
        others = sum(1 for c, t in channels.items() if c != channel and at - window < t <= at)
        channels[channel] = max(channels.get(channel, at), at)
        if others >= mod.crosspost_channels and not moderated:
            moderated = True
            start = min(t for t in channels.values() if at - window < t <= at)
            _flag(
                state, "cross-post", digest, channel,
                flag_id(community, member, "cross-post", event_id),
                window, at, start, [event_id], activity, out,
            )  # fmt: skip
    return moderated


def _flag(
    state: MemberState,
    rule: str,
    scope: str,
    channel: str,
    identity: str,
    window: int,
    at: int,
    start: int,
    event_ids: list[str],
    activity: Activity,
    out: CommunityWrites,
) -> None:
    """Attach the message to its rule's open burst, or raise a new flag."""
    layout = out.layout
    name = f"{rule}|{scope}"
    open_burst = state.bursts.get(name)
    if open_burst is not None and open_burst[1] >= at - window:
        flagged, end = open_burst
        state.bursts[name] = (flagged, max(end, at))
        out.bursts.setdefault(layout.burst(flagged), []).append(activity.event_id)
        return
    state.bursts[name] = (identity, at)
    out.bursts.setdefault(layout.burst(identity), []).extend(event_ids)
    out.flags.append(
        (
            identity,
            {
                "member_id": activity.member_id,
                "channel": channel,
                "rule": rule,
                "start_ms": start,
                "end_ms": at,
                "event_ids": event_ids,
            },
        )
    )
