"""Badges on the real stack: each default badge earned (and near misses not), award
messages consumed as a downstream service would, schema-valid, exactly once across a
full replay and a worker restart."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import orjson

from streams.badges import award_id
from streams.periods import format_instant
from tests.conftest import activity_dict
from tests.integration.conftest import Sandbox, Worker, metric_value, wait_for

SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "badge-awarded.v1.json").read_text())
DAY = 86400.0


def scenario(now: float) -> tuple[list[dict[str, Any]], set[tuple[str, str, str | None]]]:
    """Events that earn every default badge once, near misses that earn nothing, and the
    exact set of expected awards."""
    base = now - 20 * DAY
    events: list[dict[str, Any]] = []

    def add(
        member: str,
        kind: str,
        count: int,
        *,
        spacing: float = 60.0,
        start: float = base,
        **extra: Any,
    ) -> None:
        for i in range(count):
            events.append(
                activity_dict(
                    event_id=f"{member}-{kind}-{len(events)}",
                    member_id=member,
                    type=kind,
                    occurred_at=format_instant(start + i * spacing),
                    **extra,
                )
            )

    add("merger", "github.pr_merged", 2)
    add("opener", "github.pr_opened", 3)  # near miss for first-merge
    add("helper", "forum.answer_accepted", 25)  # bronze and silver
    add("almost-helper", "forum.answer_accepted", 4)
    add("reviewer", "github.review_submitted", 10)
    add("almost-reviewer", "github.review_submitted", 9)
    for day in range(5):
        add("chatty", "chat.message", 10, start=base + day * DAY)
    for day in range(4):
        add("chatty-4-days", "chat.message", 13, start=base + day * DAY)
    add("regular", "github.comment", 7, spacing=DAY)
    add("almost-regular", "github.comment", 6, spacing=DAY)
    add("goer", "event.session_attended", 3, attributes={"event": "pycon-2026"})
    add("hopper", "event.session_attended", 2, attributes={"event": "pycon-2026"})
    add(
        "hopper",
        "event.session_attended",
        2,
        start=base + 600,
        attributes={"event": "djangocon-2026"},
    )
    add("crew", "event.volunteer_shift", 2)
    add("voice", "feedback.submitted", 1, attributes={"rating": 5})
    add("visitor", "event.checkin", 1)
    expected = {
        ("merger", "first-merge", None),
        ("helper", "helper", "bronze"),
        ("helper", "helper", "silver"),
        ("reviewer", "reviewer", "bronze"),
        ("chatty", "conversationalist", None),
        ("regular", "regular", None),
        ("goer", "session-goer", None),
        ("crew", "event-crew", None),
        ("voice", "voice", None),
    }
    return events, expected


def award_messages(sandbox: Sandbox, expected: int) -> list[Any]:
    return sandbox.read_topic(sandbox.awards_topic, expected=expected, timeout=30)


def test_each_badge_is_awarded_once_across_replay_and_restart(
    sandbox: Sandbox,
    start_worker: Callable[[], Worker],
) -> None:
    worker = start_worker()
    events, expected = scenario(time.time())
    sandbox.send_events(events)
    wait_for(
        lambda: metric_value(sandbox.metrics(), "pulse_community_events_total") == len(events),
        90,
        "every event to be processed",
    )

    records = award_messages(sandbox, len(expected))
    messages = [orjson.loads(r.value) for r in records]
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for record, message in zip(records, messages, strict=True):
        assert list(validator.iter_errors(message)) == []
        assert record.key == message["member_id"].encode()
        assert message["award_id"] == award_id(
            "pycon-us", message["member_id"], message["badge"], message["tier"]
        )
    assert {(m["member_id"], m["badge"], m["tier"]) for m in messages} == expected
    assert len(messages) == len(expected)

    # One key per member keeps a member's events in order: silver is the 25th answer.
    helper_events = [e for e in events if e["member_id"] == "helper"]
    silver = next(m for m in messages if m["tier"] == "silver")
    assert silver["evidence"] == [helper_events[24]["event_id"]]
    assert silver["awarded_at"] == helper_events[24]["occurred_at"]
    assert silver["badge_name"] == "Helper"
    assert sum(
        metric_value(sandbox.metrics(), "pulse_community_badges_awarded_total", badge=b)
        for b in {b for _, b, _ in expected}
    ) == len(expected)

    # The same events again, then a fresh worker process on the same group.
    sandbox.send_events(events)
    wait_for(
        lambda: (
            metric_value(sandbox.metrics(), "pulse_community_events_duplicate_total") == len(events)
        ),
        90,
        "the replay to be recognised",
    )
    worker.stop()
    second = start_worker()
    sandbox.send_events(events[:50])
    wait_for(
        lambda: metric_value(sandbox.metrics(), "pulse_community_events_duplicate_total") == 50,
        90,
        "the restarted worker to see the redelivered events",
    )
    assert second.process.poll() is None
    again = award_messages(sandbox, len(expected) + 1)
    assert len(again) == len(expected)

    cli = sandbox.pulse("awards", "--community", "pycon-us", "--json")
    listed = json.loads(cli.stdout)["awards"]
    assert {(a["member_id"], a["badge"], a["tier"]) for a in listed} == expected
    assert all(a["published"] for a in listed)
    member = json.loads(
        sandbox.pulse("member", "helper", "--community", "pycon-us", "--json").stdout
    )
    assert [(b["badge"], b["tier"]) for b in member["badges"]] == [
        ("helper", "bronze"),
        ("helper", "silver"),
    ]
    text = sandbox.pulse("member", "helper", "--community", "pycon-us").stdout
    assert "  badges  helper bronze, helper silver\n" in text
    assert f"  segment {member['segment']} (30-day score {member['segment_score_30d']})" in text
