"""Period buckets by event time in UTC: ISO weeks, month and year edges, leap days."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streams.periods import format_instant, parse_day, period_bucket


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize(
    ("period", "instant", "label"),
    [
        ("day", "2026-11-25T00:00:00+00:00", "2026-11-25"),
        ("day", "2026-11-25T23:59:59.999+00:00", "2026-11-25"),
        ("day", "2026-11-26T00:30:00+01:00", "2026-11-25"),  # 23:30 UTC the day before
        ("day", "2026-11-25T20:00:00-05:00", "2026-11-26"),  # 01:00 UTC the day after
        ("day", "2024-02-29T12:00:00+00:00", "2024-02-29"),
        ("week", "2026-11-23T00:00:00+00:00", "2026-W48"),  # Monday starts the week
        ("week", "2026-11-22T23:59:59+00:00", "2026-W47"),  # Sunday ends the previous one
        ("week", "2026-12-31T12:00:00+00:00", "2026-W53"),  # 2026 has 53 ISO weeks
        ("week", "2027-01-03T12:00:00+00:00", "2026-W53"),  # ...ending on Sunday 3 Jan 2027
        ("week", "2027-01-04T00:00:00+00:00", "2027-W01"),
        ("week", "2024-12-30T00:00:00+00:00", "2025-W01"),  # ISO year differs from calendar
        ("week", "2021-01-03T00:00:00+00:00", "2020-W53"),
        ("month", "2026-11-30T23:59:59+00:00", "2026-11"),
        ("month", "2026-12-01T00:00:00+00:00", "2026-12"),
        ("month", "2024-02-29T23:00:00+00:00", "2024-02"),
        ("month", "2027-01-01T00:30:00+01:00", "2026-12"),
        ("all", "2026-11-25T12:00:00+00:00", "all"),
    ],
)
def test_bucket_labels(period: str, instant: str, label: str) -> None:
    assert period_bucket(period, ts(instant)).label == label


@pytest.mark.parametrize(
    ("period", "instant", "start", "end"),
    [
        (
            "day",
            "2024-02-28T10:00:00+00:00",
            "2024-02-28T00:00:00+00:00",
            "2024-02-29T00:00:00+00:00",
        ),
        (
            "week",
            "2026-11-25T10:00:00+00:00",
            "2026-11-23T00:00:00+00:00",
            "2026-11-30T00:00:00+00:00",
        ),
        (
            "month",
            "2024-02-10T10:00:00+00:00",
            "2024-02-01T00:00:00+00:00",
            "2024-03-01T00:00:00+00:00",
        ),
        (
            "month",
            "2026-12-31T10:00:00+00:00",
            "2026-12-01T00:00:00+00:00",
            "2027-01-01T00:00:00+00:00",
        ),
    ],
)
def test_bucket_spans_are_half_open(period: str, instant: str, start: str, end: str) -> None:
    bucket = period_bucket(period, ts(instant))
    assert (bucket.start, bucket.end) == (ts(start), ts(end))
    assert period_bucket(period, ts(end)).label != bucket.label
    assert period_bucket(period, ts(end) - 0.001).label == bucket.label


def test_all_has_no_end() -> None:
    assert period_bucket("all", 0).end is None


def test_unknown_period_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown period"):
        period_bucket("year", 0)


def test_parse_day_and_format_instant() -> None:
    assert parse_day("2026-11-25") == datetime(2026, 11, 25, tzinfo=UTC).timestamp()
    assert format_instant(ts("2026-11-25T12:00:00.5+00:00")) == "2026-11-25T12:00:00.500Z"
    for bad in ("2026-13-01", "25/11/2026", "2026-11-25T00:00"):
        with pytest.raises(ValueError, match="YYYY-MM-DD"):
            parse_day(bad)
