"""Prometheus metrics of the worker.

Built on a registry passed in (``PulseMetrics(CollectorRegistry())`` in tests), never
the global one. Labels are bounded: community, type, reason; never member ids.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


def observe_all(histogram: Histogram, values: list[float]) -> None:
    """``histogram.observe(v)`` for every value, with one update per bucket: a call per
    event takes a lock and walks the buckets, a visible share of the worker's time.

    Uses the histogram's own bounds and cells (``_upper_bounds``, ``_buckets``,
    ``_sum``: prometheus_client keeps them per bucket, not cumulative), so the series
    are exactly those of the per-value calls (a unit test compares the two).
    """
    if not values:
        return
    values.sort()
    histogram._sum.inc(sum(values))
    below = 0
    for cell, bound in zip(histogram._buckets, histogram._upper_bounds, strict=True):
        upto = bisect_right(values, bound, below)
        if upto > below:
            cell.inc(upto - below)
            below = upto


class PulseMetrics:
    """All series the worker exports."""

    def __init__(self, registry: CollectorRegistry, prefix: str = "pulse") -> None:
        self.registry = registry
        self.events_processed = Counter(
            f"{prefix}_community_events",
            "Valid events applied to Redis for the first time, by this worker.",
            ("community", "type"),
            registry=registry,
        )
        self.events_invalid = Counter(
            f"{prefix}_events_invalid",
            "Messages rejected by validation and sent to the DLQ.",
            ("reason",),
            registry=registry,
        )
        self.events_duplicate = Counter(
            f"{prefix}_community_events_duplicate",
            "Valid events skipped because their event_id was already applied.",
            ("community",),
            registry=registry,
        )
        self.events_late = Counter(
            f"{prefix}_community_events_late",
            "Events with at least one period or window bucket already past retention.",
            ("community",),
            registry=registry,
        )
        self.processing_latency = Histogram(
            f"{prefix}_processing_latency_seconds",
            "Seconds from the Kafka record timestamp to its effects being applied in Redis.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            f"{prefix}_batch_size",
            "Kafka records per processed batch.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.batch_duration = Histogram(
            f"{prefix}_batch_duration_seconds",
            "Seconds spent decoding and applying a batch.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.badges_awarded = Counter(
            f"{prefix}_community_badges_awarded",
            "Badge awards recorded and published.",
            ("community", "badge", "tier"),
            registry=registry,
        )
        self.publish_errors = Counter(
            f"{prefix}_publish_errors",
            "Failed attempts to publish awards, flags or segment changes (retried).",
            registry=registry,
        )
        self.events_moderated = Counter(
            f"{prefix}_community_events_moderated",
            "Chat messages over a moderation limit: no points, no badges.",
            ("community",),
            registry=registry,
        )
        self.moderation_flags = Counter(
            f"{prefix}_community_moderation_flags",
            "Moderation flags raised and published.",
            ("community", "rule"),
            registry=registry,
        )
        self.segment_changes = Counter(
            f"{prefix}_community_segment_changes",
            "Segment changes published.",
            ("community", "from", "to"),
            registry=registry,
        )
        self.event_time_lag = Gauge(
            f"{prefix}_event_time_lag_seconds",
            "Now minus occurred_at of the newest event in the last applied batch.",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            f"{prefix}_consumer_lag_messages",
            "End offset minus position, summed over this worker's assigned partitions.",
            ("topic",),
            registry=registry,
        )
        self.redis_errors = Counter(
            f"{prefix}_redis_errors",
            "Failed attempts to apply a batch to Redis (retried).",
            registry=registry,
        )
        self.dlq_errors = Counter(
            f"{prefix}_dlq_errors",
            "Failed attempts to publish to the dead-letter topic (retried).",
            registry=registry,
        )
        self.fenced_batches = Counter(
            f"{prefix}_fenced_batches",
            "Batches refused because a newer owner holds one of their partitions (a "
            "worker that lost its partitions while paused; nothing of them was written).",
            registry=registry,
        )
        self.commit_errors = Counter(
            f"{prefix}_commit_errors",
            "Offset commits that failed after the batch was applied (its records are "
            "redelivered; their effects are idempotent).",
            registry=registry,
        )
        self._initialised: set[str] = set()

    def initialise_community(self, community: str, types: Iterable[str]) -> bool:
        """Create the community's per-event label sets at 0 (once), so that ``rate()``
        and ``increase()`` count the first burst after it. Returns whether it was new."""
        if community in self._initialised:
            return False
        self._initialised.add(community)
        for kind in types:
            self.events_processed.labels(community, kind)
        for counter in (self.events_duplicate, self.events_late, self.events_moderated):
            counter.labels(community)
        return True
