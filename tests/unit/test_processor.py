"""The batch pipeline with hand-written fakes for Redis, the broker and the DLQ (no servers)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from agents.metrics import PulseMetrics
from agents.processor import PREPARE_SLICE, ActivityProcessor, PreparedBatch, StaleBatch
from agents.settings import Settings
from agents.writer import BOARDS_KEPT, Fenced
from agents.writer import commands as read_payload
from streams.keys import KeyLayout, partition_field
from streams.periods import format_instant
from tests.conftest import NOON
from tests.unit.fakes import TOPIC, FakeDeadLetters, FakeRecord, FakeSink, FakeWriter, sinks

PYCON = KeyLayout("pulse", "pycon-us")
STAMP = round((NOON - 1) * 1000)  # the Kafka timestamp of the records: 1 s before NOON


def record(value: bytes | None, offset: int = 0, **fields: Any) -> FakeRecord:
    return FakeRecord(value, offset=offset, timestamp=STAMP, **fields)


def sample(metrics: PulseMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def run(processor: ActivityProcessor, records: list[FakeRecord]) -> Any:
    return asyncio.run(processor.process(records))


def processor_for(
    writer: FakeWriter,
    *,
    letters: FakeDeadLetters | None = None,
    metrics: PulseMetrics | None = None,
    awards: FakeSink | None = None,
    settings: Settings | None = None,
    partitions: Sequence[tuple[str, int]] = ((TOPIC, 0),),
) -> ActivityProcessor:
    """A processor on the fakes, the clock at NOON, owning ``partitions`` (a new epoch)."""
    processor = unassigned(
        writer, letters=letters, metrics=metrics, awards=awards, settings=settings
    )
    asyncio.run(processor.assign(list(partitions)))
    return processor


def unassigned(
    writer: FakeWriter,
    *,
    letters: FakeDeadLetters | None = None,
    metrics: PulseMetrics | None = None,
    awards: FakeSink | None = None,
    settings: Settings | None = None,
) -> ActivityProcessor:
    return ActivityProcessor(
        settings if settings is not None else Settings.from_env({}),
        writer,
        letters if letters is not None else FakeDeadLetters(),
        metrics if metrics is not None else PulseMetrics(CollectorRegistry()),
        sinks(awards),
        clock=lambda: NOON,
    )


@pytest.fixture
def parts() -> tuple[FakeWriter, FakeDeadLetters, PulseMetrics]:
    return FakeWriter(), FakeDeadLetters(), PulseMetrics(CollectorRegistry())


def make(parts: tuple[FakeWriter, FakeDeadLetters, PulseMetrics]) -> ActivityProcessor:
    writer, letters, metrics = parts
    return processor_for(writer, letters=letters, metrics=metrics)


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Backoff sleeps return at once; the list holds what was asked for."""
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return sleeps


def test_valid_invalid_and_repeated_records(
    parts: tuple[FakeWriter, FakeDeadLetters, PulseMetrics],
    make_event: Callable[..., dict[str, Any]],
) -> None:
    writer, letters, metrics = parts
    processor = make(parts)
    good = orjson.dumps(make_event())
    records = [
        record(good, offset=0),
        record(b"nope", offset=1),
        record(None, offset=2),
        record(good, offset=3),  # the same event again, at a new offset
    ]
    outcome = run(processor, records)
    assert (outcome.applied, outcome.invalid, outcome.duplicates) == (1, 2, 1)
    assert [(letter.reason, letter.offset, letter.value) for letter in letters.letters] == [
        ("invalid_json", 1, b"nope"),
        ("invalid_json", 2, b""),
    ]
    assert (
        sample(metrics, "pulse_community_events_total", community="pycon-us", type="chat.message")
        == 1
    )
    assert sample(metrics, "pulse_events_invalid_total", reason="invalid_json") == 2
    assert sample(metrics, "pulse_community_events_duplicate_total", community="pycon-us") == 1
    assert sample(metrics, "pulse_processing_latency_seconds_sum") == pytest.approx(1.0)
    fence = writer.fence(PYCON, partition_field(TOPIC, 0))
    assert fence is not None
    assert (fence.epoch, fence.offset) == (1, 3)
    state = writer.state(PYCON, "alice")
    assert state is not None
    assert (state.points, state.events) == (1, 1)

    # Redelivered at its recorded offset: skipped, counted as a duplicate, nothing written.
    calls = writer.calls
    again = run(processor, [record(good, offset=0)])
    assert (again.applied, again.duplicates) == (0, 1)
    assert writer.calls == calls
    assert sample(metrics, "pulse_community_events_duplicate_total", community="pycon-us") == 2


