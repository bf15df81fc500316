"""What the rules are told: points per type, retention, the badge catalog, segment and
moderation thresholds. One frozen object, built once by the settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from streams.badges import Badge
from streams.moderation import ModerationPolicy
from streams.scoring import DEFAULT_POINTS
from streams.segments import SegmentPolicy


@dataclass(frozen=True, slots=True)
class Retention:
    """How long time-bucketed keys live after their bucket ends, and event-id memory.

    Retention is judged in event time: a bucket whose end plus its retention is at or
    before the stream time (the newest event time of the partition) is late and not
    written. Redis expires the keys by its own clock at the same instant.
    """

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
    """Everything the evaluator needs to know about scoring, keeping and judging events."""

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
        feed. Only those can change for such an event."""
        fed = self._fed_by.get(activity_type)
        if fed is None:
            fed = self._fed_by[activity_type] = tuple(
                badge
                for badge in self.catalog
                if any(c.filter.type in (None, activity_type) for c in badge.conditions)
            )
        return fed
