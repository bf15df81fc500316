"""Conference tooling exports (PyCon-style CSV) to event activity.

Check-ins and session scans come in one table, one row per badge scan:

- ``attendee_id`` (or ``attendee``, ``badge_id``, ``member_id``): who
- ``scanned_at`` (or ``checked_in_at``, ``timestamp``, ``time``): when; RFC 3339, or a
  local ``YYYY-MM-DD HH:MM[:SS]`` read in the configured time zone
- ``session_id`` (or ``session``): empty for the registration desk (``event.checkin``),
  set for a talk or tutorial room scan (``event.session_attended``)
- optional ``community`` and ``event`` columns override the configured ones

A badge scanned twice at the same session, or checked in twice on the same day, gives
the same event id, so it is counted once.

Volunteer shifts: ``volunteer_id`` (or ``attendee_id``, ``member_id``), ``shift_id``
(or ``shift``), ``role``, ``start``/``end`` (or ``starts_at``/``ends_at``,
``shift_start``/``shift_end``), and ``status`` or ``attended``: a shift marked
``no_show``/``cancelled`` (or ``attended`` false) is skipped. A shift counts at its end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import tzinfo
from typing import Final

from streams.sources.normalized import (
    Normalized,
    Outcome,
    Skipped,
    activity,
    event_id,
    first,
    guarded,
    timestamp,
)

SOURCE: Final = "conference"
ATTENDEE_COLUMNS: Final = ("attendee_id", "attendee", "badge_id", "member_id")
SCANNED_COLUMNS: Final = ("scanned_at", "checked_in_at", "timestamp", "time")
SESSION_COLUMNS: Final = ("session_id", "session")
VOLUNTEER_COLUMNS: Final = ("volunteer_id", "attendee_id", "member_id")
SHIFT_COLUMNS: Final = ("shift_id", "shift")
START_COLUMNS: Final = ("start", "starts_at", "shift_start")
END_COLUMNS: Final = ("end", "ends_at", "shift_end")
_NOT_DONE: Final = frozenset({"no_show", "no-show", "noshow", "cancelled", "canceled", "missed"})
_FALSE: Final = frozenset({"no", "false", "0", "n"})


@dataclass(frozen=True)
class ConferenceConfig:
    """The community and conference the rows belong to, unless a row says otherwise."""

    community: str | None = None
    event: str | None = None
    timezone: tzinfo | None = None
    source: str = SOURCE


def _where(row: Mapping[str, str], config: ConferenceConfig) -> tuple[str, str] | Skipped:
    community = first(row, ("community",)) or config.community
    if community is None:
        return Skipped("no_community", "no community column and none configured", True)
    event = first(row, ("event", "conference")) or config.event
    if event is None:
        return Skipped("no_event", "no event column and none configured", True)
    return community, event


@guarded
def normalize_scan(row: Mapping[str, str], config: ConferenceConfig) -> Outcome:
    """One check-in or session-scan row."""
    attendee = first(row, ATTENDEE_COLUMNS)
    if attendee is None:
        return Skipped("no_attendee", "the row has no attendee id", True)
    where = _where(row, config)
    if isinstance(where, Skipped):
        return where
    community, event = where
    raw_time = first(row, SCANNED_COLUMNS)
    occurred_at = timestamp(raw_time, config.timezone)
    if occurred_at is None:
        return Skipped("bad_timestamp", f"unusable scan time {(raw_time or '')[:40]!r}", True)
    session = first(row, SESSION_COLUMNS)
    if session is None:
        day = occurred_at[:10]  # the local calendar day of the scan
        eid = event_id("ci", event, attendee, day)
        kind, attributes = "event.checkin", {"event": event}
    else:
        eid = event_id("ss", event, attendee, session)
        kind, attributes = "event.session_attended", {"event": event, "session": session}
    return Normalized(
        (
            activity(
                event_id=eid,
                type=kind,
                member_id=attendee,
                community=community,
                source=config.source,
                channel=first(row, ("room", "track")),
                occurred_at=occurred_at,
                attributes=attributes,
            ),
        )
    )


@guarded
def normalize_shift(row: Mapping[str, str], config: ConferenceConfig) -> Outcome:
    """One volunteer-shift row."""
    volunteer = first(row, VOLUNTEER_COLUMNS)
    if volunteer is None:
        return Skipped("no_volunteer", "the row has no volunteer id", True)
    where = _where(row, config)
    if isinstance(where, Skipped):
        return where
    community, event = where
    status = (first(row, ("status",)) or "").lower()
    attended = (first(row, ("attended", "checked_in")) or "").lower()
    if status in _NOT_DONE or attended in _FALSE:
        return Skipped("shift_not_worked", status or "attended=no")
    raw_time = first(row, END_COLUMNS) or first(row, START_COLUMNS)
    occurred_at = timestamp(raw_time, config.timezone)
    if occurred_at is None:
        return Skipped("bad_timestamp", f"unusable shift time {(raw_time or '')[:40]!r}", True)
    shift = first(row, SHIFT_COLUMNS) or first(row, START_COLUMNS) or occurred_at
    return Normalized(
        (
            activity(
                event_id=event_id("vol", event, volunteer, shift),
                type="event.volunteer_shift",
                member_id=volunteer,
                community=community,
                source=config.source,
                occurred_at=occurred_at,
                attributes={"event": event, "shift": shift, "role": first(row, ("role",))},
            ),
        )
    )
