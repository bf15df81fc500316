"""Property-based tests: nothing from outside makes the decoder, the normalizers or the
key layout misbehave, whatever the bytes, JSON or ids; and the worker's batched,
crash-prone, redelivered processing ends where a one-at-a-time replay of the events
does (hypothesis generates them)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from agents.app import FaustDeadLetters
from agents.metrics import PulseMetrics
from agents.processor import ActivityProcessor, DeadLetter, decode
from agents.settings import Settings
from agents.writer import Fenced
from streams.activity import Activity, parse_activity, parse_timestamp
from streams.keys import KeyLayout, escape, partition_field
from streams.periods import format_instant
from streams.replay import Replay
from streams.sources.discord import DiscordConfig, normalize_discord
from streams.sources.discourse import DiscourseConfig, normalize_discourse
from streams.sources.github import GitHubConfig, normalize_github
from streams.sources.normalized import Normalized, Outcome, Skipped
from streams.sources.pypi import PyPIConfig, normalize_pypi
from tests.conftest import NOON, activity_dict
from tests.unit.fakes import TOPIC, FakeDeadLetters, FakeRecord, FakeSink, FakeWriter, sinks

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
        layout.thread("forum", event_id),
        layout.leaderboard("week", "2026-W48", channel),
        layout.member_ids(member, 20_000),
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
        assert layout.thread("forum", first) != layout.thread("forum", second)
        assert layout.member_ids(first, 1) != layout.member_ids(second, 1)
        assert layout.leaderboard("day", "d", first) != layout.leaderboard("day", "d", second)


# -- the worker's result is the replay's, whatever the batching, crashes and redeliveries --

COMMUNITIES = ("pycon-us", "django")
MEMBERS = ("alice", "bob", "carol")
CHANNELS = ("general", "help", "random")
TYPES = (
    *("chat.message",) * 5,
    "github.pr_merged",
    "github.review_submitted",
    "event.volunteer_shift",
    "event.session_attended",
    "forum.answer_accepted",
    "forum.post",
    "forum.reply",
    "feedback.submitted",
)
PARTITIONS = [(TOPIC, 0), (TOPIC, 1)]
# 70 days of history: long enough for scores to age out and segments to fall, short of
# the (raised) dedupe memory, so a re-sent event id is always a duplicate. Events bunch
# on some days, so that bursts and streaks happen.
START = NOON - 75 * 86400
DAYS = (*range(0, 10), *range(10, 71, 5))
ENGINE_ENV = {
    "PULSE_DEDUPE_TTL_DAYS": "365",
    "PULSE_FLOOD_MESSAGES": "3",
    "PULSE_SEGMENT_INTERMEDIATE_POINTS": "5",
    "PULSE_SEGMENT_ADVANCED_POINTS": "30",
    "PULSE_SEGMENT_DOWNGRADE_GRACE_DAYS": "1",
    "PULSE_BATCH_SIZE": "1",
}

new_events = st.tuples(
    st.sampled_from(range(len(COMMUNITIES))),
    st.sampled_from(range(len(MEMBERS))),
    st.sampled_from(TYPES),
    st.sampled_from(DAYS),
    st.integers(0, 240),  # the second of that day
    st.sampled_from(CHANNELS),
    st.sampled_from([None, "same-text", "other-text"]),
).map(lambda spec: ("new", spec))
# A member's chat messages seconds apart: in one channel (a flood) or going round the
# channels (with a content hash, a cross-post).
bursts = st.tuples(
    st.sampled_from(range(len(COMMUNITIES))),
    st.sampled_from(range(len(MEMBERS))),
    st.sampled_from(DAYS),
    st.integers(0, 240),
    st.integers(2, 6),
    st.booleans(),
    st.sampled_from([None, "same-text"]),
).map(lambda spec: ("burst", spec))
histories = st.lists(
    st.one_of(
        new_events,
        new_events,
        new_events,
        bursts,
        st.integers(0, 1000).map(lambda earlier: ("again", earlier)),  # the producer resent it
        st.just(("junk", None)),
    ),
    min_size=8,
    max_size=40,
)
# Per batch: its size, whether (and where) the worker dies, and how far before the
# records of the batch the next worker resumes (its committed offsets lag).
steps = st.lists(
    st.tuples(
        st.integers(1, 8),
        st.sampled_from([None, None, None, "before_write", "before_publish", "after", "zombie"]),
        st.integers(0, 10),
    ),
    min_size=2,
    max_size=12,
)


def event_of(
    event_id: str,
    community: int,
    member: int,
    kind: str,
    at: float,
    channel: str,
    text: str | None,
) -> dict[str, Any]:
    event = activity_dict(
        event_id=event_id,
        type=kind,
        member_id=MEMBERS[member],
        community=COMMUNITIES[community],
        channel=channel if kind == "chat.message" else ...,
        occurred_at=datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    attributes = {
        "chat.message": {"content_hash": text},
        "event.session_attended": {"event": text},
        "forum.post": {"thread_id": text},
        "forum.reply": {"thread_id": text},
        "feedback.submitted": {"rating": 4},
    }.get(kind)
    if attributes and None not in attributes.values():
        event["attributes"] = attributes
    return event


def history_records(history: list[tuple[str, Any]]) -> tuple[list[FakeRecord], list[Activity]]:
    """The history as records (a member's events on one partition, offsets counting up),
    and its distinct events in order."""
    records: list[FakeRecord] = []
    sent: list[dict[str, Any]] = []
    offsets = [0] * len(PARTITIONS)

    def send(value: bytes, partition: int, timestamp: int = 0) -> None:
        records.append(FakeRecord(value, None, TOPIC, partition, offsets[partition], timestamp))
        offsets[partition] += 1

    def send_event(event: dict[str, Any]) -> None:
        # Received when it happened (what the replay assumes of events without a receipt).
        received = round(parse_timestamp(event["occurred_at"]) * 1000)
        send(orjson.dumps(event), MEMBERS.index(event["member_id"]) % len(PARTITIONS), received)

    for index, (kind, spec) in enumerate(history):
        if kind == "new":
            community, member, kind, day, second, channel, text = spec
            at = START + day * 86400 + second
            sent.append(event_of(f"e{index}", community, member, kind, at, channel, text))
            send_event(sent[-1])
        elif kind == "burst":
            community, member, day, second, count, rotate, text = spec
            for n in range(count):
                at = START + day * 86400 + second + 5 * n
                channel = CHANNELS[n % len(CHANNELS)] if rotate else CHANNELS[0]
                sent.append(
                    event_of(f"e{index}.{n}", community, member, "chat.message", at, channel, text)
                )
                send_event(sent[-1])
        elif kind == "again" and sent:
            send_event(sent[spec % len(sent)])
        elif kind == "junk":
            send(b"nope", index % len(PARTITIONS))
    distinct = [parse_activity(e, now=NOON, max_future_skew=0) for e in sent]
    return records, distinct


async def run_with_crashes(
    engine: Settings,
    writer: FakeWriter,
    outputs: dict[str, FakeSink],
    records: list[FakeRecord],
    plan: list[tuple[int, str | None, int]],
) -> None:
    """Feed ``records`` in batches; at each planned crash a new worker takes over from
    an earlier position (re-reading records whose offsets may be recorded already)."""

    async def start() -> ActivityProcessor:
        processor = ActivityProcessor(
            engine,
            writer,
            FakeDeadLetters(),
            PulseMetrics(CollectorRegistry()),
            outputs,
            clock=lambda: NOON,
        )
        await processor.assign(PARTITIONS)
        await processor.drain_outboxes()
        return processor

    processor = await start()
    position, steps_left = 0, iter(plan)
    while position < len(records):
        size, crash, back = next(steps_left, (5, None, 0))
        end = min(len(records), position + size)
        prepared = await processor.prepare(records[position:end])
        if crash == "zombie":
            # The old worker lives on unnoticed: the new one takes over, reads a batch,
            # and the old one's write comes late (refused where the new one claimed).
            zombie, processor = processor, await start()
            position = max(0, position - back)
            following = min(len(records), position + size)
            await processor.process(records[position:following])
            position = following
            with contextlib.suppress(Fenced):
                # Refused where the new owner claimed; what it wrote elsewhere it publishes.
                await zombie.apply(prepared)
            continue
        if crash == "before_write":
            processor, position = await start(), max(0, position - back)
            continue
        recorded = await processor.record(prepared)
        if crash == "before_publish":
            processor, position = await start(), max(0, position - back)
            continue
        await processor.publish(recorded)
        position = end
        if crash == "after":
            processor, position = await start(), max(0, position - back)


def valid(record: FakeRecord) -> Activity | None:
    decoded = decode(record, NOON, 0)
    return decoded if isinstance(decoded, Activity) else None


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories, steps, st.sampled_from([4, 50_000]))
def test_batched_crashing_redelivering_worker_ends_where_a_replay_of_the_events_does(
    history: list[tuple[str, Any]], plan: list[tuple[int, str | None, int]], cache: int
) -> None:
    """Whatever the batches, crashes (before the write, before publishing, after, or a
    zombie writing late), redeliveries and cache size: the stored member states, the
    recorded awards, flags and segment changes and the counters are those of evaluating
    the distinct events one at a time; every output is published; every offset recorded."""
    engine = Settings.from_env(ENGINE_ENV, state_cache_members=cache)
    records, distinct = history_records(history)
    writer, outputs = FakeWriter(), sinks()
    writer.retention_seconds = engine.retention.dedupe_seconds
    asyncio.run(run_with_crashes(engine, writer, outputs, records, plan))

    replay = Replay(engine.policy)
    replay.feed(distinct)
    assert writer.states() == replay.states
    for community, writes in replay.writes.items():
        layout = KeyLayout("pulse", community)
        for records_key, outbox, fired in (
            (layout.awards(), layout.award_outbox(), writes.awards),
            (layout.flags(), layout.flag_outbox(), writes.flags),
            (layout.segment_changes(), layout.segment_outbox(), writes.changes),
        ):
            assert writer.recorded(records_key) == dict(fired)
            assert not writer.zsets.get(outbox)
        # Increments are applied exactly once.
        assert writer.hashes.get(layout.counts(), {}) == {
            kind: str(n) for kind, n in writes.hincr.get(layout.counts(), {}).items()
        }
        # So are leaderboard points, whether a batch sent them as increments or as the
        # scores the worker knew (learnt from a reply, or none for a new member).
        assert {
            key: {m: int(score) for m, score in writer.zsets.get(key, {}).items()}
            for key in writes.zincr
        } == writes.zincr
        # Each partition's recorded offset is its last record of the community.
        for topic, partition in PARTITIONS:
            last = max(
                (
                    r.offset
                    for r, a in zip(records, map(valid, records), strict=True)
                    if a is not None and a.community == community and r.partition == partition
                ),
                default=None,
            )
            fence = writer.fence(layout, partition_field(topic, partition))
            assert (fence.offset if fence is not None and fence.offset >= 0 else None) == last
    # Everything recorded was published (at least once), and nothing else.
    published = {m["award_id"] for m in outputs["awards"].messages}
    assert published == {i for _, i, _ in replay.awards()}
    assert {m["flag_id"] for m in outputs["flags"].messages} == {
        i for w in replay.writes.values() for i, _ in w.flags
    }
    assert {
        (m["community"], m["member_id"], m["to"], m["changed_at"])
        for m in outputs["segments"].messages
    } == {
        (c, r["member_id"], r["to"], format_instant(r["at_ms"] / 1000))
        for c, w in replay.writes.items()
        for _, r in w.changes
    }
