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
from typing import Protocol, TypeVar

import orjson
import redis
from prometheus_client import Counter as PromCounter

from agents.metrics import PulseMetrics
from agents.settings import Settings
from streams.activity import Activity, InvalidActivity, parse_activity
from streams.effects import CommunityPlan, plan_batch

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
    async def apply(self, plans: Sequence[CommunityPlan]) -> list[list[int]]:
        """Apply the plans; per plan, 1 (applied) or 0 (duplicate) per event."""


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._writer = writer
        self._dead_letters = dead_letters
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
            ).values()
        )
        results = await self._retry(
            lambda: self._writer.apply(plans), self._metrics.redis_errors, "apply a batch to Redis"
        )
        applied_at = self._clock()
        m = self._metrics
        for plan, flags in zip(plans, results, strict=True):
            community = plan.layout.community
            for activity, flag, late in zip(plan.activities, flags, plan.late, strict=True):
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
        m.batch_size.observe(len(records))
        m.batch_duration.observe(time.perf_counter() - started)
        return outcome

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
