"""The evaluator's event-time rules: segments and their downgrade clock, dedupe memory,
the member state's record, and replay determinism."""

from __future__ import annotations

import json
from typing import Any

import pytest

from streams.activity import Activity, parse_activity
from streams.badges import default_catalog
from streams.effects import APPLIED, DUPLICATE, MODERATED, CommunityWrites
from streams.evaluator import advance
from streams.policy import Policy, Retention
from streams.replay import Replay
from streams.segments import SegmentPolicy, change_id
from streams.simulation import Scenario, simulate
from streams.state import (
    DAY_MS,
    STATE_VERSION,
    MemberState,
    StateVersionError,
    event_digest,
    from_record,
    restore_seen,
    to_record,
)
from tests.conftest import NOON

D0 = 20_000  # a UTC day number (2024-10-04); tests count days from it
HOUR_MS = 3_600_000
# One point per message, intermediate at 2, advanced at 4, a week of grace.
POLICY = Policy(
    points={"chat.message": 1},
    segments=SegmentPolicy(intermediate_at=2, advanced_at=4, downgrade_grace=7 * 86400),
)

Moment = tuple[float, float]  # (day from D0, hour)


def ms(day: float, hour: float = 0) -> int:
    return int((D0 + day) * DAY_MS + hour * HOUR_MS)


def message(
    event_id: str,
    day: float,
    hour: float = 12,
    *,
    member: str = "alice",
    community: str = "pycon-us",
    channel: str | None = "general",
    attributes: dict[str, Any] | None = None,
) -> Activity:
    return Activity(
        event_id,
        "chat.message",
        member,
        community,
        "discord",
        ms(day, hour) / 1000,
        channel,
        attributes,
    )


def history(moments: list[Moment], policy: Policy = POLICY) -> Replay:
    replay = Replay(policy)
    replay.feed(message(f"e{i}", day, hour) for i, (day, hour) in enumerate(moments))
    return replay


def changes(out: CommunityWrites) -> list[tuple[str, str, int, int]]:
    return [(r["from"], r["to"], r["at_ms"], r["score"]) for _, r in out.changes]


BEG, MID, ADV = "beginner", "intermediate", "advanced"
FOUR = [(0, 9), (0, 10), (0, 11), (0, 12)]


@pytest.mark.parametrize(
    ("moments", "until", "expected"),
    [
        pytest.param([(0, 9)], None, [], id="below-the-threshold"),
        pytest.param(
            [(0, 9), (0, 10)], None, [(BEG, MID, ms(0, 10), 2)], id="upgrade-at-the-crossing-event"
        ),
        pytest.param(
            FOUR,
            None,
            [(BEG, MID, ms(0, 10), 2), (MID, ADV, ms(0, 12), 4)],
            id="one-segment-at-a-time",
        ),
        pytest.param([(0, 12), (30, 12)], None, [], id="day-0-is-out-of-day-30s-score"),
        pytest.param([(0, 12), (29, 12)], None, [(BEG, MID, ms(29, 12), 2)], id="day-29-is-in"),
        # Both points leave the score on day 30: the grace runs from 00:00 that day.
        pytest.param(
            [(0, 9), (0, 10)], 36.99, [(BEG, MID, ms(0, 10), 2)], id="not-before-the-grace"
        ),
        pytest.param(
            [(0, 9), (0, 10)],
            37,
            [(BEG, MID, ms(0, 10), 2), (MID, BEG, ms(37), 0)],
            id="downgrade-at-the-end-of-the-grace",
        ),
        pytest.param(
            [(0, 9), (0, 10)],
            90,
            [(BEG, MID, ms(0, 10), 2), (MID, BEG, ms(37), 0)],
            id="dated-at-the-grace-end-when-noticed-later",
        ),
        pytest.param(
            [(0, 12), (10, 12)],
            40,
            [(BEG, MID, ms(10, 12), 2), (MID, BEG, ms(37), 1)],
            id="the-score-falls-when-its-first-day-ages-out",
        ),
        pytest.param(
            [(0, 9), (0, 10), (50, 12)],
            None,
            [(BEG, MID, ms(0, 10), 2), (MID, BEG, ms(37), 0)],
            id="the-next-event-applies-the-due-downgrade-first",
        ),
        pytest.param(
            [*FOUR, (32, 12), (33, 12)],
            60,
            [(BEG, MID, ms(0, 10), 2), (MID, ADV, ms(0, 12), 4), (ADV, MID, ms(37), 2)],
            id="a-partial-restore-downgrades-one-segment",
        ),
        pytest.param(
            [*FOUR, (10, 9), (10, 10)],
            100,
            [
                (BEG, MID, ms(0, 10), 2),
                (MID, ADV, ms(0, 12), 4),
                (ADV, MID, ms(37), 2),
                (MID, BEG, ms(47), 0),
            ],
            id="two-downgrades-noticed-by-advance",
        ),
        pytest.param(
            [*FOUR, (15, 9), (15, 10), (50, 12)],
            100,
            [
                (BEG, MID, ms(0, 10), 2),
                (MID, ADV, ms(0, 12), 4),
                (ADV, MID, ms(37), 2),
                (MID, BEG, ms(52), 1),
            ],
            id="due-downgrade-judged-before-pruning",
        ),
    ],
)
def test_segments_in_event_time(
    moments: list[Moment], until: float | None, expected: list[tuple[str, str, int, int]]
) -> None:
    replay = history(moments)
    out = replay.writes["pycon-us"]
    if until is not None:
        state = replay.states[("pycon-us", "alice")]
        advance(state, "alice", ms(until), POLICY.segments, out)
    assert changes(out) == expected


