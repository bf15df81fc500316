"""The activity pipeline of one batch: decode, validate, evaluate, write, dead-letter, count.

Kept free of Faust so it can be driven by the worker's consumer, the rebuild command or
a test alike. Nothing here acknowledges Kafka records: the caller does, after
:meth:`ActivityProcessor.process` has returned, i.e. after Redis, the DLQ and the
output topics hold every effect of the batch.

The rules run here, in the worker, over the member states it owns
(:func:`streams.evaluator.evaluate`); Redis receives each batch's results in one
fenced write per community (:mod:`agents.writer`).

Awards, moderation flags and segment changes follow one outbox pattern: the write
that applies a batch records them in Redis together with an outbox entry; they are
published, and only after the broker acknowledged them are they removed from the
outbox. A worker that dies in between leaves them there, and :meth:`drain_outboxes`
publishes them when the next worker starts: at least once, with deterministic ids.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson
import redis
from prometheus_client import Counter as PromCounter

from agents.metrics import PulseMetrics, observe_all
from agents.settings import Settings
from agents.writer import Fence, Fenced, learn, payload
from streams.activity import Activity, InvalidActivity, parse_activity
from streams.badges import award_message
from streams.effects import APPLIED, MODERATED, CommunityWrites
from streams.evaluator import advance, evaluate
from streams.keys import KeyLayout, partition_field
from streams.moderation import flag_message
from streams.segments import change_message
from streams.state import DAY_MS, MemberState, dedupe_horizon

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BACKOFF = 5.0
# Keys whose expiry a worker remembers having set, at most (then it starts over).
EXPIRING_KEYS = 200_000
# Records prepared between two hand-backs of the event loop: about a millisecond of
# evaluation (a hand-back costs 3 to 5 us, so more often costs the hot path percents).
PREPARE_SLICE = 32


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
    """The Redis side of the engine (:class:`agents.writer.StateWriter`)."""

    async def epochs(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """A new owner epoch per input partition."""

    async def load(
        self,
        claims: Mapping[KeyLayout, Sequence[tuple[str, int]]],
        members: Sequence[tuple[KeyLayout, str]],
        days: range = range(0),
        retention_seconds: int = 7 * 86400,
    ) -> tuple[dict[KeyLayout, dict[str, Fence]], list[MemberState | None]]:
        """Claim partitions of communities first touched and read members' states
        (with the event ids they remembered on ``days``)."""

    async def write(self, batches: Sequence[tuple[str, str, Sequence[bytes]]]) -> list[Any]:
        """Write each (community, offsets key, payload) atomically behind its fence;
        the replies, in order."""

    async def due_members(self, layout: KeyLayout, until_ms: int) -> list[str]:
        """Members whose segment downgrade is due by ``until_ms``."""

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
    fired: Callable[[CommunityWrites], list[tuple[str, dict[str, Any]]]]


OUTBOXES = (
    Outbox("awards", KeyLayout.awards, KeyLayout.award_outbox, lambda w: w.awards),
    Outbox("flags", KeyLayout.flags, KeyLayout.flag_outbox, lambda w: w.flags),
    Outbox("segments", KeyLayout.segment_changes, KeyLayout.segment_outbox, lambda w: w.changes),
)


@dataclass(slots=True)
class BatchOutcome:
    applied: int = 0
    duplicates: int = 0
    invalid: int = 0
    late: int = 0
    moderated: int = 0
    published: int = 0


class StaleBatch(Exception):
    """A batch evaluated before the engine state was reset (a rebalance or a fence):
    it is dropped unwritten and uncommitted, and its records are read again."""


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A decoded and evaluated batch, ready for :meth:`ActivityProcessor.apply`."""

    size: int
    # (community, event_id) -> Kafka record timestamp in seconds, for the latency histogram.
    stamps: dict[tuple[str, str], float]
    letters: list[DeadLetter]
    writes: list[CommunityWrites]
    # Per community with something to write: (community, offsets key, script arguments).
    payloads: list[tuple[str, str, list[bytes]]]
    # Per community, records at or below the recorded offset (redelivered, skipped).
    skipped: Counter[str]
    generation: int
    prepare_seconds: float
    # The batch's number (the replies of its write are matched to it).
    number: int = 0


