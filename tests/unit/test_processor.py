"""The batch pipeline with hand-written fakes for Redis and the DLQ (no servers)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import redis
from prometheus_client import CollectorRegistry

from agents.metrics import PulseMetrics
from agents.processor import ActivityProcessor, DeadLetter
from agents.settings import Settings
from streams.effects import Applied, CommunityPlan
from streams.keys import KeyLayout
from streams.ledger import MemoryLedger
from tests.conftest import NOON


@dataclass
class FakeRecord:
    value: bytes | None
    key: bytes | None = b"k"
    topic: str = "pulse.activity"
    partition: int = 0
    offset: int = 0
    timestamp: int = round((NOON - 1) * 1000)  # milliseconds, as Kafka gives it


class FakeWriter:
    """The Lua semantics via MemoryLedger, outboxes as dicts, and N injected Redis failures."""

    def __init__(self, failures: int = 0, lost_replies: int = 0) -> None:
        self.ledger = MemoryLedger()
        self.lost_replies = lost_replies
        self.stored: dict[tuple[str, str], dict[str, Any]] = {}
        self.outboxes: dict[str, list[str]] = {}
        self.known: set[str] = set()
        self.failures = failures
        self.calls = 0

    def encode(self, plan: CommunityPlan) -> list[str | int]:
        return plan.arguments()

    async def apply(
        self, plans: Sequence[CommunityPlan], encoded: Sequence[Any] | None = None
    ) -> list[Applied]:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise redis.exceptions.ConnectionError("Redis is down")
        results = self.ledger.apply(plans)
        for plan, result in zip(plans, results, strict=True):
            for award in self.ledger.awards:
                if award.award_id in result.awards:
                    self.stored[(plan.layout.awards(), award.award_id)] = {
                        "member_id": award.member_id,
                        "badge": award.badge,
                        "tier": award.tier or "",
                        "at_ms": award.at_ms,
                        "evidence": award.evidence,
                    }
                    self.outboxes.setdefault(plan.layout.award_outbox(), []).append(award.award_id)
        if self.lost_replies:
            # Applied, but the reply never reaches the worker.
            self.lost_replies -= 1
            raise redis.exceptions.TimeoutError("Timeout reading from socket")
        return results

    async def pending(self, outbox_key: str, limit: int = 1000) -> list[str]:
        return self.outboxes.get(outbox_key, [])[:limit]

    async def records(
        self, wanted: Sequence[tuple[str, Sequence[str]]]
    ) -> list[list[tuple[str, Any]]]:
        return [
            [(i, self.stored[(key, i)]) for i in ids if (key, i) in self.stored]
            for key, ids in wanted
        ]

    async def confirm(self, confirmed: Sequence[tuple[str, str]]) -> None:
        for outbox_key, identity in confirmed:
            self.outboxes[outbox_key].remove(identity)

    async def communities(self) -> list[str]:
        return sorted(self.known)

    async def remember_communities(self, communities: Sequence[str]) -> None:
        self.known.update(communities)

    async def sweep_segments(self, layout: KeyLayout, policy: Any, now: float) -> list[str]:
        return []

    def pending_count(self) -> int:
        return sum(len(ids) for ids in self.outboxes.values())


class FakeAwards:
    def __init__(self, fail_with: Exception | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.fail_with = fail_with

    async def publish(self, messages: Sequence[dict[str, Any]]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.messages.extend(messages)


def sinks(awards: FakeAwards) -> dict[str, FakeAwards]:
    """Awards go to ``awards``; flags and segment changes to sinks of their own."""
    return {"awards": awards, "flags": FakeAwards(), "segments": FakeAwards()}


class FakeDeadLetters:
    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def publish(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)


def sample(metrics: PulseMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def run(processor: ActivityProcessor, records: list[FakeRecord]) -> Any:
    return asyncio.run(processor.process(records))


@pytest.fixture
def parts() -> tuple[FakeWriter, FakeDeadLetters, PulseMetrics]:
    return FakeWriter(), FakeDeadLetters(), PulseMetrics(CollectorRegistry())


def make(parts: tuple[FakeWriter, FakeDeadLetters, PulseMetrics]) -> ActivityProcessor:
    writer, letters, metrics = parts
    return processor_for(writer, letters=letters, metrics=metrics)


def processor_for(
    writer: FakeWriter,
    *,
    letters: FakeDeadLetters | None = None,
    metrics: PulseMetrics | None = None,
    awards: FakeAwards | None = None,
) -> ActivityProcessor:
    """A processor on the fakes, default settings, the clock at NOON."""
    return ActivityProcessor(
        Settings.from_env({}),
        writer,
        letters if letters is not None else FakeDeadLetters(),
        metrics if metrics is not None else PulseMetrics(CollectorRegistry()),
        sinks(awards if awards is not None else FakeAwards()),
        clock=lambda: NOON,
    )


def test_valid_invalid_and_repeated_records(
    parts: tuple[FakeWriter, FakeDeadLetters, PulseMetrics],
    make_event: Callable[..., dict[str, Any]],
) -> None:
    _, letters, metrics = parts
    processor = make(parts)
    good = orjson.dumps(make_event())
    records = [
        FakeRecord(good, offset=0),
        FakeRecord(b"nope", offset=1),
        FakeRecord(None, offset=2),
        FakeRecord(good, offset=3),
    ]
    outcome = run(processor, records)
    assert (outcome.applied, outcome.invalid, outcome.duplicates) == (1, 2, 1)
    assert [(letter.reason, letter.offset, letter.value) for letter in letters.letters] == [
        ("invalid_json", 1, b"nope"),
        ("invalid_json", 2, b""),
    ]
    assert (
        sample(metrics, "pulse_events_processed_total", community="pycon-us", type="chat.message")
        == 1
    )
    assert sample(metrics, "pulse_events_invalid_total", reason="invalid_json") == 2
    assert sample(metrics, "pulse_events_duplicate_total", community="pycon-us") == 1
    assert sample(metrics, "pulse_processing_latency_seconds_sum") == pytest.approx(1.0)

    again = run(processor, [FakeRecord(good)])
    assert (again.applied, again.duplicates) == (0, 1)
    assert sample(metrics, "pulse_events_duplicate_total", community="pycon-us") == 2


def test_preparing_cooperatively_hands_back_the_loop_and_prepares_the_same_batch(
    make_event: Callable[..., dict[str, Any]],
) -> None:
    records = [
        FakeRecord(
            orjson.dumps(
                make_event(
                    event_id=f"e{i}",
                    community=("pycon-us", "django")[i % 2],
                    member_id=f"m{i % 7}",
                )
            )
            if i % 10
            else b"nope",
            offset=i,
        )
        for i in range(100)
    ]
    processor = processor_for(FakeWriter())
    whole = processor.prepare(records)

    async def prepare_while_ticking() -> tuple[Any, int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.ensure_future(tick())
        await asyncio.sleep(0)
        prepared = await processor.prepare_cooperatively(records)
        ticker.cancel()
        return prepared, ticks

    sliced, ticks = asyncio.run(prepare_while_ticking())
    # Another task ran at least once per 16 records and once per community's encoding.
    assert ticks >= 100 // 16 + 2
    assert [p.layout.community for p in sliced.plans] == ["django", "pycon-us"]
    assert sliced.encoded == whole.encoded == [p.arguments() for p in whole.plans]
    assert [p.event_ids for p in sliced.plans] == [p.event_ids for p in whole.plans]
    assert sliced.letters == whole.letters
    assert len(sliced.letters) == 10
    assert sliced.stamps == whole.stamps


def test_dead_letters_carry_reason_field_and_origin(
    parts: tuple[FakeWriter, FakeDeadLetters, PulseMetrics],
    make_event: Callable[..., dict[str, Any]],
) -> None:
    _, letters, _ = parts
    raw = orjson.dumps(make_event(member_id=...))
    run(make(parts), [FakeRecord(raw, key=b"alice", partition=3, offset=42)])
    headers = dict(letters.letters[0].headers())
    assert headers == {
        "pulse-reason": b"missing_field",
        "pulse-detail": b"member_id is required",
        "pulse-field": b"member_id",
        "pulse-source-topic": b"pulse.activity",
        "pulse-source-partition": b"3",
        "pulse-source-offset": b"42",
    }
    assert letters.letters[0].key == b"alice"
    assert letters.letters[0].value == raw


def test_redis_outage_is_retried_until_applied_and_counted(
    make_event: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer, metrics = FakeWriter(failures=3), PulseMetrics(CollectorRegistry())
    processor = processor_for(writer, metrics=metrics)
    sleeps: list[float] = []

    async def no_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    outcome = run(processor, [FakeRecord(orjson.dumps(make_event()))])
    assert outcome.applied == 1
    assert writer.calls == 4
    assert sleeps == [0.1, 0.2, 0.4]
    assert sample(metrics, "pulse_redis_errors_total") == 3


def test_awards_of_an_attempt_whose_reply_was_lost_are_published_by_the_retry(
    make_event: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer, awards = FakeWriter(lost_replies=1), FakeAwards()
    processor = processor_for(writer, awards=awards)

    async def no_sleep(seconds: float) -> None:
        pass

    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    merge = orjson.dumps(make_event(event_id="m1", type="github.pr_merged", channel=...))
    outcome = run(processor, [FakeRecord(merge)])
    # The retry finds the event applied already; the award it recorded still goes out.
    assert (outcome.applied, outcome.duplicates) == (0, 1)
    assert writer.calls == 2
    assert [(m["badge"], m["evidence"]) for m in awards.messages] == [("first-merge", ["m1"])]
    assert writer.pending_count() == 0


def test_awards_are_published_once_with_their_evidence(
    make_event: Callable[..., dict[str, Any]],
) -> None:
    writer, awards, metrics = FakeWriter(), FakeAwards(), PulseMetrics(CollectorRegistry())
    processor = processor_for(writer, metrics=metrics, awards=awards)
    merge = orjson.dumps(make_event(event_id="m1", type="github.pr_merged", channel=...))
    run(processor, [FakeRecord(merge)])
    run(processor, [FakeRecord(merge)])  # redelivery
    second = orjson.dumps(make_event(event_id="m2", type="github.pr_merged", channel=...))
    run(processor, [FakeRecord(second)])
    assert [(m["badge"], m["tier"], m["evidence"]) for m in awards.messages] == [
        ("first-merge", None, ["m1"])
    ]
    assert writer.pending_count() == 0
    assert (
        sample(
            metrics,
            "pulse_badges_awarded_total",
            community="pycon-us",
            badge="first-merge",
            tier="",
        )
        == 1
    )


def test_awards_left_in_the_outbox_by_a_crash_are_published_on_start(
    make_event: Callable[..., dict[str, Any]],
) -> None:
    writer = FakeWriter()
    crashing = processor_for(writer, awards=FakeAwards(fail_with=RuntimeError("worker killed")))
    volunteer = orjson.dumps(make_event(event_id="v1", type="event.volunteer_shift"))
    with pytest.raises(RuntimeError, match="worker killed"):
        run(crashing, [FakeRecord(volunteer)])
    assert writer.pending_count() == 1

    awards = FakeAwards()
    restarted = processor_for(writer, awards=awards)
    assert asyncio.run(restarted.drain_outboxes()) == 1
    run(restarted, [FakeRecord(volunteer)])  # the redelivered event adds nothing
    assert [(m["badge"], m["member_id"], m["awarded_at"]) for m in awards.messages] == [
        ("event-crew", "alice", "2026-11-25T11:59:00.000Z")
    ]
    assert writer.pending_count() == 0


def test_oversized_messages_are_dead_lettered(
    parts: tuple[FakeWriter, FakeDeadLetters, PulseMetrics],
    make_event: Callable[..., dict[str, Any]],
) -> None:
    _, letters, metrics = parts
    big = orjson.dumps(make_event(attributes={"blob": "x" * 70_000}))
    outcome = run(make(parts), [FakeRecord(big)])
    assert outcome.invalid == 1
    assert letters.letters[0].reason == "oversized"
    assert letters.letters[0].value == big
    assert sample(metrics, "pulse_events_invalid_total", reason="oversized") == 1
