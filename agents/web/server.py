"""``pulse web``: the site (pages, badge images, credentials, JSON API) without a worker.

It reads Redis only, so it scales apart from the workers: run as many as the readers
need behind a load balancer. SIGTERM and SIGINT stop it at once (it holds no state).
"""

from __future__ import annotations

import argparse
import logging

from aiohttp import web

from agents.settings import Settings
from agents.store import Reader, connect
from agents.web.site import Reply, Site

log = logging.getLogger(__name__)


def make_site(settings: Settings, own_url: str) -> Site:
    """The site over a Redis client built on first use (one per process)."""
    state: dict[str, Reader] = {}

    def reader() -> Reader:
        if "reader" not in state:
            state["reader"] = Reader(
                connect(settings.redis_url.reveal()),
                settings.redis_key_prefix,
                settings.segments,
            )
        return state["reader"]

    return Site(reader, settings.catalog, settings.public_url or own_url, settings.profiles)


def application(site: Site) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            reply = Reply(405, b"", "text/plain", {"Allow": "GET, HEAD"})
        else:
            reply = await site.handle(request.rel_url.raw_path, request.query)
        headers = {**reply.headers, "Content-Type": reply.content_type}
        return web.Response(body=reply.body, status=reply.status, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{rest:.*}", handle)
    return app


def run(args: argparse.Namespace, settings: Settings) -> int:
    from agents.cli import ensure_port_free

    bind = args.bind or settings.web_bind
    port = args.port
    ensure_port_free(bind, port, "--port")
    # Refused credentials or no Redis at all: one line and exit 1 now (agents.cli).
    connect(settings.redis_url.reveal()).ping()
    site = make_site(settings, f"http://{bind}:{port}")
    print(f"pulse web: serving on http://{bind}:{port}/ (Ctrl-C to stop)", flush=True)
    web.run_app(application(site), host=bind, port=port, print=None, access_log=None)
    return 0