@dataclass(frozen=True, slots=True)
class RecordedBatch:
    """A batch whose effects Redis holds, its outputs not yet published."""

    batch: PreparedBatch
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
    """Turns batches of Kafka records into Redis effects, output messages and metrics.

    It owns the engine state of the partitions its worker owns: the members' states
    (an LRU cache of ``PULSE_STATE_CACHE_MEMBERS``, loaded on first touch) and, per
    community and input partition, the recorded fence (owner epoch, last applied
    offset, stream time).
    """

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
        self._layouts: dict[str, KeyLayout] = {}
        self._cache: OrderedDict[tuple[str, str], MemberState] = OrderedDict()
        self._cap = settings.state_cache_members
        # community -> partition field -> recorded fence (claimed on first touch).
        self._fences: dict[str, dict[str, Fence]] = {}
        # (community, field) -> wall time its stream time last advanced.
        self._advanced: dict[tuple[str, str], float] = {}
        # Owned input partitions: field -> (topic, partition, epoch). With ``adopt``
        # (pulse rebuild) the epoch is whatever the partition's owner has recorded.
        self._owned: dict[str, tuple[str, int, int]] = {}
        self._adopt = False
        # Redis holds no member state of these partitions but what this processor wrote
        # and still caches (a full rebuild, after its wipe): a member missing from the
        # cache is new, and is not read. The first eviction ends it.
        self._blank = False
        self._generation = 0
        self._batches = 0
        # A day of remembered event ids lives in Redis one day past the retention.
        self._keep_ids = self._policy.retention.dedupe_seconds + 86400
        # Keys whose expiry this worker has set (key -> epoch s); forgotten on a reset
        # and on any Redis error, so a key Redis lost gets its expiry again.
        self._expiring: dict[str, int] = {}
        # Held by the one retry loop that backs off from a Redis outage (see _retry).
        self._outage = asyncio.Lock()

    # -- ownership ---------------------------------------------------------------------

    async def assign(self, partitions: Sequence[tuple[str, int]]) -> None:
        """Own ``partitions`` (after a rebalance): new epochs, empty state."""
        epochs = await self._retry(
            lambda: self._writer.epochs(list(partitions)), self._metrics.redis_errors, "take epochs"
        )
        self.reset()
        self._adopt = False
        self._owned = {partition_field(t, p): (t, p, e) for (t, p), e in epochs.items()}

    def adopt(self, partitions: Sequence[tuple[str, int]], blank: bool = False) -> None:
        """Write to ``partitions`` as their current owner (``pulse rebuild``, which runs
        while no worker writes): no new epoch, no fencing of anyone. ``blank``: Redis
        holds no member state of the communities the records belong to (a full rebuild
        has just deleted their keys), so members are not read until one is evicted."""
        self.reset()
        self._adopt = True
        self._blank = blank
        self._owned = {partition_field(t, p): (t, p, 0) for t, p in partitions}

    def reset(self) -> None:
        """Forget every member state and fence; batches prepared before are stale."""
        self._cache.clear()
        self._fences.clear()
        self._advanced.clear()
        self._expiring.clear()
        self._blank = False
        self._generation += 1

    @property
    def cached_members(self) -> int:
        return len(self._cache)

    def layout(self, community: str) -> KeyLayout:
        layout = self._layouts.get(community)
        if layout is None:
            layout = self._layouts[community] = KeyLayout(
                self._settings.redis_key_prefix, community
            )
        return layout

    def _epoch(self, community: str, field: str) -> int:
        """The epoch this processor writes ``field`` of ``community`` with."""
        if self._adopt:
            return self._fences[community][field].epoch
        return self._owned[field][2]

    async def _load(
        self,
        communities: Iterable[str],
        members: Iterable[tuple[str, str]],
        received: Sequence[int] = (),
    ) -> None:
        """Claim the owned partitions in communities first touched and load the states
        of members not cached, in one round trip.

        A member's remembered event ids are read for the days the dedupe retention
        reaches back from the ``received`` times (ms) of the batch's records (from the
        wall clock when there are none): the days its next events can be judged on.
        """
        claims = {
            self.layout(c): [(f, 0 if self._adopt else e) for f, (_, _, e) in self._owned.items()]
            for c in communities
            if c not in self._fences
        }
        missing = [(c, m) for c, m in members if (c, m) not in self._cache]
        if self._blank:
            self._cache.update((key, MemberState(scored=True)) for key in missing)
            missing = []
        if not claims and not missing:
            return
        keep = self._policy.retention.dedupe_seconds
        generation = self._generation
        wall = int(self._clock() * 1000)
        first, last = (min(received), max(received)) if received else (wall, wall)
        days = range(dedupe_horizon(first, keep) - 1, last // DAY_MS + 1) if missing else range(0)
        fences, states = await self._retry(
            lambda: self._writer.load(
                claims, [(self.layout(c), m) for c, m in missing], days, keep
            ),
            self._metrics.redis_errors,
            "apply a batch to Redis (loading member states)",
        )
        if generation != self._generation:
            # A rebalance reset the engine while this load ran: its fences were claimed
            # for partitions owned before, and kept now they would hide the new owner's
            # claim. Drop them; the caller sees the new generation and starts over.
            return
        now = self._clock()
        for layout, recorded in fences.items():
            self._fences[layout.community] = recorded
            for field in recorded:
                self._advanced[(layout.community, field)] = now
        for key, state in zip(missing, states, strict=True):
            # A member without a stored state has no score on any leaderboard.
            self._cache[key] = state if state is not None else MemberState(scored=True)

    def _trim(self) -> None:
        """Evict the least recently used members beyond the cap (their state is in
        Redis: a member is only evicted after the batches that touched it)."""
        cache = self._cache
        while len(cache) > self._cap:
            cache.popitem(last=False)
            self._blank = False

    # -- batches -----------------------------------------------------------------------

    async def process(self, records: Sequence[Record]) -> BatchOutcome:
        """Prepare and apply one batch (see :meth:`prepare` and :meth:`apply`)."""
        return await self.apply(await self.prepare(records))

    async def prepare(
        self,
        records: Sequence[Record],
        every: int = 0,
        loading: Callable[[], None] | None = None,
    ) -> PreparedBatch:
        """Decode, validate, load what is missing, evaluate and encode a batch.

        The only I/O is the load of the batch's new members (one round trip). Split
        from :meth:`apply` so that the worker can prepare the next batch while Redis
        applies this one: the members' states in memory already hold this batch's
        effects. ``every`` > 0 hands the event loop back after that many records.
        ``loading`` is called when the records are decoded, just before the load is
        sent (the worker then lets the batch before this one write: see
        :mod:`agents.consumer`).
        """
        started = time.perf_counter()
        now = self._clock()
        stamps: dict[tuple[str, str], float] = {}
        letters: list[DeadLetter] = []
        decoded: list[tuple[Activity, str, int, int]] = []
        skew, limit = self._settings.max_future_skew, self._settings.max_message_bytes
        # Taken together: the records are filtered by this ownership, so a reset from
        # here on (the decode loop yields) makes the batch stale.
        owned, generation = self._owned, self._generation
        for done, record in enumerate(records, 1):
            item = decode(record, now, skew, limit)
            if isinstance(item, DeadLetter):
                letters.append(item)
            else:
                field = partition_field(record.topic, record.partition)
                if field in owned:
                    decoded.append((item, field, record.offset, max(0, record.timestamp)))
                    stamps.setdefault((item.community, item.event_id), record.timestamp / 1000)
            if every and not done % every:
                await asyncio.sleep(0)
        if loading is not None:
            loading()
        await self._load(
            {a.community for a, *_ in decoded},
            {(a.community, a.member_id) for a, *_ in decoded},
            [r or int(a.occurred_at * 1000) for a, _, _, r in decoded],
        )
        if generation != self._generation:
            raise StaleBatch("the engine state was reset while the batch loaded")
        policy, cache, fences = self._policy, self._cache, self._fences
        writes: dict[str, CommunityWrites] = {}
        written: dict[str, dict[str, Fence]] = {}
        skipped: Counter[str] = Counter()
        for done, (activity, field, offset, received) in enumerate(decoded, 1):
            community = activity.community
            fence = fences[community][field]
            if offset <= fence.offset:
                skipped[community] += 1
                continue
            fence.offset = offset
            at = int(activity.occurred_at * 1000)
            if at > fence.stream_ms:
                fence.stream_ms = at
                self._advanced[(community, field)] = now
            out = writes.get(community)
            if out is None:
                out = writes[community] = CommunityWrites(self.layout(community))
            key = (community, activity.member_id)
            cache.move_to_end(key)
            evaluate(cache[key], activity, policy, out, fence.stream_ms / 1000, received)
            written.setdefault(community, {})[field] = fence
            if every and not done % every:
                await asyncio.sleep(0)
                if generation != self._generation:
                    raise StaleBatch("the engine state was reset while the batch was evaluated")
        payloads = []
        self._batches += 1
        number = self._batches
        expiring = self._expiring
        if len(expiring) > EXPIRING_KEYS:
            expiring.clear()
        for community, out in writes.items():
            # A key's expiry is set once, not with every batch that writes it: the
            # current boards and window buckets take most batches' writes.
            expire = out.expire
            for name in [k for k, at in expire.items() if expiring.get(k) == at]:
                del expire[name]
            incremented = out.incremented()
            for name, at in expire.items():
                if name in incremented:
                    expiring[name] = at
            recorded = {
                f: (self._epoch(community, f), fence.offset, fence.stream_ms)
                for f, fence in written[community].items()
            }
            payloads.append(
                (
                    community,
                    out.layout.offsets(),
                    payload(out, recorded, now, self._keep_ids, number),
                )
            )
        self._trim()
        return PreparedBatch(
            len(records),
            stamps,
            letters,
            list(writes.values()),
            payloads,
            skipped,
            generation,
            time.perf_counter() - started,
            number,
        )

    async def prepare_cooperatively(
        self, records: Sequence[Record], loading: Callable[[], None] | None = None
    ) -> PreparedBatch:
        """:meth:`prepare`, handing the event loop back every few records, so that the
        batch before it (its write's reply, its outputs, its commit) is not held up."""
        return await self.prepare(records, every=PREPARE_SLICE, loading=loading)

    async def apply(self, batch: PreparedBatch) -> BatchOutcome:
        """Apply a prepared batch: dead letters, Redis effects, outputs, metrics.

        Returns once every effect is stored; only then may the caller acknowledge the
        batch's records. The same as :meth:`record` then :meth:`publish`.
        """
        return await self.publish(await self.record(batch))

    async def record(self, batch: PreparedBatch) -> RecordedBatch:
        """The first half of :meth:`apply`: dead letters, then the Redis effects.

        Raises :class:`StaleBatch` for a batch prepared before a reset, and
        :class:`~agents.writer.Fenced` (after resetting) when a newer owner holds one
        of its partitions: nothing of that community's write is applied (the other
        communities' writes may be, and their outputs are published before it raises).
        """
        started = time.perf_counter()
        m = self._metrics
        if batch.generation != self._generation:
            raise StaleBatch("the batch was evaluated before the engine state was reset")
        letters = batch.letters
        if letters:
            await self._retry(
                lambda: self._dead_letters.publish(letters),
                m.dlq_errors,
                "publish to the dead-letter topic",
            )
            for letter in letters:
                m.events_invalid.labels(letter.reason).inc()

        if new := {w.layout.community for w in batch.writes} - self._known_communities:
            # Remembered before anything is recorded in an outbox, so that a restarted
            # worker knows whose outboxes to drain.
            await self._retry(
                lambda: self._writer.remember_communities(sorted(new)),
                m.redis_errors,
                "record communities",
            )
            self._known_communities |= new
        attempts = 0
        replies: list[Any] = []

        async def write() -> None:
            nonlocal attempts, replies
            attempts += 1
            replies = await self._writer.write(batch.payloads)

        try:
            await self._retry(write, m.redis_errors, "apply a batch to Redis")
        except Fenced as fenced:
            m.fenced_batches.inc()
            self.reset()
            # The other communities' writes went through: what they recorded is this
            # worker's to publish (the new owner skips those records by offset).
            await self._drain(fenced.written)
            raise
        for out, reply in zip(batch.writes, replies, strict=True):
            if len(reply) > 1:
                learn(out.members, reply, batch.number)
        return RecordedBatch(batch, attempts, self._clock(), started)

    async def publish(self, recorded: RecordedBatch) -> BatchOutcome:
        """The second half of :meth:`apply`: metrics, then the outputs :meth:`record`
        left in the outboxes, published and cleared.

        Returns once every output is published; only then may the caller acknowledge
        the batch's records. Batches must be published in the order they were recorded.
        """
        batch, applied_at = recorded.batch, recorded.applied_at
        stamps = batch.stamps
        m = self._metrics
        outcome = BatchOutcome(invalid=len(batch.letters))
        newest = 0.0
        # Counted here, added to the metrics once per label set: a per-event .labels()
        # lookup and lock is a visible share of the worker's time.
        processed: Counter[tuple[str, str]] = Counter()
        moderated: Counter[str] = Counter()
        late_events: Counter[str] = Counter()
        duplicates: Counter[str] = Counter(batch.skipped)
        latencies: list[float] = []
        latency = latencies.append
        # Late is judged in event time by the evaluator (against the stream time); an
        # event whose buckets Redis has expired by its own clock is not written to them
        # either, and counts as late too. The minute window bucket expires first.
        keep = self._policy.retention.window_seconds
        for writes in batch.writes:
            community = writes.layout.community
            for activity, code, late in zip(
                writes.activities, writes.codes, writes.late, strict=True
            ):
                if code == MODERATED:
                    moderated[community] += 1
                elif code == APPLIED:
                    newest = max(newest, activity.occurred_at)
                    processed[community, activity.type] += 1
                    latency(max(0.0, applied_at - stamps[(community, activity.event_id)]))
                    if late or (activity.occurred_at // 60 + 1) * 60 + keep <= applied_at:
                        late_events[community] += 1
                else:
                    duplicates[community] += 1
        observe_all(m.processing_latency, latencies)
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
        outcome.published += await self._publish_all(batch.writes)
        if recorded.attempts > 1:
            # An earlier attempt may have been applied with its reply lost; its outputs
            # are the same records (the write is the same payload), already published
            # above. Anything else left in these outboxes goes out now as well.
            outcome.published += await self._drain([w.layout.community for w in batch.writes])
        m.batch_size.observe(batch.size)
        m.batch_duration.observe(batch.prepare_seconds + time.perf_counter() - recorded.started)
        return outcome

    async def _publish_all(self, writes: Sequence[CommunityWrites]) -> int:
        """Publish the outputs the batch recorded, every kind side by side (a batch
        waits for one broker round trip, not one per kind)."""
        publishing = []
        for kind in OUTBOXES:
            fired = [
                (w.layout, identity, record) for w in writes for identity, record in kind.fired(w)
            ]
            if fired:
                publishing.append(self._publish_records(kind, fired))
        return sum(await asyncio.gather(*publishing))

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

    async def _publish_records(
        self, kind: Outbox, fired: Sequence[tuple[KeyLayout, str, dict[str, Any]]]
    ) -> int:
        """Publish recorded outputs of one kind, then clear them from their outboxes."""
        m = self._metrics
        messages = [self._message(kind, lay.community, i, r) for lay, i, r in fired]
        confirmed = [(kind.outbox(lay), i) for lay, i, _ in fired]
        sink = self._sinks[kind.name]
        await self._retry(lambda: sink.publish(messages), m.publish_errors, f"publish {kind.name}")
        await self._retry(
            lambda: self._writer.confirm(confirmed), m.redis_errors, f"clear the {kind.name} outbox"
        )
        for message in messages:
            self._count(kind, message)
        return len(messages)

    async def _publish(self, kind: Outbox, fired: Sequence[tuple[KeyLayout, str]]) -> int:
        """Publish outputs by id, reading their records from Redis (outbox drains)."""
        by_layout: dict[KeyLayout, list[str]] = {}
        for layout, identity in fired:
            by_layout.setdefault(layout, []).append(identity)
        wanted = [(kind.records(layout), ids) for layout, ids in by_layout.items()]
        found = await self._retry(
            lambda: self._writer.records(wanted),
            self._metrics.redis_errors,
            f"read {kind.name} records",
        )
        return await self._publish_records(
            kind,
            [
                (layout, identity, record)
                for layout, records in zip(by_layout, found, strict=True)
                for identity, record in records
            ],
        )

    def stream_times(self) -> dict[tuple[str, str], int]:
        """Per (community, partition field) the stream time in ms: the newest event time
        applied, advanced by the wall clock while the partition has been idle."""
        now = self._clock()
        return {
            (community, field): fence.stream_ms
            + int(max(0.0, now - self._advanced.get((community, field), now)) * 1000)
            for community, fences in self._fences.items()
            for field, fence in fences.items()
            if fence.stream_ms
        }

    async def sweep_segments(self, partition_of: Callable[[str], int] | None = None) -> int:
        """Apply segment downgrades due by stream time; returns the changes published.

        Runs between batches (never while one is in flight). A member's downgrade is
        judged against the stream time of its own partition (``partition_of`` maps a
        member id to its partition number; without it, the newest stream time of the
        community). The change is dated at the end of its grace, so when the sweep
        notices it does not change the message.
        """
        m, policy = self._metrics, self._policy
        generation = self._generation
        await self._load(sorted(self._known_communities), ())
        if generation != self._generation:
            return 0
        streams = self.stream_times()
        by_community: dict[str, dict[str, int]] = {}
        for (community, field), stream in streams.items():
            by_community.setdefault(community, {})[field] = stream
        writes: list[CommunityWrites] = []
        payloads: list[tuple[str, str, list[bytes]]] = []
        for community, fields in by_community.items():
            layout = self.layout(community)
            until = max(fields.values())
            due = await self._retry(
                lambda lay=layout, u=until: self._writer.due_members(lay, u),  # type: ignore[misc]
                m.redis_errors,
                "read due segment downgrades",
            )
            if not due:
                continue
            await self._load((), [(community, member) for member in due])
            if generation != self._generation:
                return 0
            out = CommunityWrites(layout)
            for member in due:
                if partition_of is None:
                    stream = until
                else:
                    number = partition_of(member)
                    mine = [s for f, s in fields.items() if f.rsplit("|", 1)[1] == str(number)]
                    if not mine:
                        continue  # another worker's member
                    stream = max(mine)
                state = self._cache[(community, member)]
                if advance(state, member, stream, policy.segments, out) or member in out.dues:
                    out.members[member] = state
            if out.members:
                check = {f: (self._epoch(community, f), -1, 0) for f in fields}
                writes.append(out)
                payloads.append(
                    (
                        community,
                        layout.offsets(),
                        payload(out, check, self._clock(), self._keep_ids),
                    )
                )
        if not payloads:
            return 0

        async def write() -> None:
            await self._writer.write(payloads)

        try:
            await self._retry(write, m.redis_errors, "apply segment downgrades")
        except Fenced:
            m.fenced_batches.inc()
            self.reset()
            raise
        return await self._publish_all(writes)

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
            layout = self.layout(community)
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

        One Redis outage has one backoff: while a loop backs off, another caller that
        fails (the next batch's load while this batch's write waits) waits for that loop
        to get through, then tries again, so the log reads as one growing series.
        """
        delay = 0.1
        redis_side = errors is self._metrics.redis_errors
        holding = False
        try:
            while True:
                try:
                    return await attempt()
                except (redis.exceptions.RedisError, KafkaUnavailable) as exc:
                    errors.inc()
                    if redis_side:
                        self._expiring.clear()
                    if redis_side and not holding:
                        if self._outage.locked():
                            async with self._outage:
                                pass
                            continue
                        await self._outage.acquire()
                        holding = True
                    log.warning(
                        "could not %s (%s: %s); retrying in %.1fs",
                        what,
                        type(exc).__name__,
                        exc,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    delay = min(MAX_BACKOFF, delay * 2)
        finally:
            if holding:
                self._outage.release()
