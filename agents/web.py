"""HTTP surface of the worker (Faust web): ``/metrics`` and the read-only JSON API.

Queries read Redis through a synchronous client in a worker thread, so a slow query
never blocks the event loop that consumes Kafka. When Redis cannot be reached the API
answers ``503`` with the usual JSON error body (the client should retry later).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import faust
import redis
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agents.metrics import PulseMetrics
from agents.store import Reader
from streams import queries
from streams.queries import BadQuery, LeaderboardQuery

# Redis is down, restarting or too slow: the query may well succeed later.
UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def register(app: faust.App, metrics: PulseMetrics, reader: Callable[[], Reader]) -> None:
    """Add the metrics and API routes to ``app``."""

    def error(view: View, status: int, message: str) -> Response:
        return view.json({"error": message, "status": status}, status=status)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            # The health collector reads Redis: keep that off the event loop.
            body = await asyncio.to_thread(generate_latest, metrics.registry)
            return self.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/api/v1/communities/{community}/leaderboards/{period}")
    class Leaderboard(View):
        async def get(self, request: Request, community: str, period: str) -> Response:
            params = request.query
            try:
                q = LeaderboardQuery.parse(
                    community,
                    period,
                    params.get("at"),
                    params.get("top"),
                    params.get("channel"),
                    time.time(),
                )
            except BadQuery as exc:
                return error(self, 400, str(exc))
            try:
                body = await asyncio.to_thread(
                    reader().leaderboard, q.community, q.period, q.at, q.top, q.channel
                )
            except UNAVAILABLE as exc:
                return error(self, 503, f"Redis is unavailable: {type(exc).__name__}")
            return self.json(body)

    @app.page("/api/v1/communities/{community}/members/{member_id}")
    class Member(View):
        async def get(self, request: Request, community: str, member_id: str) -> Response:
            try:
                c = queries.community(community)
                m = queries.member_id(member_id)
                at = queries.instant(request.query.get("at"), time.time())
            except BadQuery as exc:
                return error(self, 400, str(exc))
            try:
                body: dict[str, Any] | None = await asyncio.to_thread(reader().member, c, m, at)
            except UNAVAILABLE as exc:
                return error(self, 503, f"Redis is unavailable: {type(exc).__name__}")
            if body is None:
                return error(self, 404, f"no member {member_id!r} in community {community!r}")
            return self.json(body)
