"""Redis adapter: applies planned batches (worker) and answers queries (CLI, HTTP).

Writes go through one Lua call per community per batch (``apply_batch.lua``), all
communities of a batch in one pipeline. Reads use the same :class:`KeyLayout`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis
import redis.asyncio as aioredis

from streams.effects import CommunityPlan
from streams.keys import KeyLayout
from streams.periods import PERIODS, format_instant, period_bucket
from streams.windows import GRANULARITY_NAME, WINDOWS

APPLY_LUA = resources.files("agents").joinpath("apply_batch.lua").read_text(encoding="utf-8")


def connect(url: str) -> redis.Redis:
    """A synchronous client (CLI, HTTP views run in a thread)."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
    )


def connect_async(url: str) -> aioredis.Redis:
    """An asyncio client for the worker's hot path."""
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
    )


class BatchWriter:
    """Applies :class:`CommunityPlan` s atomically and idempotently."""

    def __init__(self, client: aioredis.Redis, dedupe_seconds: int) -> None:
        self._client = client
        self._dedupe = dedupe_seconds
        self._sha: str | None = None

    async def apply(self, plans: Sequence[CommunityPlan]) -> list[list[int]]:
        """Apply every plan; returns, per plan, 1 (applied) or 0 (duplicate) per event."""
        if not plans:
            return []
        if self._sha is None:
            self._sha = await self._client.script_load(APPLY_LUA)
        try:
            return await self._run(plans)
        except redis.exceptions.NoScriptError:
            # Redis restarted or SCRIPT FLUSH: load again once.
            self._sha = await self._client.script_load(APPLY_LUA)
            return await self._run(plans)

    async def _run(self, plans: Sequence[CommunityPlan]) -> list[list[int]]:
        assert self._sha is not None  # noqa: S101 - set by apply()
        async with self._client.pipeline(transaction=False) as pipe:
            for plan in plans:
                pipe.evalsha(self._sha, 1, plan.layout.counts(), self._dedupe, *plan.args)
            results: list[Any] = await pipe.execute()
        return [[int(flag) for flag in result] for result in results]


@dataclass(frozen=True, slots=True)
class Entry:
    rank: int
    member_id: str
    score: int


class Reader:
    """Read-only queries over the key layout. Every answer is JSON-ready."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        # redis-py types replies as unions of every RESP shape; these queries know theirs.
        self._client: Any = client
        self._prefix = prefix

    def layout(self, community: str) -> KeyLayout:
        return KeyLayout(self._prefix, community)

    def leaderboard(
        self, community: str, period: str, at: float, top: int = 10, channel: str | None = None
    ) -> dict[str, Any]:
        bucket = period_bucket(period, at)
        key = self.layout(community).leaderboard(period, bucket.label, channel)
        rows = self._client.zrange(key, 0, top - 1, withscores=True)
        result: dict[str, Any] = {
            "community": community,
            "period": period,
            "bucket": bucket.label,
            "entries": [
                {"rank": i + 1, "member_id": m, "score": -int(s)} for i, (m, s) in enumerate(rows)
            ],
        }
        if channel is not None:
            result["channel"] = channel
        return result

    def around(
        self, community: str, member_id: str, period: str, at: float, n: int = 5
    ) -> dict[str, Any] | None:
        bucket = period_bucket(period, at)
        key = self.layout(community).leaderboard(period, bucket.label)
        rank = self._client.zrank(key, member_id)
        if rank is None:
            return None
        start = max(0, int(rank) - n)
        rows = self._client.zrange(key, start, int(rank) + n, withscores=True)
        return {
            "community": community,
            "period": period,
            "bucket": bucket.label,
            "member_id": member_id,
            "rank": int(rank) + 1,
            "entries": [
                {"rank": start + i + 1, "member_id": m, "score": -int(s)}
                for i, (m, s) in enumerate(rows)
            ],
        }

    def member(self, community: str, member_id: str, at: float) -> dict[str, Any] | None:
        layout = self.layout(community)
        pipe = self._client.pipeline(transaction=False)
        pipe.hgetall(layout.member(member_id))
        pipe.scard(layout.member_days(member_id))
        for period in PERIODS:
            pipe.zrank(layout.leaderboard(period, period_bucket(period, at).label), member_id)
        for window in WINDOWS:
            name = GRANULARITY_NAME[window.granularity]
            for index in window.buckets(at):
                pipe.hget(layout.window(name, index), member_id)
        replies = pipe.execute()
        profile: dict[str, str] = replies[0]
        if not profile:
            return None
        ranks = {
            p: (None if r is None else int(r) + 1)
            for p, r in zip(PERIODS, replies[2 : 2 + len(PERIODS)], strict=True)
        }
        cursor = 2 + len(PERIODS)
        windows: dict[str, int] = {}
        for window in WINDOWS:
            count = len(window.buckets(at))
            windows[window.name] = sum(int(v) for v in replies[cursor : cursor + count] if v)
            cursor += count
        by_type = {
            k.removeprefix("type:"): int(v)
            for k, v in sorted(profile.items())
            if k.startswith("type:")
        }
        return {
            "member_id": member_id,
            "community": community,
            "at": format_instant(at),
            "windows": windows,
            "totals": {
                "points": int(profile.get("points", 0)),
                "events": int(profile.get("events", 0)),
                "by_type": by_type,
            },
            "first_seen": format_instant(int(profile["first_seen"]) / 1000),
            "last_seen": format_instant(int(profile["last_seen"]) / 1000),
            "active_days": int(replies[1]),
            "ranks": ranks,
        }

    def community_counts(self, community: str) -> dict[str, int]:
        raw = self._client.hgetall(self.layout(community).counts())
        return {k: int(v) for k, v in sorted(raw.items())}
