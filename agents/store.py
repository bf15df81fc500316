"""Redis adapter of the reads: queries of the CLI and HTTP views, and the clients.

The worker's writes are in :mod:`agents.writer`. Both use the same :class:`KeyLayout`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import hiredis
import orjson
import redis
import redis.asyncio as aioredis

from agents.writer import STATE_FIELD, decode_state
from streams.badges import award_id
from streams.downloads import Health, health
from streams.keys import KeyLayout
from streams.periods import PERIODS, format_instant, period_bucket
from streams.segments import SegmentPolicy, score_days
from streams.windows import GRANULARITY_NAME, WINDOWS, on_day_boards


def connect(url: str) -> redis.Redis:
    """A synchronous client (CLI, HTTP views run in a thread)."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
    )


class _HiredisPacking:
    """Commands packed by hiredis, in C. redis-py's asyncio connection packs in Python,
    joining a growing buffer once per argument: about 1 µs per argument, and a batch's
    write and load calls carry thousands (the synchronous client uses hiredis already).
    Arguments other than str, bytes and int (floats, for one) take redis-py's path, which
    formats and checks them its own way."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if all(type(a) in _PACKABLE for a in args):
            head = args[0]
            if isinstance(head, str):
                args = (*head.encode().split(), *args[1:])
            elif b" " in head:
                args = (*head.split(), *args[1:])
            return [hiredis.pack_command(args)]
        packed: list[bytes] = super().pack_command(*args)  # type: ignore[misc]
        return packed


_PACKABLE = frozenset((str, bytes, int))


_PACKING: dict[type[Any], type[Any]] = {}


def _hiredis_packing(base: type[Any]) -> type[Any]:
    packing = _PACKING.get(base)
    if packing is None:
        packing = _PACKING[base] = type(f"Hiredis{base.__name__}", (_HiredisPacking, base), {})
    return packing


def connect_async(url: str) -> aioredis.Redis:
    """An asyncio client for the worker's hot path."""
    client = aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
    )
    pool = client.connection_pool
    pool.connection_class = _hiredis_packing(pool.connection_class)
    return client


@dataclass(frozen=True, slots=True)
class Entry:
    rank: int
    member_id: str
    score: int


