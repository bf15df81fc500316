"""The activity pipeline of one batch: decode, validate, plan, apply, dead-letter, count.

Kept free of Faust so it can be driven by the Faust agent, the rebuild command or a
test alike. Nothing here acknowledges Kafka records: the caller does, after
:meth:`ActivityProcessor.process` has returned, i.e. after Redis and the DLQ hold
every effect of the batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

import orjson
import redis
from prometheus_client import Counter as PromCounter

from agents.metrics import PulseMetrics
from agents.settings import Settings
from streams.activity import Activity, InvalidActivity, parse_activity
from streams.badges import award_message
from streams.effects import Applied, CommunityPlan, plan_batch
from streams.keys import KeyLayout

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BACKOFF = 5.0


class Record(Protocol):
    """The parts of a Kafka record the pipeline reads (a Faust ``Message`` fits)."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp: float


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
    async def apply(self, plans: Sequence[CommunityPlan]) -> list[Applied]:
        """Apply the plans; per plan, a flag per event and the awards recorded."""

    async def pending_awards(self, layout: KeyLayout) -> list[tuple[str, dict[str, Any]]]:
        """Recorded, unpublished awards of one community: (award_id, record)."""

    async def confirm_published(self, confirmed: Sequence[tuple[KeyLayout, str]]) -> None:
        """Take published awards out of the outbox."""

    async def communities(self) -> list[str]:
        """Every community the writer has seen."""

    async def remember_communities(self, communities: Sequence[str]) -> None:
        """Note communities seen in a batch."""


class AwardSink(Protocol):
    async def publish(self, messages: Sequence[dict[str, Any]]) -> None:
        """Publish award messages (key member_id) and return once the broker has them all."""


class KafkaUnavailable(Exception):
    """The broker did not take a dead letter; the sink raises it so the batch is retried."""


class DeadLetterSink(Protocol):
    async def publish(self, letters: Sequence[DeadLetter]) -> None:
        """Publish every letter and return once the broker has acknowledged all of them."""


@dataclass(slots=True)
class BatchOutcome:
    applied: int = 0
    duplicates: int = 0
    invalid: int = 0
    late: int = 0
    awarded: int = 0


def decode(record: Record, now: float, max_future_skew: float) -> Activity | DeadLetter:
    """One record to an :class:`Activity`, or the :class:`DeadLetter` that says why not."""
    value = record.value if record.value is not None else b""
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        failure = InvalidActivity("invalid_json", "the message is not valid UTF-8 JSON")
    else:
        try:
            activity = parse_activity(obj, now=now, max_future_skew=max_future_skew)
        except InvalidActivity as exc:
            failure = exc
        else:
            return activity
    return DeadLetter(
        record.key,
        value,
        failure.reason,
        failure.detail,
        failure.field,
        record.topic,
        record.partition,
        record.offset,
    )