def test_preparing_cooperatively_hands_back_the_loop_and_prepares_the_same_batch(
    make_event: Callable[..., dict[str, Any]],
) -> None:
    records = [
        record(
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

    async def prepare_while_ticking() -> tuple[PreparedBatch, PreparedBatch, int]:
        # Preparing changes the processor's member states: one processor per way.
        whole = await owner(FakeWriter()).prepare(records)
        cooperative = owner(FakeWriter())
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.ensure_future(tick())
        await asyncio.sleep(0)
        sliced = await cooperative.prepare_cooperatively(records)
        ticker.cancel()
        return whole, sliced, ticks

    def owner(writer: FakeWriter) -> ActivityProcessor:
        processor = unassigned(writer)
        processor.adopt([(TOPIC, 0)])
        return processor

    whole, sliced, ticks = asyncio.run(prepare_while_ticking())
    # Another task ran at least once per slice of records decoded and evaluated.
    assert ticks >= 100 // PREPARE_SLICE + 90 // PREPARE_SLICE
    assert [w.layout.community for w in sliced.writes] == ["django", "pycon-us"]
    assert sliced.payloads == whole.payloads
    assert [p[:2] for p in sliced.payloads] == [
        ("django", KeyLayout("pulse", "django").offsets()),
        ("pycon-us", PYCON.offsets()),
    ]
    assert [[a.event_id for a in w.activities] for w in sliced.writes] == [
        [a.event_id for a in w.activities] for w in whole.writes
    ]
    assert sliced.letters == whole.letters
    assert len(sliced.letters) == 10
    assert sliced.stamps == whole.stamps


def test_loading_is_told_once_the_batch_is_decoded_and_before_its_load_is_sent(
    make_event: Callable[..., dict[str, Any]],
) -> None:
    """The worker lets the batch before write when ``loading`` is called: that must
    happen after the records are decoded, before the load goes out, and also when
    nothing needs loading (every member cached)."""
    writer = FakeWriter()
    processor = unassigned(writer)
    processor.adopt([(TOPIC, 0)])
    seen: list[int] = []

    def loading() -> None:
        seen.append(writer.loads)

    first = [
        record(orjson.dumps(make_event(event_id=f"a{i}", member_id=f"m{i}")), offset=i)
        for i in range(3)
    ]
    asyncio.run(processor.prepare_cooperatively(first, loading))
    assert seen == [0]
    assert writer.loads == 1
    # The same members again: cached, no load, and still told.
    again = [
        record(orjson.dumps(make_event(event_id=f"b{i}", member_id=f"m{i}")), offset=3 + i)
        for i in range(3)
    ]
    asyncio.run(processor.prepare_cooperatively(again, loading))
    assert seen == [0, 1]
    assert writer.loads == 1


def test_dead_letters_carry_reason_field_and_origin(
    parts: tuple[FakeWriter, FakeDeadLetters, PulseMetrics],
    make_event: Callable[..., dict[str, Any]],
) -> None:
    _, letters, _ = parts
    raw = orjson.dumps(make_event(member_id=...))
    run(make(parts), [record(raw, key=b"alice", partition=3, offset=42)])
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


def test_oversized_messages_are_dead_lettered(
    parts: tuple[FakeWriter, FakeDeadLetters, PulseMetrics],
    make_event: Callable[..., dict[str, Any]],
) -> None:
    _, letters, metrics = parts
    big = orjson.dumps(make_event(attributes={"blob": "x" * 70_000}))
    outcome = run(make(parts), [record(big)])
    assert outcome.invalid == 1
    assert letters.letters[0].reason == "oversized"
    assert letters.letters[0].value == big
    assert sample(metrics, "pulse_events_invalid_total", reason="oversized") == 1


def test_redis_outage_is_retried_until_applied_and_counted(
    make_event: Callable[..., dict[str, Any]], no_sleep: list[float]
) -> None:
    writer, metrics = FakeWriter(failures=3), PulseMetrics(CollectorRegistry())
    processor = processor_for(writer, metrics=metrics)
    outcome = run(processor, [record(orjson.dumps(make_event()))])
    assert outcome.applied == 1
    assert writer.calls == 4
    assert no_sleep == [0.1, 0.2, 0.4]
    assert sample(metrics, "pulse_redis_errors_total") == 3
    state = writer.state(PYCON, "alice")
    assert state is not None
    assert state.points == 1


def test_a_write_whose_reply_was_lost_is_applied_once_and_its_award_published_once(
    make_event: Callable[..., dict[str, Any]], no_sleep: list[float]
) -> None:
    writer, awards = FakeWriter(lost_replies=1), FakeSink()
    processor = processor_for(writer, awards=awards)
    merge = orjson.dumps(make_event(event_id="m1", type="github.pr_merged", channel=...))
    outcome = run(processor, [record(merge)])
    # The retry finds its offsets recorded and writes nothing again.
    assert (outcome.applied, outcome.duplicates) == (1, 0)
    assert writer.calls == 2
    state = writer.state(PYCON, "alice")
    assert state is not None
    assert state.points == 15
    assert writer.hashes[PYCON.award_counts()] == {"first-merge": "1"}
    assert [(m["badge"], m["evidence"]) for m in awards.messages] == [("first-merge", ["m1"])]
    assert writer.pending_count() == 0


def test_awards_are_published_once_with_their_evidence(
    make_event: Callable[..., dict[str, Any]],
) -> None:
    writer, awards, metrics = FakeWriter(), FakeSink(), PulseMetrics(CollectorRegistry())
    processor = processor_for(writer, metrics=metrics, awards=awards)
    merge = orjson.dumps(make_event(event_id="m1", type="github.pr_merged", channel=...))
    run(processor, [record(merge, offset=0)])
    run(processor, [record(merge, offset=0)])  # redelivery
    run(processor, [record(merge, offset=1)])  # sent twice by the producer
    second = orjson.dumps(make_event(event_id="m2", type="github.pr_merged", channel=...))
    run(processor, [record(second, offset=2)])
    assert [(m["badge"], m["tier"], m["evidence"], m["awarded_at"]) for m in awards.messages] == [
        ("first-merge", None, ["m1"], "2026-11-25T11:59:00.000Z")
    ]
    assert list(writer.recorded(PYCON.awards()).values()) == [
        {"member_id": "alice", "badge": "first-merge", "tier": "", "at_ms": 1795607940000,
         "evidence": "m1"}
    ]  # fmt: skip
    assert writer.pending_count() == 0
    assert (
        sample(
            metrics,
            "pulse_community_badges_awarded_total",
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
    crashing = processor_for(writer, awards=FakeSink(fail_with=RuntimeError("worker killed")))
    volunteer = orjson.dumps(make_event(event_id="v1", type="event.volunteer_shift"))
    with pytest.raises(RuntimeError, match="worker killed"):
        run(crashing, [record(volunteer)])
    assert writer.pending_count() == 1

    awards = FakeSink()
    restarted = processor_for(writer, awards=awards)
    assert asyncio.run(restarted.drain_outboxes()) == 1
    outcome = run(restarted, [record(volunteer)])  # the redelivered event adds nothing
    assert (outcome.applied, outcome.duplicates) == (0, 1)
    # awarded_at is the event's occurred_at, not the time it was processed.
    assert [(m["badge"], m["member_id"], m["awarded_at"]) for m in awards.messages] == [
        ("event-crew", "alice", "2026-11-25T11:59:00.000Z")
    ]
    assert writer.pending_count() == 0
    state = writer.state(PYCON, "alice")
    assert state is not None
    assert state.points == 20


def test_a_fenced_write_resets_the_processor_and_stales_its_prepared_batches(
    make_event: Callable[..., dict[str, Any]],
) -> None:
    writer, metrics = FakeWriter(), PulseMetrics(CollectorRegistry())

    def chat(event_id: str, member: str, offset: int) -> FakeRecord:
        return record(orjson.dumps(make_event(event_id=event_id, member_id=member)), offset)

    async def scenario() -> None:
        old = unassigned(writer, metrics=metrics)
        await old.assign([(TOPIC, 0)])
        await old.process([chat("e0", "alice", 0)])
        first = await old.prepare([chat("e1", "alice", 1)])
        second = await old.prepare([chat("e2", "bob", 2)])
        assert old.cached_members == 2

        # A rebalance hands the partition to another worker, which claims the community.
        new = unassigned(writer)
        await new.assign([(TOPIC, 0)])
        assert (await new.process([chat("e1", "alice", 1)])).applied == 1

        with pytest.raises(Fenced):
            await old.record(first)
        assert old.cached_members == 0
        assert sample(metrics, "pulse_fenced_batches_total") == 1
        with pytest.raises(StaleBatch):
            await old.record(second)

    asyncio.run(scenario())
    fence = writer.fence(PYCON, partition_field(TOPIC, 0))
    assert fence is not None
    assert (fence.epoch, fence.offset) == (2, 1)
    alice, bob = writer.state(PYCON, "alice"), writer.state(PYCON, "bob")
    assert alice is not None
    assert (alice.points, alice.events) == (2, 2)
    assert bob is None  # the stale batch wrote nothing


def alice_then_five_members(make_event: Callable[..., dict[str, Any]]) -> list[FakeRecord]:
    """Alice merges, five other members chat, alice's merge comes again (a duplicate),
    then her second merge: with room for four members, she is evicted in between."""
    events = [
        make_event(event_id="m1", member_id="alice", type="github.pr_merged", channel=...),
        *(make_event(event_id=f"c{i}", member_id=f"member-{i}") for i in range(5)),
        make_event(event_id="m1", member_id="alice", type="github.pr_merged", channel=...),
        make_event(event_id="m2", member_id="alice", type="github.pr_merged", channel=...),
    ]
    return [record(orjson.dumps(e), offset=i) for i, e in enumerate(events)]


def test_an_evicted_member_is_reloaded_and_judged_the_same(
    make_event: Callable[..., dict[str, Any]],
) -> None:
    # The smallest cache the settings allow for batches of one record.
    tiny = Settings.from_env({"PULSE_BATCH_SIZE": "1"}, state_cache_members=4)
    records = alice_then_five_members(make_event)

    def outcome_with(settings: Settings) -> tuple[FakeWriter, list[tuple[int, int]], FakeSink]:
        writer, awards = FakeWriter(), FakeSink()
        processor = processor_for(writer, settings=settings, awards=awards)
        counts = []
        for one in records:
            result = run(processor, [one])
            counts.append((result.applied, result.duplicates))
            assert processor.cached_members <= settings.state_cache_members
        return writer, counts, awards

    small, small_counts, small_awards = outcome_with(tiny)
    large, large_counts, large_awards = outcome_with(Settings.from_env({}))
    assert small.loaded.count(("pycon-us", "alice")) == 2  # evicted, then read back
    assert large.loaded.count(("pycon-us", "alice")) == 1
    assert small_counts == large_counts
    assert small_counts[-2:] == [(0, 1), (1, 0)]
    assert small.states() == large.states()
    alice = small.state(PYCON, "alice")
    assert alice is not None
    assert (alice.points, alice.badges) == (30, {"first-merge": 1795607940000})
    assert small_awards.messages == large_awards.messages
    assert len(small_awards.messages) == 1


def test_a_blank_rebuild_reads_no_member_until_the_cache_evicts_one(
    make_event: Callable[..., dict[str, Any]],
) -> None:
    # After a full rebuild's wipe Redis holds no member state: a member missing from the
    # cache is new. Once the cache evicts one, members missing from it are read again.
    tiny = Settings.from_env({"PULSE_BATCH_SIZE": "1"}, state_cache_members=4)
    records = alice_then_five_members(make_event)

    def outcome(blank: bool) -> tuple[FakeWriter, list[tuple[int, int]], FakeSink]:
        writer, awards = FakeWriter(), FakeSink()
        processor = unassigned(writer, settings=tiny, awards=awards)
        processor.adopt([(TOPIC, 0)], blank=blank)
        counts = []
        for one in records:
            result = run(processor, [one])
            counts.append((result.applied, result.duplicates))
        return writer, counts, awards

    blank, blank_counts, blank_awards = outcome(True)
    read, read_counts, read_awards = outcome(False)
    # alice was evicted when member-3 came (five members, room for four).
    assert blank.loaded == [("pycon-us", "member-4"), ("pycon-us", "alice")]
    assert len(read.loaded) == 7
    assert blank_counts == read_counts
    assert blank_counts[-2:] == [(0, 1), (1, 0)]  # alice's state was read back
    assert blank.states() == read.states()
    assert blank_awards.messages == read_awards.messages


def test_a_reset_while_a_batch_is_being_prepared_makes_it_stale(
    make_event: Callable[..., dict[str, Any]],
) -> None:
    writer = FakeWriter()

    def chat(event_id: str, member: str, offset: int) -> FakeRecord:
        return record(orjson.dumps(make_event(event_id=event_id, member_id=member)), offset)

    async def scenario() -> None:
        old = unassigned(writer)
        await old.assign([(TOPIC, 0)])
        await old.process([chat("e0", "alice", 0)])
        new = unassigned(writer)
        await new.assign([(TOPIC, 0)])
        await new.process([chat("e1", "bob", 1)])
        # The worker records one batch while it prepares the next (agents/consumer.py).
        recording = await old.prepare([chat("e2", "alice", 2)])
        loads = writer.loads
        # The write's (fenced) reply arrives once the next batch has loaded its members.
        writer.hold = lambda: writer.loads == loads
        refused = asyncio.ensure_future(old.record(recording))
        following = [chat(f"e{i}", f"member-{i}", i) for i in range(3, 3 + 4 * PREPARE_SLICE)]
        try:
            with pytest.raises(StaleBatch):
                await old.prepare_cooperatively(following)
        finally:
            with pytest.raises(Fenced):
                await refused

    asyncio.run(scenario())


def test_outputs_of_the_communities_a_fenced_batch_did_write_are_published(
    make_event: Callable[..., dict[str, Any]],
) -> None:
    writer, old_awards, new_awards = FakeWriter(), FakeSink(), FakeSink()
    chat = make_event(event_id="x1", community="django")
    shift = make_event(event_id="v1", member_id="bob", type="event.volunteer_shift")

    async def scenario() -> None:
        old = unassigned(writer, awards=old_awards)
        await old.assign([(TOPIC, 0)])
        await old.process([record(orjson.dumps(make_event(event_id="x0", community="django")))])
        both = await old.prepare([record(orjson.dumps(chat), 1), record(orjson.dumps(shift), 2)])
        # The new owner has only claimed django when the old owner's write comes.
        new = unassigned(writer, awards=new_awards)
        await new.assign([(TOPIC, 0)])
        await new.drain_outboxes()
        await new.process([record(orjson.dumps(chat), 1)])
        with pytest.raises(Fenced):
            await old.apply(both)
        assert writer.state(PYCON, "bob") is not None  # pycon-us was written
        outcome = await new.process([record(orjson.dumps(shift), 2)])
        assert outcome.duplicates == 1  # its offset is recorded: skipped

    asyncio.run(scenario())
    assert [m["badge"] for m in old_awards.messages + new_awards.messages] == ["event-crew"]
    assert writer.pending_count() == 0


def test_a_load_that_spans_an_assignment_leaves_no_fences_behind(
    make_event: Callable[..., dict[str, Any]],
) -> None:
    """Found by a fault test: a worker's first segment sweep claimed its communities'
    fences before any partition was assigned (no fields); the assignment's reset ran
    while that load waited on Redis, and the load then stored its empty fences over
    the reset. The first batch found the community claimed, and no fence for its
    partition: KeyError, and the worker crashed."""
    release = asyncio.Event()

    class SlowWriter(FakeWriter):
        async def load(self, *args: Any, **kwargs: Any) -> Any:
            await release.wait()
            return await super().load(*args, **kwargs)

    writer = SlowWriter()
    writer.known.add("pycon-us")

    async def scenario() -> None:
        processor = unassigned(writer)
        await processor.drain_outboxes()  # learns the community, as at start-up
        sweep = asyncio.ensure_future(processor.sweep_segments())
        await asyncio.sleep(0)
        # The group assigns the partition while the sweep's load waits on Redis.
        await processor.assign([(TOPIC, 0)])
        release.set()
        assert await sweep == 0
        event = make_event(event_id="e1", member_id="alice")
        outcome = await processor.process([record(orjson.dumps(event), 0)])
        assert outcome.applied == 1

    asyncio.run(scenario())


def board_writes(writer: FakeWriter) -> list[set[tuple[str, str]]]:
    """Record, per write call, how the leaderboards were written: (command, period)."""
    sent: list[set[tuple[str, str]]] = []
    write = writer.write

    async def spy(batches: Sequence[tuple[str, str, Sequence[bytes]]]) -> list[Any]:
        sent.append(
            {
                (c[0], c[1].split(":lb:")[1].split(":")[0])
                for _, _, argv in batches
                for c in read_payload(argv)[1]
                if ":lb:" in c[1] and c[0] != "EXPIREAT"
            }
        )
        return await write(batches)

    writer.write = spy  # type: ignore[method-assign]
    return sent


def test_leaderboard_scores_are_set_when_known_and_learnt_from_a_write_when_not(
    make_event: Callable[..., dict[str, Any]],
) -> None:
    """A new member's scores are known (none); a member read back from Redis (a
    restart) sends increments once, learns the sums from the reply, then sets them."""
    writer = FakeWriter()
    sent = board_writes(writer)
    merges = [
        record(orjson.dumps(make_event(event_id=f"m{i}", type="github.pr_merged")), offset=i)
        for i in range(3)
    ]
    run(processor_for(writer), merges[:1])
    restarted = processor_for(writer)
    run(restarted, merges[1:2])
    run(restarted, merges[2:])
    assert [{op for op, _ in ops} for ops in sent] == [{"ZADD"}, {"ZINCRBY"}, {"ZADD"}]
    state = writer.state(PYCON, "alice")
    assert state is not None
    assert state.points > 0
    board = PYCON.leaderboard("all", "all")
    assert writer.zsets[board] == {"alice": -state.points}


def test_a_members_copy_of_scores_is_dropped_when_full_and_the_boards_stay_exact(
    make_event: Callable[..., dict[str, Any]],
) -> None:
    """A member active on 45 days names a new day board each day: past ``BOARDS_KEPT``
    scores its copy is dropped, the next write sends increments and learns again (a
    new day's board, unknown then, keeps taking an increment first)."""
    writer = FakeWriter()
    processor = processor_for(writer)
    sent = board_writes(writer)
    first = NOON - 45 * 86400
    for day in range(45):
        merge = make_event(
            event_id=f"m{day}",
            type="github.pr_merged",
            channel=...,
            occurred_at=format_instant(first + day * 86400),
        )
        run(processor, [record(orjson.dumps(merge), offset=day)])
    # The all-time board: set while the copy held it, then added to once when it was
    # dropped, and set again from the sum that write's reply told.
    alltime = [op for ops in sent for op, kind in ops if kind == "all"]
    dropped = [i for i, op in enumerate(alltime) if op == "ZINCRBY"]
    assert dropped  # the copy was full at least once
    assert BOARDS_KEPT // 2 < dropped[0] <= BOARDS_KEPT
    assert all(alltime[i + 1] == "ZADD" for i in dropped if i + 1 < len(alltime))
    state = writer.state(PYCON, "alice")
    assert state is not None
    assert writer.zsets[PYCON.leaderboard("all", "all")] == {"alice": -state.points}
    days = [k for k in writer.zsets if ":lb:day:" in k]
    assert len(days) == 45
    assert all(writer.zsets[k] == {"alice": -state.points / 45} for k in days)
