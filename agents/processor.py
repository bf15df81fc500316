"""The activity pipeline of one batch: decode, validate, plan, apply, dead-letter, count.

Kept free of Faust so it can be driven by the worker's consumer, the rebuild command or
a test alike. Nothing here acknowledges Kafka records: the caller does, after
:meth:`ActivityProcessor.process` has returned, i.e. after Redis, the DLQ and the
output topics hold every effect of the batch.

Awards, moderation flags and segment changes follow one outbox pattern: the Lua call
that applies an event records them in Redis together with an outbox entry; they are
published, and only after the broker acknowledged them are they removed from the
outbox. A worker that dies in between leaves them there, and :meth:`drain_outboxes`
publishes them when the next worker starts: at least once, with deterministic ids.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson
import redis
from prometheus_client import Counter as PromCounter

from agents.metrics import PulseMetrics
from agents.settings import Settings
from streams.activity import Activity, InvalidActivity, parse_activity
from streams.badges import award_message
from streams.effects import MODERATED, Applied, BatchPlanner, CommunityPlan, Policy
from streams.keys import KeyLayout
from streams.moderation import flag_message
from streams.segments import change_message

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BACKOFF = 5.0
# Records prepared between two hand-backs of the event loop (well under a millisecond).
PREPARE_SLICE = 4


class Record(Protocol):
    """The parts of a Kafka record the pipeline reads (aiokafka's and kafka-python's
    ``ConsumerRecord`` fit); ``timestamp`` is in milliseconds, as Kafka gives it."""

    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input record that failed validation, with why."""

    key: bytes | None
    value: bytes
    reason: str
    detail: str
    field: str | None
    topic: str
    partition: int
    offset: int

    def headers(self) -> list[tuple[str, bytes]]:
        headers = [
            ("pulse-reason", self.reason.encode()),
            ("pulse-detail", self.detail.encode()),
            ("pulse-source-topic", self.topic.encode()),
            ("pulse-source-partition", str(self.partition).encode()),
            ("pulse-source-offset", str(self.offset).encode()),
        ]
        if self.field is not None:
            headers.append(("pulse-field", self.field.encode()))
        return headers


class EffectWriter(Protocol):
    def encode(self, plan: CommunityPlan) -> Any:
        """The plan in the form :meth:`apply` sends it: CPU only, done ahead of time."""

    async def apply(
        self, plans: Sequence[CommunityPlan], encoded: Sequence[Any] | None = None
    ) -> list[Applied]:
        """Apply the plans (``encoded``: their :meth:`encode` results, if made already);
        per plan, a code per event and the ids recorded."""

    async def pending(self, outbox_key: str, limit: int = 1000) -> list[str]:
        """Ids waiting in an outbox, oldest first."""

    async def records(
        self, wanted: Sequence[tuple[str, Sequence[str]]]
    ) -> list[list[tuple[str, Any]]]:
        """Per (records key, ids) pair, the stored records of those ids, in one round trip."""

    async def confirm(self, confirmed: Sequence[tuple[str, str]]) -> None:
        """Take published ids out of their outboxes: (outbox key, id) pairs."""

    async def communities(self) -> list[str]:
        """Every community the writer has seen."""

    async def remember_communities(self, communities: Sequence[str]) -> None:
        """Note communities seen in a batch."""

    async def sweep_segments(self, layout: KeyLayout, policy: Policy, now: float) -> list[str]:
        """Apply due segment downgrades of one community; returns the change ids."""


class MessageSink(Protocol):
    async def publish(self, messages: Sequence[dict[str, Any]]) -> None:
        """Publish JSON messages (key member_id); return once the broker has them all."""


class KafkaUnavailable(Exception):
    """The broker did not take a message; sinks raise it so the batch is retried."""


class DeadLetterSink(Protocol):
    async def publish(self, letters: Sequence[DeadLetter]) -> None:
        """Publish every letter and return once the broker has acknowledged all of them."""


