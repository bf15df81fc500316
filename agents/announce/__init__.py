"""``pulse announce``: awards, segment changes and moderation flags, delivered to Discord,
Slack, Discourse and signed webhooks (see service.py)."""

from __future__ import annotations

import argparse
import logging

from agents.cli import EXIT_SERVICE, EXIT_USAGE, CliError
from agents.settings import Settings

log = logging.getLogger(__name__)


def cmd_announce(args: argparse.Namespace, settings: Settings) -> int:
    from kafka import KafkaConsumer
    from prometheus_client import CollectorRegistry, start_http_server

    from agents.announce.config import AnnounceConfigError, load
    from agents.announce.service import AnnounceMetrics, Announcer, run
    from agents.cli import ensure_port_free
    from agents.ingest import quiet_kafka
    from agents.kafka_io import KafkaError, client_options, ensure_topics, make_producer
    from agents.store import connect

    try:
        config = load(args.config)
    except AnnounceConfigError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    dlq_topic = args.dlq_topic or f"{settings.awards_topic.rsplit('.', 2)[0]}.announce.dlq"
    from agents.log_limit import limit_dependency_logs

    # A long-running service: Kafka and Redis trouble shows, at most a line a second each.
    quiet_kafka(settings)
    limit_dependency_logs()
    client = connect(settings.redis_url.reveal())
    client.ping()
    registry = CollectorRegistry()
    metrics = AnnounceMetrics(registry)
    if args.metrics_port:
        ensure_port_free(args.metrics_bind, args.metrics_port, "--metrics-port")
        start_http_server(args.metrics_port, addr=args.metrics_bind, registry=registry)
    try:
        ensure_topics(settings, extra=[dlq_topic])
        producer = make_producer(settings)
        announcer = Announcer(settings, config, client, producer, metrics, dlq_topic)
        consumer = KafkaConsumer(
            *announcer.kinds,
            **client_options(settings),
            group_id=f"{settings.app_id}-announce",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
        )
    except KafkaError as exc:
        raise CliError(
            f"Kafka at {','.join(settings.kafka_bootstrap_servers)}: {exc}", EXIT_SERVICE
        ) from None
    names = ", ".join(f"{d.name} ({d.kind})" for d in config.destinations)
    log.info("announce: delivering to %s; dead letters to %s", names, dlq_topic)
    return run(settings, config, consumer, announcer, producer, args.exit_when_idle)
