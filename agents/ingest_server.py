"""``pulse ingest-server``: signed GitHub and Discourse webhooks, normalized onto Kafka.

``POST /ingest/github`` checks ``X-Hub-Signature-256`` and ``POST /ingest/discourse``
checks ``X-Discourse-Event-Signature``: both are ``sha256=`` and the hex HMAC-SHA256 of
the raw body under the configured secret, compared in constant time. The answers:

- 401: signature missing or wrong (nothing else is looked at)
- 413: body over ``PULSE_INGEST_MAX_BODY_BYTES``
- 400: not JSON, or a required header missing
- 422: valid JSON that cannot be read as the platform's payload, or whose event breaks
  the contract (for example dated in the future)
- 200: understood but nothing to count (a ping, a bot, a closed-but-unmerged PR), with
  the reason
- 202: the events are on Kafka (acknowledged by all in-sync replicas) before this answer
- 503: Kafka did not take the events within ``PUBLISH_TIMEOUT_SECONDS`` (3 s, well
  inside GitHub's 10 s); the sender should redeliver. A message that Kafka takes after
  the answer is harmless: the redelivery carries the same event id.
- 404: the platform's secret is not configured

SIGTERM stops the server within ``SHUTDOWN_GRACE_SECONDS`` (10 s) whatever state
Kafka is in: requests in flight get their answer, then the producer gets a bounded
flush.

Redeliveries are harmless: event ids are derived from the delivery id (GitHub) or the
post id (Discourse), and the worker counts an event id once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from agents.settings import Secret, Settings
from streams.activity import InvalidActivity, parse_activity
from streams.sources import discourse, github
from streams.sources.normalized import Normalized, Outcome

log = logging.getLogger(__name__)

GITHUB_SIGNATURE = "X-Hub-Signature-256"
DISCOURSE_SIGNATURE = "X-Discourse-Event-Signature"

# The longest a webhook waits for Kafka before its 503; GitHub gives up after 10 s.
PUBLISH_TIMEOUT_SECONDS = 3.0
# SIGTERM to exit: requests in flight (each bounded by the publish timeout), then the
# producer's flush.
SHUTDOWN_GRACE_SECONDS = 10.0
_PRODUCER_STOP_SECONDS = 4.0


class EventSink(Protocol):
    async def publish(self, topic: str, messages: Sequence[tuple[bytes, bytes]]) -> None:
        """Return once the broker has acknowledged every (key, value)."""


class IngestMetrics:
    """Counters of the ingest server, on a registry the caller owns."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "pulse_ingest_requests",
            "Webhook requests answered, by platform and HTTP status.",
            ["platform", "status"],
            registry=registry,
        )
        self.events = Counter(
            "pulse_ingest_events",
            "Events published from webhooks, by platform and type.",
            ["platform", "type"],
            registry=registry,
        )
        self.skipped = Counter(
            "pulse_ingest_skipped",
            "Webhook deliveries that gave no event, by platform and reason.",
            ["platform", "reason"],
            registry=registry,
        )


def signature_matches(secret: bytes, body: bytes, header: str) -> bool:
    """Whether ``header`` is ``sha256=<hex HMAC-SHA256 of body>``; constant-time."""
    expected = b"sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
    return hmac.compare_digest(expected, header.strip().encode("utf-8", "replace"))


@dataclass(frozen=True)
class _Route:
    platform: str
    secret: Secret
    secret_env: str
    signature_header: str
    normalize: Callable[[Mapping[str, str], object, float], Outcome | web.Response]


def _json(body: dict[str, Any], status: int) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda v: orjson.dumps(v).decode())


