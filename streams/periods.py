"""Leaderboard periods by event time, in UTC: ``day``, ``week`` (ISO), ``month``, ``all``.

A period bucket has a label (``2026-11-25``, ``2026-W48``, ``2026-11``, ``all``) and a
half-open span ``[start, end)`` in epoch seconds; the end is what retention counts from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Final

PERIODS: Final[tuple[str, ...]] = ("day", "week", "month", "all")
# Channel leaderboards are kept for these periods only.
CHANNEL_PERIODS: Final[tuple[str, ...]] = ("week", "all")
DAY_SECONDS: Final = 86400


@dataclass(frozen=True, slots=True)
class PeriodBucket:
    """One leaderboard bucket: its period, label and span (``end`` is None for ``all``)."""

    period: str
    label: str
    start: float | None
    end: float | None


def _epoch(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def period_bucket(period: str, ts: float) -> PeriodBucket:
    """The bucket of ``period`` that contains the instant ``ts`` (epoch seconds)."""
    return _bucket_of_day(period, int(ts // DAY_SECONDS))


@lru_cache(maxsize=4096)
def _bucket_of_day(period: str, day_number: int) -> PeriodBucket:
    # Every bucket is a whole number of UTC days, so the day decides it; caching by day
    # saves building datetimes for every event (a batch spans few days).
    day = date(1970, 1, 1) + timedelta(days=day_number)
    if period == "day":
        return PeriodBucket("day", day.isoformat(), _epoch(day), _epoch(day + timedelta(days=1)))
    if period == "week":
        iso = day.isocalendar()
        monday = day - timedelta(days=iso.weekday - 1)
        return PeriodBucket(
            "week",
            f"{iso.year:04d}-W{iso.week:02d}",
            _epoch(monday),
            _epoch(monday + timedelta(days=7)),
        )
    if period == "month":
        first = day.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        return PeriodBucket(
            "month", f"{day.year:04d}-{day.month:02d}", _epoch(first), _epoch(following)
        )
    if period == "all":
        return PeriodBucket("all", "all", None, None)
    raise ValueError(f"unknown period {period!r}; expected one of {', '.join(PERIODS)}")


def parse_day(text: str) -> float:
    """Parse ``YYYY-MM-DD`` as midnight UTC (epoch seconds); ValueError when malformed."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date of the form YYYY-MM-DD") from None
    if len(text) != 10:
        raise ValueError(f"{text!r} is not a date of the form YYYY-MM-DD")
    return _epoch(day)


def format_instant(ts: float) -> str:
    """Epoch seconds as an RFC 3339 UTC timestamp with millisecond precision."""
    return (
        datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
