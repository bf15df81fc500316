"""Conference exports: badge scans, volunteer shifts and survey answers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta, timezone
from typing import Any

import pytest

from streams.sources.conference import ConferenceConfig, normalize_scan, normalize_shift
from streams.sources.feedback import normalize_feedback, rating, survey_records
from streams.sources.normalized import Skipped, Tally, table_rows
from tests.unit.sources.conftest import events_of, skipped

EASTERN = timezone(timedelta(hours=-4))
CONFIG = ConferenceConfig(community="pycon-us", event="pycon-us-2026", timezone=EASTERN)


def rows(text: str) -> list[tuple[int, dict[str, str]]]:
    return list(table_rows(text.splitlines(keepends=True)))


def test_scans_become_checkins_and_sessions_and_repeats_share_an_id(
    fixture_text: Callable[[str], str],
) -> None:
    outcomes = [
        (line, normalize_scan(row, CONFIG)) for line, row in rows(fixture_text("checkins.csv"))
    ]
    events = [e for _, o in outcomes for e in events_of(o)]
    assert [e["type"] for e in events] == [
        "event.checkin",
        "event.session_attended",
        "event.session_attended",
        "event.checkin",
        "event.checkin",
    ]
    first, talk, same_talk, other_desk, next_day = events
    assert first["member_id"] == "A-1001"
    assert first["occurred_at"] == "2025-05-15T08:12:04-04:00"
    assert first["attributes"] == {"event": "pycon-us-2026"}
    assert talk["attributes"] == {"event": "pycon-us-2026", "session": "talk-lightning-1"}
    assert talk["channel"] == "Hall A"
    assert talk["event_id"] == same_talk["event_id"]  # scanned twice, counted once
    assert other_desk["event_id"] != next_day["event_id"]  # one check-in per day
    problems = {line: o for line, o in outcomes if isinstance(o, Skipped)}
    assert {line: o.reason for line, o in problems.items()} == {
        7: "no_attendee",
        8: "bad_timestamp",
    }
    assert all(o.malformed for o in problems.values())


def test_naive_times_need_a_time_zone() -> None:
    [(_, row)] = rows("attendee_id,scanned_at\nA-1,2025-05-15 08:00\n")
    out = skipped(normalize_scan(row, ConferenceConfig(community="c", event="e")))
    assert out.reason == "bad_timestamp"


def test_community_and_event_can_come_from_columns() -> None:
    [(_, row)] = rows(
        "attendee_id,scanned_at,community,event\nA-1,2025-05-15T08:00:00Z,pyohio,pyohio-2026\n"
    )
    [out] = events_of(normalize_scan(row, ConferenceConfig()))
    assert (out["community"], out["attributes"]["event"]) == ("pyohio", "pyohio-2026")
    assert skipped(normalize_scan({"attendee_id": "A", "scanned_at": "x"}, ConferenceConfig()))


def test_volunteer_shifts_count_at_their_end_and_no_shows_are_skipped(
    fixture_text: Callable[[str], str],
) -> None:
    outcomes = [normalize_shift(row, CONFIG) for _, row in rows(fixture_text("volunteers.csv"))]
    worked, no_show, open_ended = outcomes
    [event] = events_of(worked)
    assert event["type"] == "event.volunteer_shift"
    assert event["occurred_at"] == "2025-05-15T12:00:00-04:00"
    assert event["attributes"] == {
        "event": "pycon-us-2026",
        "shift": "reg-desk-fri-am",
        "role": "registration",
    }
    assert skipped(no_show).reason == "shift_not_worked"
    assert events_of(open_ended)[0]["occurred_at"] == "2025-05-16T07:30:00-04:00"


def test_survey_answers_keep_the_rating_and_drop_the_comment(
    fixture_text: Callable[[str], str],
) -> None:
    outcomes = [normalize_feedback(r, CONFIG) for _, r in rows(fixture_text("feedback.csv"))]
    tally = Tally()
    for outcome in outcomes:
        tally.add(outcome)
    session, overall = events_of(outcomes[0]), events_of(outcomes[1])
    assert session[0]["attributes"] == {
        "rating": 5,
        "event": "pycon-us-2026",
        "session": "talk-lightning-1",
    }
    assert overall[0]["attributes"]["rating"] == 4
    assert "typing" not in repr(session)
    assert tally.events == {"feedback.submitted": 2}
    assert tally.skipped == {"anonymous": 1}
    assert tally.malformed == {"bad_rating": 1, "no_rating": 1}


def test_json_survey_exports() -> None:
    answers = [{"member_id": "m1", "score": 3, "timestamp": "2025-05-16T10:00:00Z"}]
    assert survey_records({"responses": answers}) == answers
    assert survey_records(answers) == answers
    assert survey_records({"unexpected": 1}) is None
    [event] = events_of(normalize_feedback(answers[0], CONFIG))
    assert event["attributes"]["rating"] == 3


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5, 5), ("4", 4), (" 3 ", 3), (2.0, 2), ("1.0", 1), (0, None), (6, None), (4.5, None)]
    + [(True, None), ("five", None), (None, None), ([], None)],
)
def test_rating_parsing(value: Any, expected: int | None) -> None:
    assert rating(value) == expected


def test_table_rows_fold_headers_skip_blank_lines_and_track_line_numbers() -> None:
    text = '\ufeffAttendee ID,Scanned At\n\nA-1,"2025-05-15\n08:00"\nA-2,x\n'
    assert rows(text) == [
        (3, {"attendee_id": "A-1", "scanned_at": "2025-05-15\n08:00"}),
        (5, {"attendee_id": "A-2", "scanned_at": "x"}),
    ]
