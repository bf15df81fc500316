"""The worker's view of its dependencies, as metrics: is Kafka reachable, is Redis, how
long since records came in and since a batch was applied; plus build and process info.

A probe runs every ``PROBE_SECONDS``: a metadata request to Kafka and a ``PING`` to
Redis, each bounded by ``PROBE_TIMEOUT_SECONDS``. While Kafka cannot be reached the
consumer lag is unknown and reads NaN, never 0.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry, Gauge, PlatformCollector, ProcessCollector

log = logging.getLogger(__name__)

PROBE_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 3.0


def package_version() -> str:
    try:
        return version("community-pulse")
    except PackageNotFoundError:
        return "unknown"


class DependencyHealth:
    """Gauges of the dependencies' health on a registry the caller owns."""

    def __init__(
        self,
        registry: CollectorRegistry,
        prefix: str = "pulse",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self.kafka_up = Gauge(
            f"{prefix}_kafka_up",
            "1 when the last probe reached Kafka (a metadata request), 0 when it did not.",
            registry=registry,
        )
        self.redis_up = Gauge(
            f"{prefix}_redis_up",
            "1 when the last probe reached Redis (PING), 0 when it did not.",
            registry=registry,
        )
        # Unknown until the first probe says otherwise.
        self.kafka_up.set(math.nan)
        self.redis_up.set(math.nan)
        self.last_fetch: float | None = None
        self.last_applied: float | None = None
        Gauge(
            f"{prefix}_kafka_last_fetch_age_seconds",
            "Seconds since the worker last got records from Kafka or, when caught up, last "
            "confirmed it was at the end of its partitions (NaN before the first).",
            registry=registry,
        ).set_function(lambda: self._age(self.last_fetch))
        Gauge(
            f"{prefix}_last_applied_batch_age_seconds",
            "Seconds since a batch was last applied to Redis and committed (NaN before the first).",
            registry=registry,
        ).set_function(lambda: self._age(self.last_applied))
        Gauge(
            f"{prefix}_build_info",
            "Always 1; the version of community-pulse running.",
            ["version"],
            registry=registry,
        ).labels(package_version()).set(1)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)

    def _age(self, at: float | None) -> float:
        return math.nan if at is None else max(0.0, self._clock() - at)

    def fetched(self) -> None:
        self.last_fetch = self._clock()

    def applied(self) -> None:
        self.last_applied = self._clock()


async def probe(check: Callable[[], Awaitable[object]], what: str) -> bool:
    """Whether ``check`` finished within the probe timeout without raising."""
    try:
        await asyncio.wait_for(check(), PROBE_TIMEOUT_SECONDS)
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        log.debug("%s probe failed: %s: %s", what, type(exc).__name__, exc)
        return False
    return True
