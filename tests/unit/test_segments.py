"""Segment thresholds, the newcomer flag and the 30-day score window."""

from __future__ import annotations

import pytest

from streams.segments import SegmentPolicy, change_message, score_days

DAY = 86400


@pytest.mark.parametrize(
    ("score", "segment"),
    [
        (0, "beginner"),
        (19, "beginner"),
        (20, "intermediate"),
        (149, "intermediate"),
        (150, "advanced"),
        (10_000, "advanced"),
    ],
)
def test_default_thresholds(score: int, segment: str) -> None:
    assert SegmentPolicy().segment_for(score) == segment


def test_thresholds_are_configurable_and_validated() -> None:
    policy = SegmentPolicy(intermediate_at=5, advanced_at=6)
    assert [policy.segment_for(s) for s in (4, 5, 6)] == ["beginner", "intermediate", "advanced"]
    with pytest.raises(ValueError, match="intermediate < advanced"):
        SegmentPolicy(intermediate_at=10, advanced_at=10)


def test_newcomer_for_fourteen_days() -> None:
    policy = SegmentPolicy()
    assert policy.is_newcomer(first_seen=0, now=14 * DAY - 1)
    assert not policy.is_newcomer(first_seen=0, now=14 * DAY)


def test_score_days_are_the_last_thirty_utc_days_including_today() -> None:
    days = score_days(100 * DAY + 5)
    assert (days.start, days.stop, len(days)) == (71, 101, 30)


def test_change_message_shape() -> None:
    assert change_message(
        "pycon-us",
        {"member_id": "a", "from": "beginner", "to": "intermediate", "at_ms": 0, "score": 20},
    ) == {
        "schema_version": 1,
        "community": "pycon-us",
        "member_id": "a",
        "from": "beginner",
        "to": "intermediate",
        "changed_at": "1970-01-01T00:00:00.000Z",
        "score_30d": 20,
    }