class ActivityProcessor:
    """Turns batches of Kafka records into Redis effects, DLQ letters and metrics."""

    def __init__(
        self,
        settings: Settings,
        writer: EffectWriter,
        dead_letters: DeadLetterSink,
        metrics: PulseMetrics,
        awards: AwardSink,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._writer = writer
        self._dead_letters = dead_letters
        self._awards = awards
        self._known_communities: set[str] = set()
        self._metrics = metrics
        self._clock = clock

    async def process(self, records: Sequence[Record]) -> BatchOutcome:
        started = time.perf_counter()
        now = self._clock()
        outcome = BatchOutcome()
        activities: list[Activity] = []
        stamps: dict[tuple[str, str], float] = {}
        letters: list[DeadLetter] = []
        skew = self._settings.max_future_skew
        for record in records:
            decoded = decode(record, now, skew)
            if isinstance(decoded, DeadLetter):
                letters.append(decoded)
            else:
                activities.append(decoded)
                stamps.setdefault((decoded.community, decoded.event_id), record.timestamp)
        if letters:
            await self._retry(
                lambda: self._dead_letters.publish(letters),
                self._metrics.dlq_errors,
                "publish to the dead-letter topic",
            )
            for letter in letters:
                self._metrics.events_invalid.labels(letter.reason).inc()
            outcome.invalid = len(letters)

        plans = list(
            plan_batch(
                activities,
                self._settings.redis_key_prefix,
                self._settings.points,
                self._settings.retention,
                now,
                self._settings.catalog,
            ).values()
        )
        if new := {p.layout.community for p in plans} - self._known_communities:
            # Remembered before anything can be awarded, so that a restarted worker knows
            # whose award outbox to drain.
            await self._retry(
                lambda: self._writer.remember_communities(sorted(new)),
                self._metrics.redis_errors,
                "record communities",
            )
            self._known_communities |= new
        results = await self._retry(
            lambda: self._writer.apply(plans), self._metrics.redis_errors, "apply a batch to Redis"
        )
        applied_at = self._clock()
        m = self._metrics
        awards: list[tuple[KeyLayout, dict[str, Any]]] = []
        for plan, result in zip(plans, results, strict=True):
            community = plan.layout.community
            for identity in result.fired:
                activity, badge, tier = plan.checks[identity]
                awards.append(
                    (
                        plan.layout,
                        award_message(
                            community,
                            identity,
                            activity.member_id,
                            badge.id,
                            tier,
                            int(activity.occurred_at * 1000),
                            activity.event_id,
                            badge,
                        ),
                    )
                )
            for activity, flag, late in zip(plan.activities, result.flags, plan.late, strict=True):
                if flag:
                    outcome.applied += 1
                    m.events_processed.labels(community, activity.type).inc()
                    m.processing_latency.observe(
                        max(0.0, applied_at - stamps[(community, activity.event_id)])
                    )
                    if late:
                        outcome.late += 1
                        m.events_late.labels(community).inc()
                else:
                    outcome.duplicates += 1
                    m.events_duplicate.labels(community).inc()
        # Repeats of an event_id inside one batch were dropped by the planner.
        planned = {plan.layout.community: len(plan.activities) for plan in plans}
        for community, valid in Counter(a.community for a in activities).items():
            if repeats := valid - planned[community]:
                outcome.duplicates += repeats
                m.events_duplicate.labels(community).inc(repeats)
        if awards:
            await self.publish_awards(awards)
            outcome.awarded = len(awards)
        m.batch_size.observe(len(records))
        m.batch_duration.observe(time.perf_counter() - started)
        return outcome

    async def publish_awards(self, awards: Sequence[tuple[KeyLayout, dict[str, Any]]]) -> None:
        """Publish award messages, then clear them from the outbox.

        An award is recorded in Redis (with its outbox entry) by the same atomic call that
        applied the event; it leaves the outbox only after the broker acknowledged it. A
        crash in between leaves it in the outbox, and :meth:`drain_outbox` publishes it
        again on start-up: at least once, with a deterministic ``award_id``.
        """
        await self._retry(
            lambda: self._awards.publish([msg for _, msg in awards]),
            self._metrics.award_errors,
            "publish awards",
        )
        await self._retry(
            lambda: self._writer.confirm_published([(lay, msg["award_id"]) for lay, msg in awards]),
            self._metrics.redis_errors,
            "clear the award outbox",
        )
        for _, msg in awards:
            self._metrics.badges_awarded.labels(
                msg["community"], msg["badge"], msg["tier"] or ""
            ).inc()

    async def drain_outbox(self) -> int:
        """Publish awards a previous run recorded but did not confirm; returns how many."""
        catalog = {badge.id: badge for badge in self._settings.catalog}
        prefix = self._settings.redis_key_prefix
        communities = await self._retry(
            self._writer.communities, self._metrics.redis_errors, "list communities"
        )
        total = 0
        for community in communities:
            layout = KeyLayout(prefix, community)
            while True:
                pending = await self._retry(
                    partial(self._writer.pending_awards, layout),
                    self._metrics.redis_errors,
                    "read the award outbox",
                )
                if not pending:
                    break
                await self.publish_awards(
                    [
                        (
                            layout,
                            award_message(
                                community,
                                identity,
                                r["member_id"],
                                r["badge"],
                                r["tier"] or None,
                                int(r["at_ms"]),
                                r["evidence"],
                                catalog.get(r["badge"]),
                            ),
                        )
                        for identity, r in pending
                    ]
                )
                total += len(pending)
        return total

    async def _retry(
        self, attempt: Callable[[], Awaitable[T]], errors: PromCounter, what: str
    ) -> T:
        """Run ``attempt`` until it succeeds, backing off on connection-level failures.

        The batch is not acknowledged while this waits, so Kafka offsets never move past
        effects that are not in Redis and the DLQ.
        """
        delay = 0.1
        while True:
            try:
                return await attempt()
            except (
                redis.exceptions.ConnectionError,
                redis.exceptions.TimeoutError,
                redis.exceptions.BusyLoadingError,
                KafkaUnavailable,
            ) as exc:
                errors.inc()
                log.warning(
                    "could not %s (%s: %s); retrying in %.1fs", what, type(exc).__name__, exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(MAX_BACKOFF, delay * 2)
