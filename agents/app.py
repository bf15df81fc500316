"""The composition root: builds the Faust app and wires Redis, Kafka and metrics into it.

``create_app(settings)`` returns a ready ``faust.App`` with the batch consumer of the
input topics, the timers and the web views registered; ``pulse worker`` runs it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from collections.abc import Sequence
from typing import Any

import faust
import orjson
from faust.app.base import BootStrategy
from prometheus_client import CollectorRegistry

from agents import web
from agents.consumer import ActivityConsumer, consumer_options
from agents.dependencies import PROBE_SECONDS, DependencyHealth, probe
from agents.health import CommunityHealthCollector
from agents.kafka_io import ssl_context
from agents.log_limit import limit_dependency_logs
from agents.metrics import PulseMetrics
from agents.processor import ActivityProcessor, DeadLetter, KafkaUnavailable
from agents.settings import Settings
from agents.store import Reader, connect, connect_async
from agents.web.site import Site
from agents.writer import StateWriter

log = logging.getLogger(__name__)


def _credentials(settings: Settings, context: ssl.SSLContext | None) -> Any:
    if settings.kafka_security_protocol.startswith("SASL_"):
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
    """Output messages on a Faust topic: key member_id, value the JSON message only.

    Sent with the app's producer itself: ``Topic.send`` adds a future, a sensor call and
    a debug log line per message, a visible share of the worker's time for a batch
    whose members earn many awards. The producer is the same (acks from all replicas).
    """

    def __init__(self, topic: Any) -> None:
        self._topic = topic

    async def publish(self, messages: Sequence[dict[str, Any]]) -> None:
        try:
            producer = await self._topic.app.maybe_start_producer()
            name = self._topic.get_topic_name()
            send, dumps = producer.send, orjson.dumps
            pending = [
                await send(name, m["member_id"].encode(), dumps(m), None, None, None)
                for m in messages
            ]
            await asyncio.gather(*pending)
        except Exception as exc:  # aiokafka raises many kinds; all mean "not stored"
            raise KafkaUnavailable(str(exc)) from exc


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> faust.App:
    """Build the worker app from ``settings`` (the only place adapters are wired)."""
    context = ssl_context(settings)
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap_servers],
        broker_credentials=_credentials(settings, context),
        store="memory://",
        # Faust keeps its own small state here; all product state is in Redis.
        datadir=settings.data_dir,
        autodiscover=False,
        web_bind=settings.web_bind,
        web_port=settings.web_port,
        web_host=settings.web_bind,
        topic_partitions=settings.topic_partitions,
        producer_acks=-1,
        web_enabled=True,
        loghandlers=[],
        # Faust would otherwise read unprefixed variables (WEB_BIND, WEB_PORT,
        # BROKER_URL, ...) from the environment and let them override PULSE_*: a stray
        # WEB_BIND=0.0.0.0 would expose the API. Settings come from PULSE_* only.
        env={},
    )
    # Faust's own consumer and its per-message stream path stay off: the input is read
    # in batches by ActivityConsumer (agents/consumer.py), a service of this app. Faust
    # runs the producer, the web server, the timers and the worker's lifecycle.
    app.boot_strategy = BootStrategy(app, enable_kafka_consumer=False)
    metrics = PulseMetrics(registry if registry is not None else CollectorRegistry())
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
    writer = StateWriter(connect_async(redis_url), settings.redis_key_prefix)
    processor = ActivityProcessor(settings, writer, FaustDeadLetters(dlq_topic), metrics, sinks)
    health = DependencyHealth(metrics.registry)
    consumer = ActivityConsumer(
        settings, processor, metrics, consumer_options(settings, context), health, loop=app.loop
    )
    app.service(consumer)  # type: ignore[arg-type]

    @app.task  # type: ignore[untyped-decorator]
    async def on_worker_start() -> None:
        # Here, not earlier: the Faust worker sets up its log handlers as it starts.
        limit_dependency_logs()
        await initialise_known_communities()

    # An exception that leaves a Faust timer crashes the whole worker, so the periodic
    # jobs log their failures and try again on the next tick instead. (Segment
    # downgrades are swept by the consumer between batches: they change member state.)
    @app.timer(interval=PROBE_SECONDS)  # type: ignore[untyped-decorator]
    async def probe_dependencies() -> None:
        kafka = await probe(consumer.kafka_reachable, "Kafka")
        redis = await probe(lambda: asyncio.to_thread(ping_redis), "Redis")
        health.kafka_up.set(1 if kafka else 0)
        health.redis_up.set(1 if redis else 0)
        if redis:
            await initialise_known_communities()
        lag: dict[str, float] = dict.fromkeys(settings.activity_topics, math.nan)
        if kafka:
            try:
                lag.update(await consumer.lag())
            except Exception:
                log.exception("could not measure the consumer lag")
            if sum(lag.values()) == 0:
                health.fetched()  # caught up: nothing to fetch is a successful fetch
        # Unknown, not 0, while Kafka cannot be asked.
        for topic, value in lag.items():
            metrics.consumer_lag.labels(topic).set(value)

    def reader() -> Reader:
        if "reader" not in state:
            state["reader"] = Reader(
                connect(redis_url), settings.redis_key_prefix, settings.segments
            )
        return state["reader"]  # type: ignore[no-any-return]

    async def initialise_known_communities() -> None:
        # Label sets at 0 before their first increment, so rate() sees the first burst:
        # at start-up for the communities in Redis, then within a probe of a new one.
        try:
            communities = await asyncio.to_thread(lambda: reader().communities())
        except Exception as exc:  # noqa: BLE001 - tried again at the next probe
            log.debug("could not list the communities: %s", exc)
            return
        for community in communities:
            metrics.initialise_community(community, settings.points)

    def ping_redis() -> object:
        if "ping" not in state:
            state["ping"] = connect(redis_url)
        return state["ping"].ping()

    metrics.registry.register(CommunityHealthCollector(reader, packages=settings.pypi_packages))

    site = Site(
        reader,
        settings.catalog,
        settings.public_url or f"http://{settings.web_bind}:{settings.web_port}",
        settings.profiles,
    )
    web.register(app, metrics, site)
    app.pulse_metrics = metrics  # type: ignore[attr-defined]
    return app
