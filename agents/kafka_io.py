"""Kafka adapters outside the Faust stream: topic administration and the CLI producer.

kafka-python is used here (synchronous, one-shot commands); the worker's own consumer
and producer are Faust's (aiokafka).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from agents.settings import Settings

log = logging.getLogger(__name__)

# How long a command waits for a first broker before it says Kafka is unreachable:
# its one-line error comes within 10 s.
BOOTSTRAP_TIMEOUT_MS = 6000


def client_options(settings: Settings) -> dict[str, Any]:
    """kafka-python connection and security options from the settings."""
    options: dict[str, Any] = {
        "bootstrap_servers": list(settings.kafka_bootstrap_servers),
        "security_protocol": settings.kafka_security_protocol,
        "client_id": f"{settings.app_id}-cli",
        "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
    }
    if settings.kafka_security_protocol.startswith("SASL_"):
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password.reveal(),
        )
    if settings.kafka_security_protocol.endswith("SSL"):
        options.update(
            ssl_cafile=settings.kafka_ssl_cafile,
            ssl_certfile=settings.kafka_ssl_certfile,
            ssl_keyfile=settings.kafka_ssl_keyfile,
        )
    return options


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the aiokafka clients (the worker's, the rebuild's reader)."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
    return context


def ensure_topics(
    settings: Settings, extra: Iterable[str] = (), *, inputs: bool = True
) -> list[str]:
    """Create the input (unless ``inputs`` is false), dead-letter and output topics when
    missing; returns those created."""
    outputs = (settings.awards_topic, settings.segments_topic, settings.moderation_topic)
    wanted = [*(settings.activity_topics if inputs else ()), settings.dlq_topic, *outputs, *extra]
    admin = KafkaAdminClient(**client_options(settings), request_timeout_ms=15000)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in dict.fromkeys(wanted) if t not in existing]
        # Three replicas where the cluster has them, one on a single-node dev broker.
        replicas = min(3, len(admin.describe_cluster()["brokers"]))
        created: list[str] = []
        for topic in missing:
            try:
                admin.create_topics([NewTopic(topic, settings.topic_partitions, replicas)])
                created.append(topic)
            except TopicAlreadyExistsError:
                pass  # another worker created it first
        return created
    finally:
        admin.close()


def make_producer(settings: Settings) -> KafkaProducer:
    """A producer that waits for all in-sync replicas and retries without duplicating order."""
    return KafkaProducer(
        **client_options(settings),
        acks="all",
        linger_ms=5,
        retries=5,
        max_in_flight_requests_per_connection=1,
    )


__all__ = ["KafkaError", "client_options", "ensure_topics", "make_producer", "ssl_context"]
