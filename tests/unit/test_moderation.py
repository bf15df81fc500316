"""Flood and cross-post rules at their edges, through the planner and the ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streams.activity import Activity, parse_activity
from streams.effects import MODERATED, Policy, plan_batch
from streams.ledger import MemoryLedger
from streams.moderation import ModerationPolicy, flag_message
from tests.conftest import activity_dict

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 25, tzinfo=UTC).timestamp()


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


def run(batch: list[Activity], policy: Policy | None = None) -> tuple[list[int], MemoryLedger]:
    ledger = MemoryLedger()
    plans = plan_batch(batch, "pulse", policy or Policy(), NOW)
    (result,) = ledger.apply(list(plans.values()))
    return result.flags, ledger


def test_the_eleventh_message_within_sixty_seconds_is_a_flood() -> None:
    batch = [chat(i, i * 5) for i in range(11)]  # 0..50 s
    codes, ledger = run(batch)
    assert codes == [1] * 10 + [MODERATED]
    assert ledger.moderated == [("flood", "m10")]


def test_messages_just_outside_the_window_do_not_count() -> None:
    # The first message is exactly 60 s before the eleventh: outside (previous 60 s).
    batch = [chat(0, 0)] + [chat(i, 50 + i) for i in range(1, 10)] + [chat(10, 60)]
    codes, _ = run(batch)
    assert codes == [1] * 11


def test_a_flood_is_per_channel_and_per_member() -> None:
    batch = [chat(i, i, channel=("a", "b")[i % 2]) for i in range(12)]
    batch += [chat(i, i, member="other", tag="o") for i in range(5)]
    codes, _ = run(batch)
    assert MODERATED not in codes


def test_moderated_messages_earn_nothing() -> None:
    codes, ledger = run([chat(i, i) for i in range(15)])
    assert codes.count(MODERATED) == 5
    board = ledger.zsets["pulse:{pycon-us}:lb:all:all"]
    assert board == {"spammer": -10}


def test_a_third_channel_with_the_same_content_is_a_cross_post() -> None:
    batch = [
        chat(0, 0, channel="a", digest="h1"),
        chat(1, 60, channel="b", digest="h1"),
        chat(2, 120, channel="c", digest="h1"),
    ]
    codes, ledger = run(batch)
    assert codes == [1, 1, MODERATED]
    assert ledger.moderated == [("cross-post", "m2")]


def test_cross_post_edges() -> None:
    # Same channel again is not cross-posting; a copy 300 s old is outside the window.
    same_channel = [chat(i, i, channel="a", digest="h") for i in range(3)]
    assert run(same_channel)[0] == [1, 1, 1]
    aged = [
        chat(0, 0, channel="a", digest="h"),
        chat(1, 10, channel="b", digest="h"),
        chat(2, 300, channel="c", digest="h"),
    ]
    assert run(aged)[0] == [1, 1, 1]
    other_content = [
        chat(0, 0, channel="a", digest="h"),
        chat(1, 1, channel="b", digest="h"),
        chat(2, 2, channel="c", digest="x"),
    ]
    assert run(other_content)[0] == [1, 1, 1]


def test_limits_are_configurable() -> None:
    strict = Policy(moderation=ModerationPolicy(flood_messages=2, flood_window=10))
    codes, _ = run([chat(0, 0), chat(1, 1), chat(2, 2), chat(3, 20)], strict)
    assert codes == [1, 1, MODERATED, 1]


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
