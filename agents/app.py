"""The composition root: builds the Faust app and wires Redis, Kafka and metrics into it.

``create_app(settings)`` returns a ready ``faust.App`` with the activity agent and the
web views registered; ``pulse worker`` runs it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence
from typing import Any

import faust
import orjson
from prometheus_client import CollectorRegistry

from agents import web
from agents.health import CommunityHealthCollector
from agents.metrics import PulseMetrics
from agents.processor import ActivityProcessor, DeadLetter, KafkaUnavailable, PreparedBatch
from agents.settings import Settings
from agents.store import BatchWriter, Reader, connect, connect_async

log = logging.getLogger(__name__)


def _credentials(settings: Settings) -> Any:
    protocol = settings.kafka_security_protocol
    context = None
    if protocol.endswith("SSL"):
        context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
        if settings.kafka_ssl_certfile:
            context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
    if protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.reveal(),
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


class FaustDeadLetters:
    """Dead-letter sink on a Faust topic: original key and bytes, reason in headers.

    A key or value too big to be published again (the input topic may take a message
    that, with the headers added, exceeds the producer's 1 MiB request limit) is cut to
    ``MAX_VALUE``/``MAX_KEY`` bytes, its original length in ``pulse-truncated-value``
    or ``pulse-truncated-key``. Retrying the full copy could never succeed and would
    stall the worker on that one message.
    """

    MAX_VALUE = 256 * 1024
    MAX_KEY = 1024

    def __init__(self, topic: Any) -> None:
        self._topic = topic

    @classmethod
    def fit(cls, letter: DeadLetter) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
        """The key, value and headers to publish for ``letter``."""
        key, value, headers = letter.key, letter.value, letter.headers()
        if key is not None and len(key) > cls.MAX_KEY:
            headers.append(("pulse-truncated-key", str(len(key)).encode()))
            key = key[: cls.MAX_KEY]
        if len(value) > cls.MAX_VALUE:
            headers.append(("pulse-truncated-value", str(len(value)).encode()))
            value = value[: cls.MAX_VALUE]
        return key, value, headers

    async def publish(self, letters: Sequence[DeadLetter]) -> None:
        try:
            pending = []
            for letter in letters:
                key, value, headers = self.fit(letter)
                pending.append(await self._topic.send(key=key, value=value, headers=headers))
            await asyncio.gather(*pending)
        except Exception as exc:  # aiokafka raises many kinds; all mean "not stored"
            raise KafkaUnavailable(str(exc)) from exc


class FaustPublisher:
    """Output messages on a Faust topic: key member_id, value the JSON message only."""

    def __init__(self, topic: Any) -> None:
        self._topic = topic

    async def publish(self, messages: Sequence[dict[str, Any]]) -> None:
        try:
            pending = [
                await self._topic.send(key=m["member_id"].encode(), value=orjson.dumps(m))
                for m in messages
            ]
            await asyncio.gather(*pending)
        except Exception as exc:  # aiokafka raises many kinds; all mean "not stored"
            raise KafkaUnavailable(str(exc)) from exc


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> faust.App:
    """Build the worker app from ``settings`` (the only place adapters are wired)."""
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap_servers],
        broker_credentials=_credentials(settings),
        store="memory://",
        # Faust keeps its own small state here; all product state is in Redis.
        datadir=settings.data_dir,
        autodiscover=False,
        web_bind=settings.web_bind,
        web_port=settings.web_port,
        web_host=settings.web_bind,
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_enabled=True,
        loghandlers=[],
        # Faust would otherwise read unprefixed variables (WEB_BIND, WEB_PORT,
        # BROKER_URL, ...) from the environment and let them override PULSE_*: a stray
        # WEB_BIND=0.0.0.0 would expose the API. Settings come from PULSE_* only.
        env={},
        stream_wait_empty=settings.shutdown_wait,
    )
    metrics = PulseMetrics(registry if registry is not None else CollectorRegistry())
    activity_topic = app.topic(
        *settings.activity_topics, key_serializer="raw", value_serializer="raw"
    )
    dlq_topic = app.topic(settings.dlq_topic, key_serializer="raw", value_serializer="raw")
    outputs = {
        "awards": settings.awards_topic,
        "flags": settings.moderation_topic,
        "segments": settings.segments_topic,
    }
    sinks = {
        kind: FaustPublisher(app.topic(topic, key_serializer="raw", value_serializer="raw"))
        for kind, topic in outputs.items()
    }
    redis_url = settings.redis_url.reveal()
    state: dict[str, Any] = {}
    # The asyncio Redis client connects lazily, inside the worker's event loop.
    writer = BatchWriter(connect_async(redis_url), settings.redis_key_prefix)
    processor = ActivityProcessor(settings, writer, FaustDeadLetters(dlq_topic), metrics, sinks)
    input_topics = set(settings.activity_topics)

    @app.agent(activity_topic, name="activity")
    async def process_activity(stream: Any) -> None:
        recovered = await processor.drain_outboxes()
        if recovered:
            log.info("published %d message(s) left in outboxes by a previous run", recovered)
        # One batch is applied while the next one is taken and prepared: Redis runs the
        # Lua call of batch N while this process decodes and plans batch N+1. Batches
        # are still applied one at a time and in order.
        in_flight: asyncio.Task[None] | None = None
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within):
            messages = [event.message for event in events]
            # take_events acks the batch in a `finally` as soon as this body asks for the
            # next batch, also when it is left by an exception or a cancellation (a
            # shutdown that does not wait for streams), and the consumer then commits those
            # offsets. An extra reference on each message keeps that ack from completing;
            # the task that applies the batch acks it once more, and only that final ack
            # lets the consumer commit. An unapplied batch is never committed and is
            # redelivered. Cancelled here, the agent leaves the batch in flight to go on
            # alone.
            for message in messages:
                message.incref()
            batch = processor.prepare(messages)
            if in_flight is not None:
                await in_flight
            in_flight = asyncio.ensure_future(apply_then_ack(stream, batch, events))
        if in_flight is not None:
            await in_flight

    async def apply_then_ack(stream: Any, batch: PreparedBatch, events: Sequence[Any]) -> None:
        delay = 0.5
        while True:
            try:
                outcome = await processor.apply(batch)
                break
            except Exception:
                # Redis and broker outages are retried inside apply(); anything else (a
                # bug, an unexpected error) must not skip the batch either: keep it, say
                # so loudly, and try again.
                log.exception("batch of %d failed; retrying in %.1fs", len(events), delay)
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)
        for event in events:
            await stream.ack(event)
        log.debug("batch of %d: %s", len(events), outcome)

    # An exception that leaves a Faust timer crashes the whole worker, so the periodic
    # jobs log their failures and try again on the next tick instead.
    @app.timer(interval=settings.segment_sweep_seconds)  # type: ignore[untyped-decorator]
    async def sweep_segments() -> None:
        try:
            changed = await processor.sweep_segments()
        except Exception:
            log.exception(
                "segment sweep failed; trying again in %.0fs", settings.segment_sweep_seconds
            )
            return
        if changed:
            log.info("segment sweep: %d downgrade(s) published", changed)

    @app.timer(interval=10.0)  # type: ignore[untyped-decorator]
    async def measure_consumer_lag() -> None:
        try:
            lag = await consumer_lag()
        except Exception:
            log.exception("could not measure the consumer lag")
            return
        for topic, value in lag.items():
            metrics.consumer_lag.labels(topic).set(value)

    async def consumer_lag() -> dict[str, int]:
        """Messages behind the high watermark, per input topic, over this worker's partitions.

        A partition whose high watermark or position is not known yet (just assigned, or
        the broker is restarting) is left out until it is.
        """
        assigned = [tp for tp in app.consumer.assignment() if tp.topic in input_topics]
        lag: dict[str, int] = dict.fromkeys(input_topics, 0)
        for tp in assigned:
            position = await app.consumer.position(tp)
            highwater = app.consumer.highwater(tp)
            if position is not None and highwater is not None:
                lag[tp.topic] += max(0, highwater - position)
        return lag

    def reader() -> Reader:
        if "reader" not in state:
            state["reader"] = Reader(
                connect(redis_url), settings.redis_key_prefix, settings.segments
            )
        return state["reader"]  # type: ignore[no-any-return]

    metrics.registry.register(CommunityHealthCollector(reader))

    web.register(app, metrics, reader)
    app.pulse_metrics = metrics  # type: ignore[attr-defined]
    return app