def create_app(
    settings: Settings,
    sink: EventSink,
    metrics: IngestMetrics,
    clock: Callable[[], float] = time.time,
    publish_timeout: float = PUBLISH_TIMEOUT_SECONDS,
) -> web.Application:
    """The ingest web app; ``sink`` publishes (Kafka in production, a fake in tests).

    A publish that has not finished after ``publish_timeout`` seconds answers 503.
    """
    limit = settings.ingest_max_body_bytes
    app = web.Application(client_max_size=limit)
    gh_config = github.GitHubConfig(
        communities=settings.github_communities,
        member_id=settings.github_member_id,
        releases=settings.github_releases,
    )
    dsc_config = discourse.DiscourseConfig(communities=settings.discourse_communities)

    def github_outcome(
        headers: Mapping[str, str], payload: object, now: float
    ) -> Outcome | web.Response:
        event = headers.get("X-GitHub-Event")
        if not event:
            return _json({"error": "X-GitHub-Event header is missing", "status": 400}, 400)
        return github.normalize_github(
            event, payload, gh_config, headers.get("X-GitHub-Delivery") or None
        )

    def discourse_outcome(
        headers: Mapping[str, str], payload: object, now: float
    ) -> Outcome | web.Response:
        event = headers.get("X-Discourse-Event")
        if not event:
            return _json({"error": "X-Discourse-Event header is missing", "status": 400}, 400)
        return discourse.normalize_discourse(
            event,
            payload,
            dsc_config,
            instance=headers.get("X-Discourse-Instance"),
            received_at=now,
        )

    routes = {
        "github": _Route(
            "github",
            settings.github_webhook_secret,
            "PULSE_GITHUB_WEBHOOK_SECRET",
            GITHUB_SIGNATURE,
            github_outcome,
        ),
        "discourse": _Route(
            "discourse",
            settings.discourse_webhook_secret,
            "PULSE_DISCOURSE_WEBHOOK_SECRET",
            DISCOURSE_SIGNATURE,
            discourse_outcome,
        ),
    }

    async def answer(route: _Route, request: web.Request) -> web.Response:
        def reply(body: dict[str, Any], status: int) -> web.Response:
            metrics.requests.labels(route.platform, str(status)).inc()
            return _json(body, status)

        def error(status: int, message: str) -> web.Response:
            return reply({"error": message, "status": status}, status)

        if not route.secret:
            return error(404, f"{route.platform} ingest is off: set {route.secret_env}")
        if request.content_length is not None and request.content_length > limit:
            return error(413, f"the body is larger than {limit} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return error(413, f"the body is larger than {limit} bytes")
        signature = request.headers.get(route.signature_header)
        if not signature:
            return error(401, f"{route.signature_header} header is missing")
        if not signature_matches(route.secret.reveal().encode(), body, signature):
            return error(401, f"{route.signature_header} does not match the body")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return error(400, "the body is not valid UTF-8 JSON")
        now = clock()
        outcome = route.normalize(request.headers, payload, now)
        if isinstance(outcome, web.Response):
            metrics.requests.labels(route.platform, str(outcome.status)).inc()
            return outcome
        if not isinstance(outcome, Normalized):
            metrics.skipped.labels(route.platform, outcome.reason).inc()
            if outcome.malformed:
                return reply(
                    {"error": outcome.detail, "reason": outcome.reason, "status": 422}, 422
                )
            return reply({"accepted": 0, "skipped": outcome.reason, "detail": outcome.detail}, 200)
        for event in outcome.events:
            try:
                parse_activity(event, now=now, max_future_skew=settings.max_future_skew)
            except InvalidActivity as exc:
                metrics.skipped.labels(route.platform, f"invalid_event.{exc.reason}").inc()
                return reply(
                    {"error": exc.detail, "reason": exc.reason, "field": exc.field, "status": 422},
                    422,
                )
        messages = [(e["member_id"].encode(), orjson.dumps(e)) for e in outcome.events]
        try:
            await asyncio.wait_for(
                sink.publish(settings.ingest_topic(route.platform), messages),
                publish_timeout,
            )
        except TimeoutError:
            log.warning(
                "Kafka did not take %s events within %.0f s", route.platform, publish_timeout
            )
            return error(
                503, f"Kafka did not take the events within {publish_timeout:g} s; redeliver later"
            )
        except Exception as exc:  # noqa: BLE001 - any failure means "not stored"; say so
            log.warning("could not publish %s events: %s: %s", route.platform, type(exc), exc)
            return error(503, "Kafka did not take the events; redeliver later")
        for event in outcome.events:
            metrics.events.labels(route.platform, event["type"]).inc()
        return reply(
            {"accepted": len(outcome.events), "event_ids": [e["event_id"] for e in outcome.events]},
            202,
        )

    async def ingest_github(request: web.Request) -> web.Response:
        return await answer(routes["github"], request)

    async def ingest_discourse(request: web.Request) -> web.Response:
        return await answer(routes["discourse"], request)

    async def healthz(request: web.Request) -> web.Response:
        return _json({"ok": True}, 200)

    async def prometheus(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0]
        )

    app.router.add_post("/ingest/github", ingest_github)
    app.router.add_post("/ingest/discourse", ingest_discourse)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", prometheus)
    return app


