"""Flood and cross-post rules at their edges, through the evaluator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streams.activity import Activity, parse_activity
from streams.badges import default_catalog
from streams.effects import APPLIED, MODERATED, CommunityWrites
from streams.keys import KeyLayout
from streams.moderation import ModerationPolicy, flag_id, flag_message
from streams.policy import Policy
from streams.replay import Replay
from tests.conftest import activity_dict

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
NOW = datetime(2026, 11, 25, tzinfo=UTC).timestamp()
LAYOUT = KeyLayout("pulse", "pycon-us")


def chat(
    n: int,
    seconds: float,
    *,
    channel: str = "general",
    digest: str | None = None,
    member: str = "spammer",
    tag: str = "m",
) -> Activity:
    extra: dict[str, Any] = {"attributes": {"content_hash": digest}} if digest else {}
    return parse_activity(
        activity_dict(
            event_id=f"{tag}{n}",
            member_id=member,
            channel=channel,
            occurred_at=(T0 + timedelta(seconds=seconds)).isoformat(),
            **extra,
        ),
        now=NOW,
        max_future_skew=300,
    )


def run(batch: list[Activity], policy: Policy | None = None) -> tuple[list[int], CommunityWrites]:
    replay = Replay(policy or Policy())
    codes = replay.feed(batch)
    return codes, replay.writes["pycon-us"]


def flags(out: CommunityWrites) -> list[tuple[str, str, list[str]]]:
    """(rule, channel, event ids) of each raised flag."""
    return [(r["rule"], r["channel"], r["event_ids"]) for _, r in out.flags]


def ids(tag: str, numbers: range) -> list[str]:
    return [f"{tag}{i}" for i in numbers]


def test_the_eleventh_message_within_sixty_seconds_is_a_flood() -> None:
    batch = [chat(i, i * 5) for i in range(11)]  # 0..50 s
    codes, out = run(batch)
    assert codes == [APPLIED] * 10 + [MODERATED]
    identity = flag_id("pycon-us", "spammer", "flood", "m10")
    # The flag lists the messages that made the flood, oldest first.
    assert out.flags == [
        (
            identity,
            {
                "member_id": "spammer",
                "channel": "general",
                "rule": "flood",
                "start_ms": T0_MS,
                "end_ms": T0_MS + 50_000,
                "event_ids": ids("m", range(11)),
            },
        )
    ]
    assert out.bursts == {LAYOUT.burst(identity): ids("m", range(11))}


def test_messages_just_outside_the_window_do_not_count() -> None:
    # The first message is exactly 60 s before the eleventh: outside (previous 60 s).
    batch = [chat(0, 0)] + [chat(i, 50 + i) for i in range(1, 10)] + [chat(10, 60)]
    codes, out = run(batch)
    assert codes == [APPLIED] * 11
    assert out.flags == []
    assert out.bursts == {}


def test_a_message_older_than_two_windows_before_the_newest_is_not_judged() -> None:
    # A burst delivered in time order is a flood; the same burst delivered after a
    # message 120 s (two flood windows) later is older than what the rule keeps.
    burst = [chat(i, i) for i in range(11)]
    codes, _ = run(burst)
    assert codes[-1] == MODERATED
    replay = Replay(Policy())
    replay.feed([chat(99, 130, tag="late")])
    codes = replay.feed(burst)
    assert codes == [APPLIED] * 11
    state = replay.states[("pycon-us", "spammer")]
    assert state.flood == {"general": [(T0_MS + 130_000, "late99")]}
    # Within two windows of the newest message, a late one is judged and remembered.
    replay = Replay(Policy())
    replay.feed([chat(99, 100, tag="late")])
    codes = replay.feed(burst)
    assert codes == [APPLIED] * 10 + [MODERATED]
    assert len(replay.states[("pycon-us", "spammer")].flood["general"]) == 12


def test_a_cross_post_older_than_two_windows_before_the_newest_is_not_judged() -> None:
    posts = [chat(i, i, channel=c, digest="h") for i, c in enumerate("abc")]
    replay = Replay(Policy())
    replay.feed([chat(99, 610, channel="z", tag="late")])
    assert replay.feed(posts) == [APPLIED] * 3
    assert replay.states[("pycon-us", "spammer")].crosspost == {}
    replay = Replay(Policy())
    replay.feed([chat(99, 599, channel="z", tag="late")])
    assert replay.feed(posts) == [APPLIED, APPLIED, MODERATED]


def test_a_flood_is_per_channel_and_per_member() -> None:
    batch = [chat(i, i, channel=("a", "b")[i % 2]) for i in range(12)]
    batch += [chat(i, i, member="other", tag="o") for i in range(5)]
    codes, _ = run(batch)
    assert MODERATED not in codes


def test_moderated_messages_earn_nothing_and_join_the_open_burst() -> None:
    replay = Replay(Policy(catalog=default_catalog()))
    codes = replay.feed([chat(i, i) for i in range(15)])
    out = replay.writes["pycon-us"]
    assert codes.count(MODERATED) == 5
    assert out.zincr[LAYOUT.leaderboard("all", "all")] == {"spammer": -10}
    state = replay.states[("pycon-us", "spammer")]
    assert (state.points, state.events) == (10, 10)
    assert state.counters["conversationalist/0"] == 10  # no badge counts them either
    # One flag for the burst; the later messages are attached to it, not flagged again.
    identity = flag_id("pycon-us", "spammer", "flood", "m10")
    assert [i for i, _ in out.flags] == [identity]
    assert out.bursts == {LAYOUT.burst(identity): ids("m", range(15))}


@pytest.mark.parametrize(
    ("seconds", "codes", "flagged_at"),
    [
        # Two messages within the previous 10 s are the limit.
        ([0, 1, 2, 20], [1, 1, 2, 1], [2]),
        # Moderated messages count too: a burst goes on while it has no gap over 10 s.
        ([0, 1, 2, 3, 12], [1, 1, 2, 2, 1], [2]),
        ([0, 1, 2, 3, 12, 12], [1, 1, 2, 2, 1, 2], [2]),
        # After a longer gap, a new burst raises a new flag.
        ([0, 1, 2, 30, 31, 32], [1, 1, 2, 1, 1, 2], [2, 32]),
    ],
)
def test_limits_are_configurable_and_bursts_end_after_a_gap(
    seconds: list[int], codes: list[int], flagged_at: list[int]
) -> None:
    strict = Policy(moderation=ModerationPolicy(flood_messages=2, flood_window=10))
    got, out = run([chat(i, s) for i, s in enumerate(seconds)], strict)
    assert got == codes
    assert [r["end_ms"] - T0_MS for _, r in out.flags] == [s * 1000 for s in flagged_at]
    moderated = [f"m{i}" for i, code in enumerate(codes) if code == MODERATED]
    attached = [e for burst in out.bursts.values() for e in burst]
    assert set(moderated) <= set(attached)


def test_a_third_channel_with_the_same_content_is_a_cross_post() -> None:
    batch = [
        chat(0, 0, channel="a", digest="h1"),
        chat(1, 60, channel="b", digest="h1"),
        chat(2, 120, channel="c", digest="h1"),
        chat(3, 130, channel="d", digest="h1"),
    ]
    codes, out = run(batch)
    assert codes == [APPLIED, APPLIED, MODERATED, MODERATED]
    identity = flag_id("pycon-us", "spammer", "cross-post", "m2")
    assert out.flags == [
        (
            identity,
            {
                "member_id": "spammer",
                "channel": "c",
                "rule": "cross-post",
                "start_ms": T0_MS,
                "end_ms": T0_MS + 120_000,
                "event_ids": ["m2"],
            },
        )
    ]
    assert out.bursts == {LAYOUT.burst(identity): ["m2", "m3"]}


@pytest.mark.parametrize(
    "posts",
    [
        # The same channel again is not cross-posting.
        [(0, "a", "h"), (1, "a", "h"), (2, "a", "h")],
        # A copy 300 s old is outside the window.
        [(0, "a", "h"), (10, "b", "h"), (300, "c", "h")],
        # Other content.
        [(0, "a", "h"), (1, "b", "h"), (2, "c", "x")],
        # No content hash at all.
        [(0, "a", None), (1, "b", None), (2, "c", None)],
    ],
)
def test_cross_post_edges(posts: list[tuple[int, str, str | None]]) -> None:
    batch = [chat(i, s, channel=c, digest=d) for i, (s, c, d) in enumerate(posts)]
    codes, out = run(batch)
    assert codes == [APPLIED] * len(posts)
    assert flags(out) == []


def test_a_message_over_both_limits_raises_only_the_flood_flag() -> None:
    strict = Policy(moderation=ModerationPolicy(flood_messages=1, crosspost_channels=1))
    batch = [
        chat(0, 0, channel="a", digest="h"),
        chat(1, 1, channel="b"),
        chat(2, 2, channel="b", digest="h"),
    ]
    codes, out = run(batch, strict)
    assert codes == [APPLIED, APPLIED, MODERATED]
    assert flags(out) == [("flood", "b", ["m1", "m2"])]


def test_a_redelivered_moderated_message_is_a_duplicate() -> None:
    batch = [chat(i, i) for i in range(11)]
    codes, out = run(batch + batch[-1:])
    assert codes[-2:] == [MODERATED, 0]
    assert len(out.flags) == 1
    assert out.bursts == {LAYOUT.burst(out.flags[0][0]): ids("m", range(11))}


@pytest.mark.parametrize("kind", ["forum.post", "github.comment"])
def test_only_chat_messages_are_moderated(kind: str) -> None:
    batch = [
        parse_activity(
            activity_dict(
                event_id=f"e{i}",
                type=kind,
                member_id="busy",
                occurred_at=(T0 + timedelta(seconds=i)).isoformat(),
            ),
            now=NOW,
            max_future_skew=300,
        )
        for i in range(20)
    ]
    assert MODERATED not in run(batch)[0]


def test_flag_message_shape() -> None:
    message = flag_message(
        "pycon-us",
        "f" * 32,
        {
            "member_id": "spammer",
            "channel": "general",
            "rule": "flood",
            "start_ms": 1000,
            "end_ms": 61000,
            "event_ids": ["a", "b"],
        },
    )
    assert message == {
        "schema_version": 1,
        "flag_id": "f" * 32,
        "community": "pycon-us",
        "member_id": "spammer",
        "channel": "general",
        "rule": "flood",
        "window_start": "1970-01-01T00:00:01.000Z",
        "window_end": "1970-01-01T00:01:01.000Z",
        "event_ids": ["a", "b"],
        "flagged_at": "1970-01-01T00:01:01.000Z",
    }
