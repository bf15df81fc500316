"""The worker's engine on the real Redis, without Kafka: made-up records go through the
real :class:`ActivityProcessor` and :class:`StateWriter`; outputs are kept in lists."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from agents.metrics import PulseMetrics
from agents.processor import ActivityProcessor as Processor
from agents.processor import DeadLetter, PreparedBatch
from agents.settings import Settings
from agents.store import connect_async
from agents.writer import StateWriter
from streams.activity import Activity
from streams.periods import format_instant

TOPIC = "pulse.activity"


@dataclass(frozen=True)
class MadeRecord:
    value: bytes
    partition: int
    offset: int
    topic: str = TOPIC
    key: bytes | None = None
    timestamp: int = 0


def encode(activity: Activity) -> bytes:
    body: dict[str, Any] = {
        "event_id": activity.event_id,
        "type": activity.type,
        "member_id": activity.member_id,
        "community": activity.community,
        "source": activity.source,
        "occurred_at": format_instant(activity.occurred_at),
    }
    if activity.channel is not None:
        body["channel"] = activity.channel
    if activity.attributes:
        body["attributes"] = activity.attributes
    return orjson.dumps(body)


class Kept:
    """A sink that keeps what it is given."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def publish(self, messages: Sequence[Any]) -> None:
        self.messages.extend(messages)


@dataclass
class Result:
    """What one batch did: a code per evaluated event and the ids it recorded."""

    codes: list[int] = field(default_factory=list)
    awards: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)


class Engine:
    """One worker's processor, owning ``partitions`` of the input topic."""

    def __init__(
        self,
        redis_url: str,
        prefix: str,
        now: float,
        partitions: int = 4,
        env: dict[str, str] | None = None,
    ) -> None:
        self.now = now
        self.loop = asyncio.new_event_loop()
        self.settings = Settings.from_env(
            {
                "PULSE_REDIS_URL": redis_url,
                "PULSE_REDIS_KEY_PREFIX": prefix,
                "PULSE_MAX_FUTURE_SKEW_SECONDS": str(366 * 86400),
                **(env or {}),
            }
        )
        self.client = connect_async(redis_url)
        self.writer = StateWriter(self.client, prefix)
        self.sinks = {name: Kept() for name in ("awards", "flags", "segments")}
        self.letters = Kept()
        self.metrics = PulseMetrics(CollectorRegistry())
        self.processor = Processor(
            self.settings,
            self.writer,
            self.letters,
            self.metrics,
            self.sinks,
            clock=lambda: self.now,
        )
        self.offsets = [0] * partitions
        self.run(self.processor.assign([(TOPIC, p) for p in range(partitions)]))

    def run(self, step: Any) -> Any:
        return self.loop.run_until_complete(step)

    def close(self) -> None:
        self.run(self.client.aclose())
        self.loop.close()

    def records(self, activities: Sequence[Activity], partition: int = 0) -> list[MadeRecord]:
        """Records of ``activities`` at the next offsets of ``partition``."""
        made = []
        for activity in activities:
            made.append(MadeRecord(encode(activity), partition, self.offsets[partition]))
            self.offsets[partition] += 1
        return made

    def prepare(self, records: Sequence[MadeRecord]) -> PreparedBatch:
        return self.run(self.processor.prepare(records))  # type: ignore[no-any-return]

    def process(self, records: Sequence[MadeRecord]) -> Result:
        batch = self.prepare(records)
        self.run(self.processor.apply(batch))
        result = Result()
        for writes in batch.writes:
            result.codes += writes.codes
            result.awards += [i for i, _ in writes.awards]
            result.flags += [i for i, _ in writes.flags]
            result.changes += [i for i, _ in writes.changes]
        return result

    def feed(self, activities: Sequence[Activity], partition: int = 0) -> Result:
        return self.process(self.records(activities, partition))

    def sweep(self, now: float) -> list[dict[str, Any]]:
        """Run the segment sweep at wall time ``now``; the segment changes it published."""
        self.now = now
        before = len(self.sinks["segments"].messages)
        self.run(self.processor.sweep_segments())
        return self.sinks["segments"].messages[before:]


def dead_letters(engine: Engine) -> list[DeadLetter]:
    return engine.letters.messages
