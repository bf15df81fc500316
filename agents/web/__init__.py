"""HTTP surface: ``/metrics`` on the worker, and the site (pages, badge images,
credentials and the JSON API, :mod:`agents.web.site`) on the worker and ``pulse web``.

The worker's Faust web server hands every request under the site's prefixes to
:class:`~agents.web.site.Site`; ``pulse web`` (:mod:`agents.web.server`) serves the same
site from Redis alone, to scale apart from the workers.
"""

from __future__ import annotations

import asyncio
from typing import Final

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agents.metrics import PulseMetrics
from agents.web.site import Site

# The site's routes, as catch-alls: the site routes inside them itself.
PREFIXES: Final = ("/c/{rest:.*}", "/static/{rest:.*}", "/api/v1/{rest:.*}")


def register(app: faust.App, metrics: PulseMetrics, site: Site) -> None:
    """Add ``/metrics`` and the site's routes to ``app``."""

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            # The health collector reads Redis: keep that off the event loop.
            body = await asyncio.to_thread(generate_latest, metrics.registry)
            return self.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])

    class Pages(View):
        async def get(self, request: Request, rest: str = "") -> Response:
            reply = await site.handle(request.rel_url.raw_path, request.query)
            # In the headers: aiohttp refuses a charset in its content_type argument.
            headers = {**reply.headers, "Content-Type": reply.content_type}
            return self.bytes(reply.body, status=reply.status, headers=headers)

    for prefix in PREFIXES:
        area = prefix.split("/")[1]
        # A class per route: Faust keeps the path on the view class.
        app.page(prefix, name=f"site-{area}")(type(f"Site_{area}", (Pages,), {}))
