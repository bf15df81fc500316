"""Survey exports (CSV rows or JSON records) to ``feedback.submitted``.

Columns or keys read:

- ``respondent_id`` (or ``attendee_id``, ``member_id``): who; anonymous answers (no id)
  are skipped, because they cannot be credited to anyone
- ``rating`` (or ``score``, ``overall``): an integer 1..5 (``"4"`` and ``4.0`` are read
  as 4); anything else is a malformed row
- ``submitted_at`` (or ``timestamp``, ``created_at``): RFC 3339, or local time in the
  configured time zone
- optional ``session_id``/``session``, ``event``, ``community``

Free-text answers (comments) are never read. One answer per respondent and session (or
per respondent and event, without a session) is counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from streams.sources.conference import ConferenceConfig
from streams.sources.normalized import (
    Normalized,
    Outcome,
    Skipped,
    activity,
    event_id,
    first,
    guarded,
    text,
    timestamp,
)

RESPONDENT_COLUMNS: Final = ("respondent_id", "attendee_id", "member_id")
RATING_COLUMNS: Final = ("rating", "score", "overall")
SUBMITTED_COLUMNS: Final = ("submitted_at", "timestamp", "created_at")


def rating(value: object) -> int | None:
    """An integer rating 1..5 from text or a number, else None."""
    if isinstance(value, bool):
        return None
    number: float
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    if not number.is_integer() or not 1 <= number <= 5:
        return None
    return int(number)


def _value(record: Mapping[str, Any], names: tuple[str, ...]) -> object:
    for name in names:
        value = record.get(name)
        if value is not None and not (isinstance(value, str) and not value.strip()):
            return value
    return None


@guarded
def normalize_feedback(record: Mapping[str, Any], config: ConferenceConfig) -> Outcome:
    """One survey answer (a CSV row or a JSON object)."""
    if not isinstance(record, Mapping):
        return Skipped("not_an_object", "a survey answer must be an object", True)
    respondent = first(record, RESPONDENT_COLUMNS)
    if respondent is None:
        return Skipped("anonymous", "no respondent id")
    raw_rating = _value(record, RATING_COLUMNS)
    if raw_rating is None:
        return Skipped("no_rating", "the answer has no rating", True)
    score = rating(raw_rating)
    if score is None:
        return Skipped("bad_rating", f"rating must be 1..5, got {str(raw_rating)[:16]!r}", True)
    community = text(record, "community") or config.community
    if community is None:
        return Skipped("no_community", "no community column and none configured", True)
    event = text(record, "event") or config.event
    raw_time = _value(record, SUBMITTED_COLUMNS)
    occurred_at = timestamp(raw_time, config.timezone)
    if occurred_at is None:
        return Skipped("bad_timestamp", f"unusable time {str(raw_time)[:40]!r}", True)
    session = first(record, ("session_id", "session"))
    return Normalized(
        (
            activity(
                event_id=event_id("fb", event or community, respondent, session or "overall"),
                type="feedback.submitted",
                member_id=respondent,
                community=community,
                source=config.source,
                occurred_at=occurred_at,
                attributes={"rating": score, "event": event, "session": session},
            ),
        )
    )


def survey_records(document: object) -> list[object] | None:
    """The answers of a JSON survey export: a list, or ``{"responses"|"results": [...]}``."""
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        for key in ("responses", "results", "answers", "data"):
            if isinstance(document.get(key), list):
                return list(document[key])
    return None
