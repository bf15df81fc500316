"""``pulse announce``: deliver awards, segment changes and moderation flags to the
community's own tools, once per destination.

It reads the three output topics in its own consumer group (``<PULSE_APP_ID>-announce``),
and for each message and each destination that wants it:

1. skips it when the destination's delivery record in Redis holds its id (a sorted set
   per community and destination: id -> delivered at, kept 30 days);
2. POSTs it (deliver.py: rate limits, retries, backoff);
3. records the id, or sends the message to the dead-letter topic with the reason.

Offsets are committed after every message of a poll was handled, so a restart or a
redelivered record is skipped by the delivery record, not posted again. The one window
where a copy can happen: killed after a destination accepted a POST and before its id
was recorded (one Redis command later). A receiver that de-duplicates by the
``X-Pulse-Delivery`` header (the generic webhook) never sees it twice.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from typing import Any, Final

import orjson
import redis
from kafka import KafkaConsumer, KafkaProducer
from prometheus_client import CollectorRegistry, Counter

from agents.announce.config import AnnounceConfig, Destination
from agents.announce.deliver import Answer, deliver
from agents.announce.render import BadMessage, delivery_id, request
from agents.settings import Settings
from streams.activity import COMMUNITY_RE
from streams.periods import format_instant

log = logging.getLogger(__name__)
KEEP_SECONDS: Final = 30 * 86400
POLL_RECORDS: Final = 50


class AnnounceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.deliveries = Counter(
            "pulse_announce_deliveries",
            "Messages delivered to a destination (2xx).",
            ("community", "destination"),
            registry=registry,
        )
        self.skipped = Counter(
            "pulse_announce_skipped",
            "Messages a destination had already received (a restart or a redelivery).",
            ("destination",),
            registry=registry,
        )
        self.retries = Counter(
            "pulse_announce_retries",
            "Attempts that will be made again (429, 5xx, timeout, connection).",
            ("destination", "reason"),
            registry=registry,
        )
        self.failures = Counter(
            "pulse_announce_failures",
            "Messages sent to the dead-letter topic instead (a 4xx, retries exhausted, "
            "a message that cannot be announced).",
            ("destination", "reason"),
            registry=registry,
        )


def record_key(prefix: str, community: str, destination: str) -> str:
    return f"{prefix}:{{{community}}}:announce:{destination}"


def _reason_label(reason: str) -> str:
    """A bounded label: ``http_404``, ``rate_limited``, ``retries_exhausted``, ..."""
    return reason.split(":", 1)[0][:32]


class Announcer:
    def __init__(
        self,
        settings: Settings,
        config: AnnounceConfig,
        client: redis.Redis,
        producer: KafkaProducer,
        metrics: AnnounceMetrics,
        dlq_topic: str,
        clock: Callable[[], float] = time.time,
        send: Callable[..., Answer] | None = None,
    ) -> None:
        self._settings = settings
        self._config = config
        self._client: Any = client
        self._producer = producer
        self._metrics = metrics
        self._dlq_topic = dlq_topic
        self._clock = clock
        self._send = send
        self.kinds = {
            settings.awards_topic: "awards",
            settings.segments_topic: "segments",
            settings.moderation_topic: "flags",
        }

    def _dead_letter(
        self,
        record: Any,
        event: str,
        destination: str,
        reason: str,
        identity: str | None,
        message: dict[str, Any] | None,
    ) -> None:
        letter = {
            "schema_version": 1,
            "destination": destination,
            "event": event,
            "delivery_id": identity,
            "reason": reason[:500],
            "failed_at": format_instant(self._clock()),
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "message": message,
        }
        if message is None:
            letter["raw"] = (record.value or b"")[:65536].decode("utf-8", "replace")
        self._producer.send(self._dlq_topic, value=orjson.dumps(letter))
        self._metrics.failures.labels(destination, _reason_label(reason)).inc()
        log.warning("dead-lettered %s for %s: %s", identity or "a message", destination, reason)

    def _deliver(
        self, destination: Destination, event: str, message: dict[str, Any], identity: str
    ) -> Answer:
        outgoing = request(destination, event, message, identity, self._config.image_url)

        def retried(reason: str) -> None:
            self._metrics.retries.labels(destination.name, _reason_label(reason)).inc()

        if self._send is not None:
            return deliver(
                outgoing, self._config.max_attempts, self._config.timeout_seconds, retried,
                send=self._send,
            )  # fmt: skip
        return deliver(outgoing, self._config.max_attempts, self._config.timeout_seconds, retried)

    def handle(self, record: Any) -> None:
        event = self.kinds[record.topic]
        try:
            message = orjson.loads(record.value or b"")
            if not isinstance(message, dict):
                raise BadMessage("not a JSON object")
            community = message.get("community")
            if not isinstance(community, str) or COMMUNITY_RE.fullmatch(community) is None:
                raise BadMessage("no valid community")
            identity = delivery_id(event, message)
        except (orjson.JSONDecodeError, BadMessage) as exc:
            self._dead_letter(record, event, "-", f"invalid_message: {exc}", None, None)
            return
        prefix = self._settings.redis_key_prefix
        for destination in self._config.destinations:
            if not destination.wants(community, event):
                continue
            key = record_key(prefix, community, destination.name)
            if self._client.zscore(key, identity) is not None:
                self._metrics.skipped.labels(destination.name).inc()
                continue
            try:
                answer = self._deliver(destination, event, message, identity)
            except BadMessage as exc:
                self._dead_letter(
                    record, event, destination.name, f"invalid_message: {exc}", identity, message
                )
                continue
            if answer.done:
                now_ms = int(self._clock() * 1000)
                pipe = self._client.pipeline(transaction=False)
                pipe.zadd(key, {identity: now_ms})
                pipe.zremrangebyscore(key, 0, now_ms - KEEP_SECONDS * 1000)
                pipe.execute()
                self._metrics.deliveries.labels(community, destination.name).inc()
            else:
                self._dead_letter(record, event, destination.name, answer.reason, identity, message)


def run(
    settings: Settings,
    config: AnnounceConfig,
    consumer: KafkaConsumer,
    announcer: Announcer,
    producer: KafkaProducer,
    exit_when_idle: bool = False,
) -> int:
    """Poll, handle, flush the dead letters, commit; until SIGTERM/SIGINT."""
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    handled = 0
    while not stopping:
        polled = consumer.poll(timeout_ms=1000, max_records=POLL_RECORDS)
        records = [r for batch in polled.values() for r in batch]
        if not records:
            if exit_when_idle and _caught_up(consumer):
                break
            continue
        for record in records:
            announcer.handle(record)
            handled += 1
        producer.flush(timeout=30)
        consumer.commit()
    log.info("announce: stopping after %d message(s)", handled)
    consumer.close()
    producer.close(timeout=5)
    return 0


def _caught_up(consumer: KafkaConsumer) -> bool:
    assigned = consumer.assignment()
    if not assigned:
        return False
    ends = consumer.end_offsets(list(assigned))
    return all(consumer.position(tp) >= ends[tp] for tp in assigned)