def test_a_segment_change_record() -> None:
    out = history([(0, 9), (0, 10)]).writes["pycon-us"]
    identity = change_id("pycon-us", "alice", BEG, MID, ms(0, 10))
    assert out.changes == [
        (identity, {"member_id": "alice", "from": BEG, "to": MID, "at_ms": ms(0, 10), "score": 2})
    ]


def test_the_downgrade_clock() -> None:
    replay = history([(0, 9), (0, 10)])
    state = replay.states[("pycon-us", "alice")]
    out = replay.writes["pycon-us"]
    # The score will fall on day 30 (no further events): due a grace later.
    assert (state.segment, state.below_since, state.due) == (MID, ms(30), ms(37))
    assert out.dues == {"alice": ms(37)}
    assert advance(state, "alice", ms(37) - 1, POLICY.segments, out) == 0
    assert advance(state, "alice", ms(37), POLICY.segments, out) == 1
    assert (state.segment, state.below_since, state.due) == (BEG, 0, 0)
    assert out.dues == {"alice": 0}
    assert advance(state, "alice", ms(90), POLICY.segments, out) == 0


def test_an_event_that_restores_the_score_clears_the_clock() -> None:
    replay = history([(0, 9), (0, 10), (32, 12)])
    state = replay.states[("pycon-us", "alice")]
    # Below since day 30; the day-32 point alone does not restore it.
    assert (state.below_since, state.due) == (ms(30), ms(37))
    replay.feed([message("e-restore", 33)])
    # Score 2 again: the clock now waits for the day-32 point to age out.
    assert (state.below_since, state.due) == (ms(62), ms(69))
    out = replay.writes["pycon-us"]
    assert advance(state, "alice", ms(68), POLICY.segments, out) == 0
    assert state.segment == MID
    assert advance(state, "alice", ms(69), POLICY.segments, out) == 1
    assert changes(out)[-1] == (MID, BEG, ms(69), 0)


@pytest.mark.parametrize(
    ("dedupe_days", "newest", "code"),
    [
        (7, (0, 13), DUPLICATE),
        (7, (7, 12), DUPLICATE),  # exactly the retention later
        (7, (8, 12), APPLIED),  # a day more: forgotten
        (7, (30, 0), APPLIED),
        (1, (1, 12), DUPLICATE),
        (1, (2, 12), APPLIED),
    ],
)
def test_dedupe_remembers_event_ids_for_the_retention_in_event_time(
    dedupe_days: int, newest: Moment, code: int
) -> None:
    policy = Policy(
        points={"chat.message": 1}, retention=Retention(dedupe_seconds=dedupe_days * 86400)
    )
    replay = Replay(policy)
    first = message("e1", 0)
    replay.feed([first, message("e2", *newest)])
    assert replay.feed([first]) == [code]


def test_dedupe_memory_is_judged_from_the_members_newest_event() -> None:
    replay = Replay(POLICY)
    first = message("e1", 0)
    # The stream moves on by a month, but alice's newest event is still day 0.
    replay.feed([first, message("b1", 30, member="bob")])
    assert replay.feed([first]) == [DUPLICATE]
    state = replay.states[("pycon-us", "alice")]
    assert list(state.seen) == [D0]
    assert state.remembers(event_digest("e1"))


def test_a_late_event_is_remembered_until_the_members_next_newer_event() -> None:
    replay = Replay(POLICY)
    replay.feed([message("new", 20)])
    old = message("old", 0)
    assert replay.feed([old, old]) == [APPLIED, DUPLICATE]
    replay.feed([message("newer", 21)])
    assert replay.feed([old]) == [APPLIED]


