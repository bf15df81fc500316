"""Member segments (personas) from the 30-day rolling score, and the newcomer flag.

Upgrades happen at once, on the event that crosses a threshold. Downgrades wait: a
member whose score falls below their segment's lower threshold is only moved down after
it has stayed below for ``downgrade_grace`` seconds, so members do not flap between
segments on a quiet weekend.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final

from streams.periods import format_instant

SEGMENTS: Final = ("beginner", "intermediate", "advanced")
DAY: Final = 86400
SCORE_DAYS: Final = 30


@dataclass(frozen=True, slots=True)
class SegmentPolicy:
    intermediate_at: int = 20
    advanced_at: int = 150
    downgrade_grace: int = 7 * DAY
    newcomer_for: int = 14 * DAY

    def __post_init__(self) -> None:
        if not 0 < self.intermediate_at < self.advanced_at:
            raise ValueError("segment thresholds must satisfy 0 < intermediate < advanced")

    def segment_for(self, score: int) -> str:
        if score >= self.advanced_at:
            return "advanced"
        if score >= self.intermediate_at:
            return "intermediate"
        return "beginner"

    def is_newcomer(self, first_seen: float, now: float) -> bool:
        return now - first_seen < self.newcomer_for

    def public(self) -> dict[str, Any]:
        return {
            "score": f"points over the last {SCORE_DAYS} UTC days",
            "thresholds": {
                "beginner": 0,
                "intermediate": self.intermediate_at,
                "advanced": self.advanced_at,
            },
            "downgrade_grace_seconds": self.downgrade_grace,
            "newcomer_seconds": self.newcomer_for,
        }


def score_days(now: float) -> range:
    """The UTC day numbers whose points make up the 30-day score at ``now``."""
    today = int(now // DAY)
    return range(today - SCORE_DAYS + 1, today + 1)


def change_id(community: str, member_id: str, old: str, new: str, at_ms: int) -> str:
    text = "\x1f".join((community, member_id, old, new, str(at_ms)))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def change_message(community: str, record: dict[str, Any]) -> dict[str, Any]:
    """The ``segment-changed.v1`` message (``schemas/segment-changed.v1.json``)."""
    return {
        "schema_version": 1,
        "community": community,
        "member_id": record["member_id"],
        "from": record["from"],
        "to": record["to"],
        "changed_at": format_instant(int(record["at_ms"]) / 1000),
        "score_30d": int(record["score"]),
    }
