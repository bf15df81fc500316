"""Community-health metrics, read from Redis at scrape time.

Every worker exports the same values (they come from Redis, not from process memory),
so a freshly restarted worker is right at once; aggregate across workers with ``max``.
Labels are bounded: community, window, segment, type, source, kind, badge, tier, rule.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import (
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from agents.store import Reader
from streams.downloads import Health

log = logging.getLogger(__name__)


def _histogram(name: str, doc: str) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, labels=("community", "kind"))


# The bounds write_batch.lua sorts first responses into (a test keeps the two equal).
FIRST_RESPONSE_BOUNDS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800)


def first_response_buckets(fields: dict[str, str]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative Prometheus buckets and the sum from the Redis ``le:<bound>`` counters.

    Every bound is exported, zeros included, so that ``rate()`` sees a bucket's first
    response as an increase from 0.
    """
    counts = {k.removeprefix("le:"): int(v) for k, v in fields.items() if k.startswith("le:")}
    for limit in FIRST_RESPONSE_BOUNDS:
        counts.setdefault(str(limit), 0)
    finite = sorted((float(b), n) for b, n in counts.items() if b != "+Inf")
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in finite:
        running += count
        buckets.append((f"{bound:g}", float(running)))
    running += counts.get("+Inf", 0)
    buckets.append(("+Inf", float(running)))
    return buckets, float(fields.get("sum", 0.0))


class CommunityHealthCollector(Collector):
    """A Prometheus collector over :meth:`Reader.health` for every known community."""

    def __init__(
        self,
        reader: Callable[[], Reader],
        clock: Callable[[], float] = time.time,
        prefix: str = "pulse",
        packages: Mapping[str, str] | None = None,
    ) -> None:
        self._reader = reader
        # PyPI project -> community (PULSE_PYPI_PACKAGES): the only package labels.
        self._packages = dict(packages or {})
        self._package_rows: list[tuple[str, str, Health | None, dict[str, int]]] = []
        self._clock = clock
        self._prefix = prefix
        # The last figures read, served (marked stale) while Redis cannot be read.
        self._figures: list[tuple[str, dict[str, Any]]] = []
        self._read_at: float | None = None

    def describe(self) -> list[Metric]:
        # Returning nothing keeps registration from calling collect() (and Redis).
        return []

    def collect(self) -> Iterator[Metric]:
        p = self._prefix
        members = GaugeMetricFamily(
            f"{p}_community_members", "Known members.", labels=["community"]
        )
        active = GaugeMetricFamily(
            f"{p}_community_active_members",
            "Members with activity in the window.",
            labels=["community", "window"],
        )
        new = GaugeMetricFamily(
            f"{p}_community_new_members",
            "Members first seen within the window.",
            labels=["community", "window"],
        )
        inactive = GaugeMetricFamily(
            f"{p}_community_inactive_members",
            "Members seen before but silent for 30 days.",
            labels=["community"],
        )
        ratio = GaugeMetricFamily(
            f"{p}_community_engagement_ratio",
            "Active members (30 d) / known members.",
            labels=["community"],
        )
        contributions = GaugeMetricFamily(
            f"{p}_community_contributions_per_active_member",
            "Events in the last 30 days per member active in them.",
            labels=["community"],
        )
        rating = GaugeMetricFamily(
            f"{p}_community_feedback_rating_avg",
            "Average feedback rating (1..5) over 30 days.",
            labels=["community"],
        )
        responses = GaugeMetricFamily(
            f"{p}_community_feedback_responses",
            "Feedback ratings received over 30 days.",
            labels=["community"],
        )
        first_response = _histogram(
            f"{p}_community_first_response_seconds",
            "Seconds from a forum post or GitHub issue to the first reply by someone else.",
        )
        segments = GaugeMetricFamily(
            f"{p}_community_segment_members",
            "Members per segment.",
            labels=["community", "segment"],
        )
        downloads = GaugeMetricFamily(
            f"{p}_package_downloads",
            "PyPI downloads of a configured package over the window (1d, 7d, 30d) ending "
            "on its newest imported day.",
            labels=["community", "package", "window"],
        )
        change = GaugeMetricFamily(
            f"{p}_package_downloads_week_over_week",
            "The last 7 days' PyPI downloads over the 7 before, minus 1 (0.25: 25% more); "
            "absent when the week before had none.",
            labels=["community", "package"],
        )
        newest = GaugeMetricFamily(
            f"{p}_package_downloads_newest_day_timestamp_seconds",
            "Start (UTC midnight) of the newest imported day of a package's downloads.",
            labels=["community", "package"],
        )
        stale = GaugeMetricFamily(
            f"{p}_community_health_stale",
            "1 when Redis could not be read at this scrape and the community-health "
            "figures are those of an earlier scrape, else 0.",
        )
        age = GaugeMetricFamily(
            f"{p}_community_health_age_seconds",
            "Seconds since the community-health figures were read from Redis.",
        )
        now = self._clock()
        try:
            reader = self._reader()
            self._figures = [(c, reader.health(c, now)) for c in reader.communities()]
            if self._packages:
                self._package_rows = reader.package_health(self._packages)
            self._read_at = now
            stale.add_metric([], 0)
        except Exception as exc:  # noqa: BLE001 - a scrape must answer even when Redis does not
            # One line, no traceback: Prometheus scrapes every few seconds.
            log.warning(
                "community-health metrics are stale: Redis: %s: %s", type(exc).__name__, exc
            )
            stale.add_metric([], 1)
        if self._read_at is not None:
            age.add_metric([], max(0.0, now - self._read_at))
        figures = self._figures
        for community, h in figures:
            members.add_metric([community], h["members"])
            for window, value in h["active"].items():
                active.add_metric([community, window], value)
            for window, value in h["new"].items():
                new.add_metric([community, window], value)
            inactive.add_metric([community], h["inactive"])
            ratio.add_metric([community], h["engagement_ratio"])
            contributions.add_metric([community], h["contributions_per_active_member"])
            feedback: dict[str, Any] = h["feedback"]
            responses.add_metric([community], feedback["responses"])
            if feedback["rating_avg"] is not None:
                rating.add_metric([community], feedback["rating_avg"])
            for kind, fields in h["first_response"].items():
                buckets, total = first_response_buckets(fields)
                first_response.add_metric([community, kind], buckets, total)
            for segment, value in h["segments"].items():
                segments.add_metric([community, segment], value)
        for community, project, windows, _ in self._package_rows:
            if windows is None:
                continue
            for window, value in windows.windows.items():
                downloads.add_metric([community, project, window], value)
            if windows.week_over_week is not None:
                change.add_metric([community, project], windows.week_over_week)
            newest.add_metric([community, project], windows.newest_day * 86400)
        yield from (
            downloads,
            change,
            newest,
            stale,
            age,
            members,
            active,
            new,
            inactive,
            ratio,
            contributions,
            rating,
            responses,
            first_response,
            segments,
        )
