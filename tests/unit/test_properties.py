"""Property-based tests: nothing from outside makes the decoder, the normalizers or the
key layout misbehave, whatever the bytes, JSON or ids (hypothesis generates them)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.app import FaustDeadLetters
from agents.processor import DeadLetter, decode
from streams.activity import Activity, parse_activity
from streams.keys import KeyLayout, escape
from streams.sources.discord import DiscordConfig, normalize_discord
from streams.sources.discourse import DiscourseConfig, normalize_discourse
from streams.sources.github import GitHubConfig, normalize_github
from streams.sources.normalized import Normalized, Outcome, Skipped
from streams.sources.pypi import PyPIConfig, normalize_pypi
from tests.conftest import NOON, activity_dict

REASON = re.compile(r"[a-z][a-z_]{0,31}")
MAX_DETAIL = 200
# A DLQ record stays far below Kafka's 1 MiB default, whatever came in.
MAX_HEADERS = 2048
FIELDS = {*activity_dict(), "schema_version", "attributes", "attributes.rating"}

PROPERTIES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Record:
    value: bytes | None
    key: bytes | None = b"k"
    topic: str = "pulse.activity"
    partition: int = 3
    offset: int = 42
    timestamp: int = round(NOON * 1000)  # milliseconds, as Kafka gives it


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=300),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=40), inner),
    max_leaves=30,
)
# Valid events with any field replaced by anything, dropped, or joined by a stranger.
mangled_events = st.builds(
    lambda base, changes, drops: {k: v for k, v in (base | changes).items() if k not in drops},
    st.just(activity_dict()),
    st.dictionaries(st.sampled_from([*activity_dict(), "attributes", "x"]), json_values),
    st.sets(st.sampled_from(list(activity_dict()))),
)


def check_letter(decoded: Activity | DeadLetter, value: bytes) -> None:
    if isinstance(decoded, Activity):
        return
    assert REASON.fullmatch(decoded.reason), decoded.reason
    assert 0 < len(decoded.detail) <= MAX_DETAIL, decoded.detail
    if decoded.reason == "unknown_field":
        assert decoded.field is not None
        assert len(decoded.field) <= 64
    else:
        assert decoded.field is None or decoded.field in FIELDS, decoded.field
    assert decoded.value == value  # the original bytes, untouched
    assert (decoded.topic, decoded.partition, decoded.offset) == ("pulse.activity", 3, 42)
    key, body, headers = FaustDeadLetters.fit(decoded)
    assert sum(len(k) + len(v) for k, v in headers) <= MAX_HEADERS
    assert len(body) <= FaustDeadLetters.MAX_VALUE
    assert key is None or len(key) <= FaustDeadLetters.MAX_KEY


@PROPERTIES
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_become_a_dead_letter_and_never_raise(value: bytes) -> None:
    decoded = decode(Record(value), NOON, 300)
    check_letter(decoded, value)


@PROPERTIES
@given(json_values)
def test_arbitrary_json_never_raises(obj: Any) -> None:
    value = json.dumps(obj).encode()  # the standard library writes integers of any size
    check_letter(decode(Record(value), NOON, 300), value)


@PROPERTIES
@given(mangled_events)
def test_a_mangled_event_is_either_valid_or_dead_lettered_with_its_reason(
    event: dict[str, Any],
) -> None:
    value = json.dumps(event).encode()
    decoded = decode(Record(value), NOON, 300)
    check_letter(decoded, value)
    if isinstance(decoded, Activity):
        assert decoded.community == event["community"]
        assert decoded.member_id == event["member_id"]


@PROPERTIES
@given(st.binary(min_size=1, max_size=4000), st.binary(min_size=0, max_size=3000))
def test_an_oversized_or_undecodable_record_still_fits_the_dead_letter_topic(
    value: bytes, key: bytes
) -> None:
    decoded = decode(Record(value * 300, key=key * 2), NOON, 300)
    check_letter(decoded, value * 300)


def check_outcomes(outcomes: list[Outcome]) -> None:
    for outcome in outcomes:
        if isinstance(outcome, Skipped):
            assert REASON.fullmatch(outcome.reason), outcome.reason
            continue
        assert isinstance(outcome, Normalized)
        for event in outcome.events:
            # What a normalizer makes, the worker accepts.
            parse_activity(event, now=float("inf"), max_future_skew=0)


ANY = {"*": "fuzz"}


@PROPERTIES
@given(st.sampled_from(["pull_request", "issues", "issue_comment", "release", "push"]), json_values)
def test_github_normalizer_never_raises(event: str, payload: Any) -> None:
    check_outcomes([normalize_github(event, payload, GitHubConfig(ANY, releases=True), "d")])


@PROPERTIES
@given(json_values)
def test_discord_normalizer_never_raises(payload: Any) -> None:
    check_outcomes([normalize_discord(payload, DiscordConfig(ANY))])


@PROPERTIES
@given(st.sampled_from(["post_created", "topic_created", "solved"]), json_values)
def test_discourse_normalizer_never_raises(event: str, payload: Any) -> None:
    check_outcomes([normalize_discourse(event, payload, DiscourseConfig(ANY), received_at=1.7e9)])


@PROPERTIES
@given(json_values)
def test_pypi_normalizer_never_raises(payload: Any) -> None:
    check_outcomes(normalize_pypi(payload, PyPIConfig("fuzz")))


ids = st.text(min_size=1, max_size=200)


@PROPERTIES
@given(st.sampled_from(["a", "pycon-us", "b.c_d-1"]), ids, ids, ids)
def test_no_id_can_name_a_key_outside_its_community(
    community: str, member: str, channel: str, event_id: str
) -> None:
    layout = KeyLayout("pulse", community)
    keys = [
        layout.member(member),
        layout.member_days(member),
        layout.seen(event_id),
        layout.leaderboard("week", "2026-W48", channel),
        layout.badge_counters(member),
        layout.member_badges(member),
    ]
    for key in keys:
        assert key.startswith(f"pulse:{{{community}}}:")
        assert key.count("{") == 1
        assert key.count("}") == 1
        assert "\n" not in key
        assert "*" not in key
    # The member's own keys are exactly the ones starting with its escaped name.
    assert layout.member(member).split(":")[3] == escape(member)
    assert re.fullmatch(r"[A-Za-z0-9_.~%-]+", escape(member))


@PROPERTIES
@given(ids, ids)
def test_distinct_ids_give_distinct_keys(first: str, second: str) -> None:
    layout = KeyLayout("pulse", "c")
    if first != second:
        assert layout.member(first) != layout.member(second)
        assert layout.member_days(first) != layout.member(second)
        assert layout.seen(first) != layout.seen(second)