@dataclass(frozen=True, slots=True)
class Outbox:
    """One kind of recorded-then-published output (awards, flags, segment changes)."""

    name: str
    records: Callable[[KeyLayout], str]
    outbox: Callable[[KeyLayout], str]
    fired: Callable[[Applied], list[str]]


OUTBOXES = (
    Outbox("awards", KeyLayout.awards, KeyLayout.award_outbox, lambda a: a.awards),
    Outbox("flags", KeyLayout.flags, KeyLayout.flag_outbox, lambda a: a.moderation),
    Outbox("segments", KeyLayout.segment_changes, KeyLayout.segment_outbox, lambda a: a.segments),
)


@dataclass(slots=True)
class BatchOutcome:
    applied: int = 0
    duplicates: int = 0
    invalid: int = 0
    late: int = 0
    moderated: int = 0
    published: int = 0


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A decoded and planned batch, ready for :meth:`ActivityProcessor.apply`."""

    size: int
    activities: list[Activity]
    # (community, event_id) -> Kafka record timestamp in seconds, for the latency histogram.
    stamps: dict[tuple[str, str], float]
    letters: list[DeadLetter]
    plans: list[CommunityPlan]
    # Per plan, the writer's encoding of it (EffectWriter.encode), done ahead of apply.
    encoded: list[Any]
    prepare_seconds: float


@dataclass(frozen=True, slots=True)
class RecordedBatch:
    """A batch whose effects Redis holds, its outputs not yet published."""

    batch: PreparedBatch
    results: list[Applied]
    attempts: int
    applied_at: float
    # perf_counter() when recording started, for the batch duration histogram.
    started: float


def check_message(
    value: bytes, now: float, max_future_skew: float, max_bytes: int = 65536
) -> Activity | InvalidActivity:
    """The worker's checks of one message value: the activity, or why it is not one.

    ``pulse validate`` and ``pulse produce`` run the same checks on each line.
    """
    if len(value) > max_bytes:
        return InvalidActivity(
            "oversized", f"the message is {len(value)} bytes; the limit is {max_bytes}"
        )
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return InvalidActivity("invalid_json", "the message is not valid UTF-8 JSON")
    try:
        return parse_activity(obj, now=now, max_future_skew=max_future_skew)
    except InvalidActivity as exc:
        return exc


def decode(
    record: Record, now: float, max_future_skew: float, max_bytes: int = 65536
) -> Activity | DeadLetter:
    """One record to an :class:`Activity`, or the :class:`DeadLetter` that says why not."""
    value = record.value if record.value is not None else b""
    checked = check_message(value, now, max_future_skew, max_bytes)
    if isinstance(checked, Activity):
        return checked
    return DeadLetter(
        record.key,
        value,
        checked.reason,
        checked.detail,
        checked.field,
        record.topic,
        record.partition,
        record.offset,
    )


class ActivityProcessor:
    """Turns batches of Kafka records into Redis effects, output messages and metrics."""

    def __init__(
        self,
        settings: Settings,
        writer: EffectWriter,
        dead_letters: DeadLetterSink,
        metrics: PulseMetrics,
        sinks: Mapping[str, MessageSink],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        # One policy for the worker's life: it caches which badges each type feeds.
        self._policy = settings.policy
        self._writer = writer
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._sinks = sinks
        self._clock = clock
        self._known_communities: set[str] = set()
        self._catalog = {badge.id: badge for badge in settings.catalog}

    async def process(self, records: Sequence[Record]) -> BatchOutcome:
        """Prepare and apply one batch (see :meth:`prepare` and :meth:`apply`)."""
        return await self.apply(self.prepare(records))

    def prepare(self, records: Sequence[Record]) -> PreparedBatch:
        """Decode, validate, plan and encode a batch: CPU only, no I/O.

        Split from :meth:`apply` so that the worker can prepare the next batch while
        Redis applies this one. Planning reads nothing from Redis, so a batch can be
        planned before the one ahead of it has been applied.
        """
        steps = self._prepare(records, every=0)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    async def prepare_cooperatively(self, records: Sequence[Record]) -> PreparedBatch:
        """:meth:`prepare`, handing the event loop back every few records.

        The worker prepares the next batch on the event loop that also carries the batch
        before it: its Lua call's reply, its outputs, its commit. Without the hand-backs
        they would wait for the whole batch to be planned, and Redis with them.
        """
        steps = self._prepare(records, every=PREPARE_SLICE)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            await asyncio.sleep(0)

    def _prepare(
        self, records: Sequence[Record], every: int
    ) -> Generator[None, None, PreparedBatch]:
        """The steps of :meth:`prepare`; yields after every ``every`` records (never if
        0) and after encoding each community's plan."""
        started = time.perf_counter()
        now = self._clock()
        activities: list[Activity] = []
        stamps: dict[tuple[str, str], float] = {}
        letters: list[DeadLetter] = []
        skew, limit = self._settings.max_future_skew, self._settings.max_message_bytes
        planner = BatchPlanner(self._settings.redis_key_prefix, self._policy, now)
        for done, record in enumerate(records, 1):
            decoded = decode(record, now, skew, limit)
            if isinstance(decoded, DeadLetter):
                letters.append(decoded)
            else:
                activities.append(decoded)
                stamps.setdefault((decoded.community, decoded.event_id), record.timestamp / 1000)
                planner.add(decoded)
            if every and not done % every:
                yield
        plans = list(planner.plans.values())
        encoded = []
        for plan in plans:
            encoded.append(self._writer.encode(plan))
            yield
        return PreparedBatch(
            len(records), activities, stamps, letters, plans, encoded, time.perf_counter() - started
        )

    async def apply(self, batch: PreparedBatch) -> BatchOutcome:
        """Apply a prepared batch: dead letters, Redis effects, outputs, metrics.

        Returns once every effect is stored; only then may the caller acknowledge the
        batch's records. The same as :meth:`record` then :meth:`publish`.
        """
        return await self.publish(await self.record(batch))

    async def record(self, batch: PreparedBatch) -> RecordedBatch:
        """The first half of :meth:`apply`: dead letters, then the Redis effects.

        Once it returns, the next batch may be recorded: Redis holds this batch's
        effects, and its awards, flags and segment changes wait in their outboxes.
        """
        started = time.perf_counter()
        m = self._metrics
        letters, plans = batch.letters, batch.plans
        if letters:
            await self._retry(
                lambda: self._dead_letters.publish(letters),
                m.dlq_errors,
                "publish to the dead-letter topic",
            )
            for letter in letters:
                m.events_invalid.labels(letter.reason).inc()

        if new := {p.layout.community for p in plans} - self._known_communities:
            # Remembered before anything is recorded in an outbox, so that a restarted
            # worker knows whose outboxes to drain.
            await self._retry(
                lambda: self._writer.remember_communities(sorted(new)),
                m.redis_errors,
                "record communities",
            )
            self._known_communities |= new
        attempts = 0

        async def apply_plans() -> list[Applied]:
            nonlocal attempts
            attempts += 1
            return await self._writer.apply(plans, batch.encoded)

        results = await self._retry(apply_plans, m.redis_errors, "apply a batch to Redis")
        return RecordedBatch(batch, results, attempts, self._clock(), started)

    async def publish(self, recorded: RecordedBatch) -> BatchOutcome:
        """The second half of :meth:`apply`: metrics, then the outputs :meth:`record`
        left in the outboxes, published and cleared.

        Returns once every output is published; only then may the caller acknowledge
        the batch's records. Batches must be published in the order they were recorded.
        """
        batch, results, applied_at = recorded.batch, recorded.results, recorded.applied_at
        activities, stamps, plans = batch.activities, batch.stamps, batch.plans
        m = self._metrics
        outcome = BatchOutcome(invalid=len(batch.letters))
        newest = 0.0
        # Counted here, added to the metrics once per label set: a per-event .labels()
        # lookup and lock is a visible share of the worker's time.
        processed: Counter[tuple[str, str]] = Counter()
        moderated: Counter[str] = Counter()
        late_events: Counter[str] = Counter()
        duplicates: Counter[str] = Counter()
        latency = m.processing_latency.observe
        for plan, result in zip(plans, results, strict=True):
            community = plan.layout.community
            for activity, code, late in zip(plan.activities, result.flags, plan.late, strict=True):
                if code == MODERATED:
                    moderated[community] += 1
                elif code:
                    newest = max(newest, activity.occurred_at)
                    processed[community, activity.type] += 1
                    latency(max(0.0, applied_at - stamps[(community, activity.event_id)]))
                    if late:
                        late_events[community] += 1
                else:
                    duplicates[community] += 1
        for (community, activity_type), count in processed.items():
            m.events_processed.labels(community, activity_type).inc(count)
        for counts, metric in (
            (moderated, m.events_moderated),
            (late_events, m.events_late),
            (duplicates, m.events_duplicate),
        ):
            for community, count in counts.items():
                metric.labels(community).inc(count)
        outcome.applied = sum(processed.values())
        outcome.moderated = sum(moderated.values())
        outcome.late = sum(late_events.values())
        outcome.duplicates = sum(duplicates.values())
        if newest:
            m.event_time_lag.set(max(0.0, applied_at - newest))
        # Repeats of an event_id inside one batch were dropped by the planner.
        planned = {plan.layout.community: len(plan.activities) for plan in plans}
        for community, valid in Counter(a.community for a in activities).items():
            if repeats := valid - planned[community]:
                outcome.duplicates += repeats
                m.events_duplicate.labels(community).inc(repeats)
        # The kinds go to different topics and outboxes: published side by side, so a
        # batch waits for one broker round trip, not one per kind.
        publishing = []
        for kind in OUTBOXES:
            fired = [
                (plan.layout, identity)
                for plan, result in zip(plans, results, strict=True)
                for identity in kind.fired(result)
            ]
            if fired:
                publishing.append(self._publish(kind, fired))
        outcome.published += sum(await asyncio.gather(*publishing))
        if recorded.attempts > 1:
            # An earlier attempt may have been applied with its reply lost (a timeout, a
            # dropped connection): the retry then sees every event as a duplicate and
            # reports none of the awards, flags and segment changes that attempt recorded.
            # They are in the outboxes; publish them now rather than at the next start.
            outcome.published += await self._drain([p.layout.community for p in plans])
        m.batch_size.observe(batch.size)
        m.batch_duration.observe(batch.prepare_seconds + time.perf_counter() - recorded.started)
        return outcome

    def _message(
        self, kind: Outbox, community: str, identity: str, record: dict[str, Any]
    ) -> dict[str, Any]:
        if kind.name == "awards":
            return award_message(
                community,
                identity,
                record["member_id"],
                record["badge"],
                record["tier"] or None,
                int(record["at_ms"]),
                record["evidence"],
                self._catalog.get(record["badge"]),
            )
        if kind.name == "flags":
            return flag_message(community, identity, record)
        return change_message(community, record)

    def _count(self, kind: Outbox, message: dict[str, Any]) -> None:
        m, community = self._metrics, message["community"]
        if kind.name == "awards":
            m.badges_awarded.labels(community, message["badge"], message["tier"] or "").inc()
        elif kind.name == "flags":
            m.moderation_flags.labels(community, message["rule"]).inc()
        else:
            m.segment_changes.labels(community, message["from"], message["to"]).inc()

    async def _publish(self, kind: Outbox, fired: Sequence[tuple[KeyLayout, str]]) -> int:
        """Publish recorded outputs of one kind, then clear them from their outboxes."""
        m = self._metrics
        messages: list[dict[str, Any]] = []
        confirmed: list[tuple[str, str]] = []
        by_layout: dict[KeyLayout, list[str]] = {}
        for layout, identity in fired:
            by_layout.setdefault(layout, []).append(identity)
        wanted = [(kind.records(layout), ids) for layout, ids in by_layout.items()]
        # One round trip for every community: each await here waits for the event loop,
        # which the next batch's preparation shares.
        found = await self._retry(
            lambda: self._writer.records(wanted), m.redis_errors, f"read {kind.name} records"
        )
        for layout, records in zip(by_layout, found, strict=True):
            for identity, record in records:
                messages.append(self._message(kind, layout.community, identity, record))
                confirmed.append((kind.outbox(layout), identity))
        sink = self._sinks[kind.name]
        await self._retry(lambda: sink.publish(messages), m.publish_errors, f"publish {kind.name}")
        await self._retry(
            lambda: self._writer.confirm(confirmed), m.redis_errors, f"clear the {kind.name} outbox"
        )
        for message in messages:
            self._count(kind, message)
        return len(messages)

    async def sweep_segments(self) -> int:
        """Downgrade members whose score stayed low for the grace; returns changes published."""
        m = self._metrics
        communities = await self._retry(
            self._writer.communities, m.redis_errors, "list communities"
        )
        segments = next(k for k in OUTBOXES if k.name == "segments")
        total = 0
        for community in communities:
            layout = KeyLayout(self._settings.redis_key_prefix, community)
            changes = await self._retry(
                lambda lay=layout: self._writer.sweep_segments(  # type: ignore[misc]
                    lay, self._policy, self._clock()
                ),
                m.redis_errors,
                "sweep segments",
            )
            if changes:
                total += await self._publish(segments, [(layout, c) for c in changes])
        return total

    async def drain_outboxes(self) -> int:
        """Publish what a previous run recorded but did not confirm; returns how many."""
        communities = await self._retry(
            self._writer.communities, self._metrics.redis_errors, "list communities"
        )
        self._known_communities.update(communities)
        return await self._drain(communities)

    async def _drain(self, communities: Sequence[str]) -> int:
        """Publish everything waiting in the outboxes of ``communities``."""
        m = self._metrics
        total = 0
        for community in communities:
            layout = KeyLayout(self._settings.redis_key_prefix, community)
            for kind in OUTBOXES:
                while True:
                    ids = await self._retry(
                        lambda lay=layout, k=kind: self._writer.pending(k.outbox(lay)),  # type: ignore[misc]
                        m.redis_errors,
                        f"read the {kind.name} outbox",
                    )
                    if not ids:
                        break
                    published = await self._publish(kind, [(layout, i) for i in ids])
                    if not published:
                        # Ids without records cannot be published; drop them from the outbox.
                        await self._writer.confirm([(kind.outbox(layout), i) for i in ids])
                    total += published
        return total

    async def _retry(
        self, attempt: Callable[[], Awaitable[T]], errors: PromCounter, what: str
    ) -> T:
        """Run ``attempt`` until it succeeds, backing off on Redis and broker failures.

        The batch is not acknowledged while this waits, so Kafka offsets never move past
        effects that are not in Redis and the DLQ. Every Redis error is retried, not only
        lost connections: out of memory, a read-only replica after a failover, a failed
        disk (MISCONF) or refused credentials also mean "not applied", and skipping the
        batch would lose it. A Redis error that persists stalls the worker, visibly (this
        log line and the error counter), instead of dropping events.
        """
        delay = 0.1
        while True:
            try:
                return await attempt()
            except (redis.exceptions.RedisError, KafkaUnavailable) as exc:
                errors.inc()
                log.warning(
                    "could not %s (%s: %s); retrying in %.1fs", what, type(exc).__name__, exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(MAX_BACKOFF, delay * 2)
