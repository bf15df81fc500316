"""The activity contract: every field rule, good and bad, and agreement with the schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from streams.activity import ACTIVITY_TYPES, InvalidActivity, parse_activity
from tests.conftest import NOON, activity_dict

SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "activity.v1.json").read_text())


def parse(obj: Any) -> Any:
    return parse_activity(obj, now=NOON, max_future_skew=300)


def test_valid_event_round_trips_every_field() -> None:
    activity = parse(activity_dict(attributes={"rating": 5, "event": "pycon-2026"}))
    assert activity.event_id == "evt-1"
    assert activity.type == "chat.message"
    assert activity.member_id == "alice"
    assert activity.community == "pycon-us"
    assert activity.source == "discord"
    assert activity.channel == "general"
    assert activity.occurred_at == NOON - 60
    assert activity.attributes == {"rating": 5, "event": "pycon-2026"}


@pytest.mark.parametrize("kind", ACTIVITY_TYPES)
def test_every_activity_type_is_accepted(kind: str) -> None:
    assert parse(activity_dict(type=kind)).type == kind


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-11-25T11:59:00Z", NOON - 60),
        ("2026-11-25T11:59:00z", NOON - 60),
        ("2026-11-25T12:59:00+01:00", NOON - 60),
        ("2026-11-25T06:29:00-05:30", NOON - 60),
        ("2026-11-25T11:59:00.250Z", NOON - 59.75),
        ("2026-11-25 11:59:00Z", NOON - 60),
    ],
)
def test_timestamps_with_offsets_convert_to_utc(stamp: str, expected: float) -> None:
    assert parse(activity_dict(occurred_at=stamp)).occurred_at == pytest.approx(expected)


GOOD_OPTIONAL = [
    {"channel": None},
    {"channel": ...},
    {"attributes": None},
    {"attributes": {}},
    {"schema_version": 1},
    {"event_id": "x" * 128},
    {"member_id": "m" * 128},
    {"member_id": "Ünïcødé member"},
    {"community": "a"},
    {"community": "a" * 64},
    {"community": "py.data_science-2"},
    {"attributes": {"rating": 1}},
    {"attributes": {"rating": 5, "thread_id": "t1", "content_hash": "ab12"}},
    {"attributes": {"rating": 5.0}},
    {"attributes": {"thread_id": 1234, "reply_to": "1234/2", "event": "pycon-us-2026"}},
]


@pytest.mark.parametrize("change", GOOD_OPTIONAL)
def test_optional_and_boundary_values_are_accepted(change: dict[str, Any]) -> None:
    parse(activity_dict(**change))


BAD = [
    ({"event_id": ...}, "missing_field", "event_id"),
    ({"type": ...}, "missing_field", "type"),
    ({"member_id": ...}, "missing_field", "member_id"),
    ({"community": ...}, "missing_field", "community"),
    ({"source": ...}, "missing_field", "source"),
    ({"occurred_at": ...}, "missing_field", "occurred_at"),
    ({"event_id": None}, "missing_field", "event_id"),
    ({"event_id": ""}, "empty_field", "event_id"),
    ({"event_id": "x" * 129}, "too_long", "event_id"),
    ({"event_id": 42}, "wrong_type", "event_id"),
    ({"event_id": "a\nb"}, "bad_characters", "event_id"),
    ({"type": "chat.shout"}, "unknown_type", "type"),
    ({"type": ["chat.message"]}, "wrong_type", "type"),
    ({"member_id": ""}, "empty_field", "member_id"),
    ({"member_id": "m" * 129}, "too_long", "member_id"),
    ({"member_id": "bob\x00"}, "bad_characters", "member_id"),
    ({"member_id": 7}, "wrong_type", "member_id"),
    ({"community": "PyCon"}, "bad_community", "community"),
    ({"community": "-pycon"}, "bad_community", "community"),
    ({"community": "a" * 65}, "bad_community", "community"),
    ({"community": "py{con}"}, "bad_community", "community"),
    ({"community": "py:con"}, "bad_community", "community"),
    ({"community": ""}, "bad_community", "community"),
    ({"source": "Discord!"}, "bad_source", "source"),
    ({"source": 1}, "wrong_type", "source"),
    ({"channel": ""}, "empty_field", "channel"),
    ({"channel": "c" * 129}, "too_long", "channel"),
    ({"channel": 3}, "wrong_type", "channel"),
    ({"occurred_at": "2026-11-25T11:59:00"}, "bad_timestamp", "occurred_at"),
    ({"occurred_at": "2026-11-25"}, "bad_timestamp", "occurred_at"),
    ({"occurred_at": "yesterday"}, "bad_timestamp", "occurred_at"),
    ({"occurred_at": "2026-02-30T00:00:00Z"}, "bad_timestamp", "occurred_at"),
    ({"occurred_at": 1795608000}, "wrong_type", "occurred_at"),
    ({"occurred_at": "2026-11-25T12:05:01Z"}, "in_future", "occurred_at"),
    ({"attributes": []}, "wrong_type", "attributes"),
    ({"attributes": {"rating": 0}}, "out_of_range", "attributes.rating"),
    ({"attributes": {"rating": 6}}, "out_of_range", "attributes.rating"),
    ({"attributes": {"rating": "5"}}, "out_of_range", "attributes.rating"),
    ({"attributes": {"rating": True}}, "out_of_range", "attributes.rating"),
    ({"attributes": {"rating": 4.5}}, "out_of_range", "attributes.rating"),
    ({"attributes": {"thread_id": 1.5}}, "wrong_type", "attributes.thread_id"),
    ({"attributes": {"thread_id": True}}, "wrong_type", "attributes.thread_id"),
    ({"attributes": {"reply_to": ["a"]}}, "wrong_type", "attributes.reply_to"),
    ({"attributes": {"event": 2026}}, "wrong_type", "attributes.event"),
    ({"attributes": {"content_hash": {"sha": 1}}}, "wrong_type", "attributes.content_hash"),
    ({"attributes": {f"k{i}": i for i in range(33)}}, "too_long", "attributes"),
    ({"schema_version": 2}, "unsupported_version", "schema_version"),
    ({"points": 1000}, "unknown_field", "points"),
]


@pytest.mark.parametrize(("change", "reason", "field"), BAD)
def test_each_field_rule_rejects_with_reason_and_field(
    change: dict[str, Any], reason: str, field: str
) -> None:
    with pytest.raises(InvalidActivity) as caught:
        parse(activity_dict(**change))
    assert (caught.value.reason, caught.value.field) == (reason, field)
    assert caught.value.detail


@pytest.mark.parametrize("value", [None, [], "text", 3, 2.5, True])
def test_non_objects_are_rejected(value: Any) -> None:
    with pytest.raises(InvalidActivity) as caught:
        parse(value)
    assert caught.value.reason == "not_an_object"


def test_future_skew_is_measured_from_the_given_clock() -> None:
    event = activity_dict(occurred_at="2026-11-25T12:05:00Z")
    parse_activity(event, now=NOON, max_future_skew=300)
    with pytest.raises(InvalidActivity):
        parse_activity(event, now=NOON, max_future_skew=299)


SCHEMA_CASES = [change for change in GOOD_OPTIONAL] + [
    change
    for change, reason, _ in BAD
    # The schema cannot express the clock or calendar validity; the model adds them.
    if reason not in ("in_future",) and change.get("occurred_at") != "2026-02-30T00:00:00Z"
]


@pytest.mark.parametrize("change", SCHEMA_CASES)
def test_schema_and_model_agree(change: dict[str, Any]) -> None:
    event = activity_dict(**change)
    schema_ok = jsonschema.Draft202012Validator(SCHEMA).is_valid(event)
    try:
        parse(event)
        model_ok = True
    except InvalidActivity:
        model_ok = False
    assert schema_ok == model_ok


def test_an_integral_float_rating_counts_as_the_integer() -> None:
    # JSON Schema calls 5.0 an integer; the feedback gauges must count it as 5.
    activity = parse(activity_dict(type="feedback.submitted", attributes={"rating": 5.0}))
    assert activity.attributes == {"rating": 5}
    assert isinstance(activity.attributes["rating"], int)
