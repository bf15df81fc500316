"""What both peers compute per event: the leaderboard keys it moves and by how much.

The same scoring table (``DEFAULT_POINTS``), the same periods by event time in UTC
(``period_bucket``), the same channel boards (``week`` and ``all``) and the same key
names (``KeyLayout``) as community-pulse, so their all-time boards can be compared with
ours key for key. Scores are stored negated, as ours are.

Deliberately left out, because the peers are the classic "scoring + leaderboard" job
and not the whole product: dedupe markers, expiry, rolling windows, member profiles,
badges, segments, moderation, metrics, validation and the dead-letter topic.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from streams.activity import parse_timestamp
from streams.keys import KeyLayout
from streams.periods import PERIODS, period_bucket
from streams.scoring import DEFAULT_POINTS

CHANNEL_PERIODS = ("week", "all")


@lru_cache(maxsize=1024)
def _layout(prefix: str, community: str) -> KeyLayout:
    return KeyLayout(prefix, community)


def leaderboard_moves(prefix: str, event: dict[str, Any]) -> Iterator[tuple[str, int]]:
    """(leaderboard key, points) for every board the event moves."""
    layout = _layout(prefix, event["community"])
    earned = DEFAULT_POINTS[event["type"]]
    ts = parse_timestamp(event["occurred_at"])
    channel = event.get("channel")
    for period in PERIODS:
        label = period_bucket(period, ts).label
        yield layout.leaderboard(period, label), earned
        if channel is not None and period in CHANNEL_PERIODS:
            yield layout.leaderboard(period, label, channel), earned


def done_key(prefix: str) -> str:
    """A counter of events written, which the harness polls to see the end of a run."""
    return f"{prefix}:bench:events"


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"{name} is not set (the benchmark harness sets it)")
    return value