def rich_state() -> tuple[Replay, MemberState]:
    """A member with something in every part of its state."""
    replay = Replay(Policy(catalog=default_catalog()))
    spam = [message(f"s{i}", 40, 12 + i / 3600) for i in range(12)]
    posts = [
        message(f"x{i}", 40, 12 + (20 + i) / 3600, channel=c, attributes={"content_hash": "h"})
        for i, c in enumerate("abcd")
    ]
    activities = [
        parse_activity(
            {
                "event_id": f"a{i}",
                "type": "forum.answer_accepted",
                "member_id": "alice",
                "community": "pycon-us",
                "source": "discourse",
                "occurred_at": f"2024-11-{1 + i:02d}T10:00:00Z",  # days 28..33
            },
            now=NOON,
            max_future_skew=300,
        )
        for i in range(6)
    ]
    codes = replay.feed([*activities, *spam, *posts])
    assert codes.count(MODERATED) == 4
    return replay, replay.states[("pycon-us", "alice")]


def test_the_state_record_round_trips_through_json() -> None:
    _, state = rich_state()
    record = json.loads(json.dumps(to_record(state)))
    assert record[0] == STATE_VERSION
    restored = from_record(record)
    # The remembered event ids are kept apart (one string per member and day).
    assert restored.seen == {}
    restore_seen(restored, {d: ids.hex() for d, ids in state.seen.items()}, 7 * 86400)
    assert restored == state
    for part in ("by_type", "counters", "days", "badges", "score", "flood", "crosspost"):
        assert getattr(restored, part), part
    assert restored.bursts.keys() == {"flood|general", "cross-post|h"}
    assert restored.seen
    assert all(restored.seen.values())
    assert (restored.segment, restored.due > 0) == (MID, True)


def test_a_restored_state_evaluates_like_the_original() -> None:
    _, state = rich_state()
    restored = from_record(json.loads(json.dumps(to_record(state))))
    restore_seen(restored, {d: ids.hex() for d, ids in state.seen.items()}, 7 * 86400)
    policy = Policy(catalog=default_catalog())
    outs = []
    for member_state in (state, restored):
        replay = Replay(policy)
        replay.states[("pycon-us", "alice")] = member_state
        # A redelivery, a message into the open flood burst, and a fresh day.
        replay.feed([message("s3", 40, 12), message("s99", 40, 12.01), message("n", 41)])
        outs.append(replay.writes["pycon-us"])
    one, two = outs
    assert one.codes == two.codes == [DUPLICATE, MODERATED, APPLIED]
    assert (one.zincr, one.hincr, one.bursts, one.awards, one.flags, one.changes) == (
        two.zincr,
        two.hincr,
        two.bursts,
        two.awards,
        two.flags,
        two.changes,
    )
    assert state == restored


@pytest.mark.parametrize("record", [[], [0], [STATE_VERSION + 1, 0]])
def test_a_record_of_another_version_is_refused(record: list[Any]) -> None:
    with pytest.raises(StateVersionError, match="rebuild"):
        from_record(record)


SCENARIO = Scenario(
    now=NOON,
    communities=("pycon-us", "django"),
    members=60,
    days=45,
    events=4000,
    seed=5,
    malformed_share=0.0,
)


def replay_of(activities: list[Activity]) -> Replay:
    replay = Replay(Policy(catalog=default_catalog()))
    replay.feed(activities)
    until = int(replay.stream_time * 1000)
    for (community, member), state in sorted(replay.states.items()):
        advance(state, member, until, replay.policy.segments, replay.writes[community])
    return replay


def test_a_replay_of_the_same_history_gives_the_same_outputs() -> None:
    activities = [
        parse_activity(line, now=NOON, max_future_skew=300)
        for line in simulate(SCENARIO)
        if isinstance(line, dict)
    ]
    one, two = replay_of(activities), replay_of(list(activities))
    for community in SCENARIO.communities:
        first, second = one.writes[community], two.writes[community]
        assert first.awards
        assert first.flags
        assert first.changes
        assert first.awards == second.awards
        assert first.flags == second.flags
        assert first.changes == second.changes
        assert first.bursts == second.bursts
        assert first.zincr == second.zincr
    assert one.states == two.states


def test_a_remembered_digest_counts_only_where_a_digest_starts() -> None:
    digest = event_digest("e1")
    state = MemberState()
    # The digest's bytes straddle two other digests: not remembered.
    state.seen = {D0: bytearray(b"\0" * 4 + digest + b"\0" * 4)}
    assert not state.remembers(digest)
    # Further along the same day, it starts a digest of its own.
    state.seen[D0] += digest
    assert state.remembers(digest)
    # And on another day of the memory.
    state.seen = {D0: bytearray(8), D0 + 1: bytearray(digest)}
    assert state.remembers(digest)


@pytest.mark.parametrize(
    ("day", "score"),
    [(-1, 0), (0, 1), (9, 1), (10, 3), (29, 7), (30, 14), (39, 14), (40, 12), (59, 8), (60, 0)],
)
def test_the_30_day_score_on_a_day_counts_that_day_and_the_29_before(day: int, score: int) -> None:
    state = MemberState(score={D0: 1, D0 + 10: 2, D0 + 29: 4, D0 + 30: 8})
    assert state.score_at(D0 + day) == score