class Reader:
    """Read-only queries over the key layout. Every answer is JSON-ready."""

    def __init__(
        self, client: redis.Redis, prefix: str, segments: SegmentPolicy | None = None
    ) -> None:
        # redis-py types replies as unions of every RESP shape; these queries know theirs.
        self._client: Any = client
        self._prefix = prefix
        self._segments = segments or SegmentPolicy()

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
        pipe.hgetall(layout.member_badges(member_id))
        for period in PERIODS:
            pipe.zrank(layout.leaderboard(period, period_bucket(period, at).label), member_id)
        for window in WINDOWS:
            name = GRANULARITY_NAME[window.granularity]
            boards = on_day_boards(window)
            for index in window.buckets(at):
                if boards:
                    # A day's points are the member's score on the day leaderboard.
                    day = period_bucket("day", index * 86400).label
                    pipe.zscore(layout.leaderboard("day", day), member_id)
                else:
                    pipe.hget(layout.window(name, index), member_id)
        replies = pipe.execute()
        profile: dict[str, str] = replies[0]
        if "first_seen" not in profile:
            # No profile, or only the engine state of a member whose every message so
            # far was moderated.
            return None
        badges = sorted(
            (
                {
                    "badge": f.partition(":")[0],
                    "tier": f.partition(":")[2] or None,
                    "awarded_at": format_instant(int(ms) / 1000),
                }
                for f, ms in replies[2].items()
            ),
            key=lambda b: (b["awarded_at"], b["badge"]),
        )
        state = decode_state(profile[STATE_FIELD])
        score_30d = state.score_at(int(at // 86400))
        ranks = {
            p: (None if r is None else int(r) + 1)
            for p, r in zip(PERIODS, replies[3 : 3 + len(PERIODS)], strict=True)
        }
        cursor = 3 + len(PERIODS)
        windows: dict[str, int] = {}
        for window in WINDOWS:
            count = len(window.buckets(at))
            # Window hashes hold points, day leaderboards minus points (see KeyLayout).
            sign = -1 if on_day_boards(window) else 1
            windows[window.name] = sign * sum(int(v) for v in replies[cursor : cursor + count] if v)
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
            "badges": badges,
            "segment": profile.get("segment", "beginner"),
            "segment_score_30d": score_30d,
            "newcomer": self._segments.is_newcomer(int(profile["first_seen"]) / 1000, at),
        }

    def awards(
        self, community: str, member_id: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Recorded awards of a community (or one member), oldest first."""
        layout = self.layout(community)
        if member_id is not None:
            fields = self._client.hgetall(layout.member_badges(member_id))
            ids = [
                award_id(community, member_id, f.partition(":")[0], f.partition(":")[2] or None)
                for f in fields
            ]
        else:
            ids = self._client.zrange(layout.awards_by_time(), 0, limit - 1)
        out = self._award_records(layout, ids)
        out.sort(key=lambda a: (a["awarded_at"], a["award_id"]))
        return out[:limit]

    def latest_awards(self, community: str, limit: int = 10) -> list[dict[str, Any]]:
        """The community's newest awards, newest first."""
        layout = self.layout(community)
        ids = self._client.zrevrange(layout.awards_by_time(), 0, limit - 1)
        out = self._award_records(layout, ids)
        out.sort(key=lambda a: (a["awarded_at"], a["award_id"]), reverse=True)
        return out

    def award(self, community: str, identity: str) -> dict[str, Any] | None:
        """One award by its id, or None."""
        found = self._award_records(self.layout(community), [identity])
        return found[0] if found else None

    def _award_records(self, layout: KeyLayout, ids: list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        pipe = self._client.pipeline(transaction=False)
        pipe.hmget(layout.awards(), ids)
        pipe.zmscore(layout.award_outbox(), ids)
        records, pending = pipe.execute()
        out = []
        for identity, raw, queued in zip(ids, records, pending, strict=True):
            if raw is None:
                continue
            r = orjson.loads(raw)
            out.append(
                {
                    "award_id": identity,
                    "member_id": r["member_id"],
                    "badge": r["badge"],
                    "tier": r["tier"] or None,
                    "awarded_at": format_instant(int(r["at_ms"]) / 1000),
                    "evidence": [r["evidence"]],
                    "published": queued is None,
                }
            )
        return out

    def badge_holders(
        self, community: str, fields: list[str], limit: int = 100
    ) -> list[dict[str, Any]]:
        """The newest holders of the badge tiers ``fields`` (``badge`` or ``badge:tier``),
        newest award first: member, tier and award time."""
        layout = self.layout(community)
        pipe = self._client.pipeline(transaction=False)
        for name in fields:
            pipe.zrevrange(layout.badge_holders(name), 0, limit - 1, withscores=True)
        rows = []
        for name, held in zip(fields, pipe.execute(), strict=True):
            tier = name.partition(":")[2] or None
            rows += [(int(ms), member, tier) for member, ms in held]
        rows.sort(key=lambda r: (-r[0], r[1]))
        return [
            {"member_id": m, "tier": t, "awarded_at": format_instant(ms / 1000)}
            for ms, m, t in rows[:limit]
        ]

    def award_counts(self, community: str) -> dict[str, int]:
        """Awards per badge tier field (``badge`` or ``badge:tier``)."""
        raw = self._client.hgetall(self.layout(community).award_counts())
        return {k: int(v) for k, v in raw.items()}

    def channels(self, community: str, limit: int = 100) -> list[str]:
        """Channels with leaderboards, sorted; at most ``limit`` (taken as Redis lists
        them when there are more)."""
        key = self.layout(community).channels()
        names: list[str] = []
        for name in self._client.sscan_iter(key, count=limit):
            names.append(name)
            if len(names) >= limit:
                break
        return sorted(names)

    def active_days(self, community: str, member_id: str) -> list[int]:
        """A member's active UTC days (days since the epoch), sorted."""
        days = self._client.smembers(self.layout(community).member_days(member_id))
        return sorted(int(d) for d in days)

    def trends(self, community: str, now: float, days: int = 30) -> dict[str, list[Any]]:
        """Per UTC day over the last ``days`` days, oldest first: events, active members
        (the daily window buckets), new members, the share of the members known by the
        day's end that were active in it, and the average feedback rating."""
        layout = self.layout(community)
        today = int(now // 86400)
        span = range(today - days + 1, today + 1)
        pipe = self._client.pipeline(transaction=False)
        pipe.hgetall(layout.events_by_day())
        pipe.hgetall(layout.feedback_by_day())
        for day in span:
            # Members active on a day: those on its leaderboard.
            pipe.zcard(layout.leaderboard("day", period_bucket("day", day * 86400).label))
        for day in span:
            pipe.zcount(layout.members_first_seen(), day * 86_400_000, (day + 1) * 86_400_000 - 1)
        pipe.zcount(layout.members_first_seen(), "-inf", f"({span[0] * 86_400_000}")
        replies = pipe.execute()
        by_day, feedback = replies[0], replies[1]
        active = [int(n) for n in replies[2 : 2 + days]]
        new = [int(n) for n in replies[2 + days : 2 + 2 * days]]
        known, share = int(replies[-1]), []
        for count, joined in zip(active, new, strict=True):
            known += joined
            share.append(count / known if known else None)
        ratings: list[float | None] = []
        for day in span:
            n = int(feedback.get(f"{day}:n", 0))
            ratings.append(int(feedback.get(f"{day}:sum", 0)) / n if n else None)
        return {
            "days": [format_instant(day * 86400)[:10] for day in span],
            "events": [int(by_day.get(str(day), 0)) for day in span],
            "active": active,
            "new": new,
            "engaged": share,
            "rating": ratings,
        }

    def communities(self) -> list[str]:
        return sorted(self._client.smembers(f"{self._prefix}:communities"))

    def health(self, community: str, now: float) -> dict[str, Any]:
        """Community-health figures, read from Redis (so any worker, even a fresh one,
        reports the same values)."""
        layout = self.layout(community)
        now_ms = int(now * 1000)
        day_ms = 86_400_000
        pipe = self._client.pipeline(transaction=False)
        pipe.zcard(layout.members_first_seen())
        for days in (1, 7, 30):
            pipe.zcount(layout.members_last_seen(), f"({now_ms - days * day_ms}", "+inf")
        for days in (7, 30):
            pipe.zcount(layout.members_first_seen(), f"({now_ms - days * day_ms}", "+inf")
        pipe.zcount(layout.members_last_seen(), "-inf", now_ms - 30 * day_ms)
        pipe.hgetall(layout.events_by_day())
        pipe.hgetall(layout.feedback_by_day())
        pipe.hgetall(layout.first_response("forum"))
        pipe.hgetall(layout.first_response("github"))
        pipe.hgetall(layout.counts_by_source())
        pipe.hgetall(layout.award_counts())
        pipe.zcard(layout.segment_index("intermediate"))
        pipe.zcard(layout.segment_index("advanced"))
        pipe.hgetall(layout.moderation_counts())
        (
            members,
            active_1d,
            active_7d,
            active_30d,
            new_7d,
            new_30d,
            inactive,
            by_day,
            feedback,
            forum,
            github,
            by_source,
            awards,
            intermediate,
            advanced,
            flags,
        ) = pipe.execute()
        recent = {str(d) for d in score_days(now)}
        events_30d = sum(int(v) for d, v in by_day.items() if d in recent)
        rating_sum = sum(
            int(v) for k, v in feedback.items() if k.endswith(":sum") and k[:-4] in recent
        )
        ratings = sum(int(v) for k, v in feedback.items() if k.endswith(":n") and k[:-2] in recent)
        return {
            "members": members,
            "active": {"1d": active_1d, "7d": active_7d, "30d": active_30d},
            "new": {"7d": new_7d, "30d": new_30d},
            "inactive": inactive,
            "engagement_ratio": active_30d / members if members else 0.0,
            "contributions_per_active_member": events_30d / active_30d if active_30d else 0.0,
            "feedback": {
                "responses": ratings,
                "rating_avg": rating_sum / ratings if ratings else None,
            },
            "first_response": {"forum": forum, "github": github},
            "events": {tuple(k.split("|", 1)): int(v) for k, v in by_source.items()},
            "awards": {k: int(v) for k, v in awards.items()},
            "segments": {
                "beginner": max(0, members - intermediate - advanced),
                "intermediate": intermediate,
                "advanced": advanced,
            },
            "flags": {k: int(v) for k, v in flags.items()},
        }

    def package_health(
        self, packages: Mapping[str, str]
    ) -> list[tuple[str, str, Health | None, dict[str, int]]]:
        """(community, project, download windows or None, pypistats' recent totals) per
        configured package (``project -> community``), in one round trip."""
        rows = sorted((community, project) for project, community in packages.items())
        pipe = self._client.pipeline(transaction=False)
        for community, project in rows:
            layout = self.layout(community)
            pipe.hgetall(layout.package_daily(project))
            pipe.hgetall(layout.package_recent(project))
        replies = pipe.execute()
        out = []
        for index, (community, project) in enumerate(rows):
            daily, recent = replies[2 * index], replies[2 * index + 1]
            windows = health({int(d): int(n) for d, n in daily.items()})
            out.append((community, project, windows, {k: int(v) for k, v in recent.items()}))
        return out

    def community_counts(self, community: str) -> dict[str, int]:
        raw = self._client.hgetall(self.layout(community).counts())
        return {k: int(v) for k, v in sorted(raw.items())}