class KafkaSink:
    """aiokafka producer with ``acks=all`` and idempotence; ``publish`` awaits every ack."""

    def __init__(self, settings: Settings) -> None:
        from aiokafka import AIOKafkaProducer

        options: dict[str, Any] = {
            "bootstrap_servers": list(settings.kafka_bootstrap_servers),
            "client_id": f"{settings.app_id}-ingest",
            "security_protocol": settings.kafka_security_protocol,
            "acks": "all",
            "enable_idempotence": True,
            # Bounds the metadata wait of send() and the life of an unsent batch, so
            # nothing outlives the webhook's answer by much.
            "request_timeout_ms": int(PUBLISH_TIMEOUT_SECONDS * 1000),
        }
        protocol = settings.kafka_security_protocol
        if protocol.endswith("SSL"):
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context(
                cafile=settings.kafka_ssl_cafile,
                certfile=settings.kafka_ssl_certfile,
                keyfile=settings.kafka_ssl_keyfile,
            )
        if protocol.startswith("SASL_"):
            options.update(
                sasl_mechanism=settings.kafka_sasl_mechanism,
                sasl_plain_username=settings.kafka_sasl_username,
                sasl_plain_password=settings.kafka_sasl_password.reveal(),
            )
        self._options = options
        self._factory = AIOKafkaProducer
        self._producer: Any = None

    async def start(self) -> None:
        # aiokafka binds a producer to the running loop, so it is made here.
        self._producer = self._factory(**self._options)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is None:
            return
        try:
            # stop() flushes, which never ends while Kafka is unreachable.
            await asyncio.wait_for(self._producer.stop(), _PRODUCER_STOP_SECONDS)
        except TimeoutError:
            log.warning(
                "Kafka unreachable: the producer stopped without its flush after %.0f s",
                _PRODUCER_STOP_SECONDS,
            )
        except Exception as exc:  # noqa: BLE001 - exiting anyway; say why the flush failed
            log.warning("the producer stopped with %s: %s", type(exc).__name__, exc)

    async def publish(self, topic: str, messages: Sequence[tuple[bytes, bytes]]) -> None:
        pending = [await self._producer.send(topic, value=v, key=k) for k, v in messages]
        await asyncio.gather(*pending)


def run(settings: Settings, bind: str | None = None, port: int | None = None) -> int:
    """Serve until SIGINT/SIGTERM. Returns an exit code."""
    from agents.cli import EXIT_OK, EXIT_SERVICE, EXIT_USAGE, CliError, ensure_port_free
    from agents.ingest import quiet_kafka
    from agents.kafka_io import KafkaError, ensure_topics
    from agents.log_limit import limit_dependency_logs

    quiet_kafka(settings)
    limit_dependency_logs()

    if not settings.github_webhook_secret and not settings.discourse_webhook_secret:
        raise CliError(
            "set PULSE_GITHUB_WEBHOOK_SECRET and/or PULSE_DISCOURSE_WEBHOOK_SECRET: "
            "unsigned webhooks are never accepted",
            EXIT_USAGE,
        )
    host, number = bind or settings.ingest_bind, port or settings.ingest_port
    ensure_port_free(host, number, "PULSE_INGEST_PORT")
    topics = [settings.ingest_topic(p) for p in ("github", "discourse")]
    try:
        ensure_topics(settings, extra=topics)
    except KafkaError as exc:
        raise CliError(
            f"Kafka at {','.join(settings.kafka_bootstrap_servers)}: {exc}", EXIT_SERVICE
        ) from None
    sink = KafkaSink(settings)
    app = create_app(settings, sink, IngestMetrics(CollectorRegistry()))

    async def producer(app: web.Application) -> AsyncIterator[None]:
        await sink.start()
        yield
        await sink.stop()

    app.cleanup_ctx.append(producer)
    enabled = [p for p in ("github", "discourse") if getattr(settings, f"{p}_webhook_secret")]
    log.info(
        "ingest server on http://%s:%d (%s) -> %s",
        host,
        number,
        ", ".join(f"/ingest/{p}" for p in enabled),
        ", ".join(dict.fromkeys(topics)),
    )

    def ready(_: str) -> None:
        print(f"ingest server ready on http://{host}:{number}", flush=True)

    from aiokafka.errors import KafkaError as AsyncKafkaError

    try:
        web.run_app(
            app,
            host=host,
            port=number,
            print=ready,
            access_log=None,
            shutdown_timeout=PUBLISH_TIMEOUT_SECONDS + 1,
        )
    except AsyncKafkaError as exc:
        raise CliError(f"Kafka: {type(exc).__name__}: {exc}", EXIT_SERVICE) from None
    return EXIT_OK
