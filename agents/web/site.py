"""The read side people and programs open: HTML pages, badge images, credentials and the
JSON API, behind one router.

:class:`Site` turns (path, query) into a :class:`Reply`. It knows nothing of the web
server: the worker's Faust web server and the standalone ``pulse web`` (aiohttp) both
hand it every request under their routes. Paths are split on ``/`` before each segment
is percent-decoded, so a member id may hold any printable character, ``/`` included.

Every handler reads Redis through :class:`Reader` (synchronous; the servers call
:meth:`Site.handle`, which runs the whole request in a worker thread) and renders with
:mod:`agents.web.pages`. Ids from outside are validated by :mod:`streams.queries` and
escaped by the renderer; an unknown community, member, badge or award is a 404 page, a
bad parameter a 400 page, and Redis out of reach a 503 page (JSON for the API).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final
from urllib.parse import unquote

import orjson
import redis

from agents.settings import CommunityProfile
from agents.store import Reader
from agents.web import pages
from agents.web.art import badge_svg
from agents.web.credential import image_path, open_badge
from streams import queries
from streams.badges import TIER_RE, Badge, badge_field, criteria
from streams.periods import PERIODS
from streams.queries import BadQuery, LeaderboardQuery

# Redis is down, restarting or too slow: the query may well succeed later.
UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)

HTML: Final = "text/html; charset=utf-8"
JSON: Final = "application/json"
ASSETS: Final = {
    "pulse.css": "text/css; charset=utf-8",
    "wall.js": "text/javascript; charset=utf-8",
    "logo.svg": "image/svg+xml",
}
# The pages load nothing from elsewhere; the wall's script fetches from this site only.
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
AWARD_ID_LEN: Final = 32
WALL_AWARDS: Final = 12
WALL_TOP: Final = 10


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)


def holder_counts(badge: Badge, counts: Mapping[str, int]) -> dict[str, int]:
    """Holders per tier of ``badge`` (``any`` for an untiered one) from the award counts."""
    return {(t.name or "any"): counts.get(badge_field(badge.id, t.name), 0) for t in badge.tiers}


class NotFound(Exception):
    """A page of something that does not exist; the message says what."""


class Site:
    def __init__(
        self,
        reader: Callable[[], Reader],
        catalog: tuple[Badge, ...],
        public_url: str,
        profiles: Mapping[str, CommunityProfile] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._reader = reader
        self._catalog = {b.id: b for b in catalog}
        self._base = public_url.rstrip("/")
        self._profiles = dict(profiles or {})
        self._clock = clock
        self._assets: dict[str, bytes] = {}

    async def handle(self, raw_path: str, query: Mapping[str, str]) -> Reply:
        """The reply to a GET of ``raw_path`` (still percent-encoded) with ``query``."""
        return await asyncio.to_thread(self.dispatch, raw_path, query)

    def dispatch(self, raw_path: str, query: Mapping[str, str]) -> Reply:
        try:
            parts = [unquote(p, errors="strict") for p in raw_path.split("/")[1:]]
        except UnicodeDecodeError:
            return self._error(False, 400, "The address is not valid UTF-8.")
        api = parts[:2] == ["api", "v1"]
        try:
            return self._route(parts, query)
        except BadQuery as exc:
            return self._error(api, 400, str(exc))
        except NotFound as exc:
            return self._error(api, 404, str(exc))
        except UNAVAILABLE as exc:
            return self._error(
                api, 503, f"Redis is unavailable ({type(exc).__name__}); try again shortly."
            )

    # -- routing ----------------------------------------------------------------------

    def _route(self, parts: list[str], query: Mapping[str, str]) -> Reply:
        match parts:
            case [""]:
                return self._index()
            case ["static", name] if name in ASSETS:
                return self._asset(name)
            case ["c", community] | ["c", community, ""]:
                return self._home(queries.community(community), query)
            case ["c", community, "members", member]:
                return self._profile(queries.community(community), queries.member_id(member))
            case ["c", community, "badges"]:
                return self._catalog_page(queries.community(community))
            case ["c", community, "badges", name] if name.endswith(".svg"):
                return self._image(queries.community(community), name.removesuffix(".svg"))
            case ["c", community, "badges", badge]:
                return self._holders(queries.community(community), badge)
            case ["c", community, "awards", identity]:
                return self._credential(queries.community(community), identity)
            case ["c", community, "wall"]:
                return self._wall(queries.community(community))
            case ["c", community, "wall", "feed"]:
                return self._json(self._feed(queries.community(community)))
            case ["api", "v1", "communities", community, "leaderboards", period]:
                return self._api_leaderboard(community, period, query)
            case ["api", "v1", "communities", community, "members", member]:
                return self._api_member(community, member, query)
            case ["api", "v1", "communities", community, "awards"]:
                c = queries.community(community)
                limit = queries.bounded_int(query.get("limit"), "limit", 10, 1, 1000)
                return self._json({"community": c, "awards": self._latest(c, limit)})
            case ["api", "v1", "communities", community, "badges"]:
                return self._json(self._badges(queries.community(community)))
        raise NotFound("There is no page at this address.")

    # -- helpers ----------------------------------------------------------------------

    def _json(self, body: Any, status: int = 200) -> Reply:
        return Reply(status, orjson.dumps(body), JSON)

    def _html(self, body: str, status: int = 200) -> Reply:
        return Reply(status, body.encode(), HTML, SECURITY_HEADERS)

    def _error(self, api: bool, status: int, message: str) -> Reply:
        if api:
            return self._json({"error": message, "status": status}, status)
        return self._html(pages.error(status, message), status)

    def _issuer(self, community: str) -> CommunityProfile:
        return self._profiles.get(community) or CommunityProfile(community)

    def _known(self, community: str) -> None:
        if community not in self._reader().communities():
            raise NotFound(f"No community {community!r} has any activity here.")

    def _badge(self, badge: str) -> Badge:
        found = self._catalog.get(badge)
        if found is None:
            raise NotFound(f"There is no badge {badge!r} in the catalog.")
        return found

    def _asset(self, name: str) -> Reply:
        if name not in self._assets:
            path = resources.files("agents.web").joinpath("static", name)
            self._assets[name] = path.read_bytes()
        return Reply(
            200, self._assets[name], ASSETS[name], {"Cache-Control": "public, max-age=300"}
        )

    def _latest(self, community: str, limit: int) -> list[dict[str, Any]]:
        return self._reader().latest_awards(community, limit)

    def _badges(self, community: str) -> dict[str, Any]:
        counts = self._reader().award_counts(community)
        return {
            "community": community,
            "badges": [
                {
                    **badge.public(),
                    "criteria": criteria(badge),
                    "holders": holder_counts(badge, counts),
                }
                for badge in self._catalog.values()
            ],
        }

    def _feed(self, community: str) -> dict[str, Any]:
        now = self._clock()
        reader = self._reader()
        board = reader.leaderboard(community, "day", now, WALL_TOP)
        awards = reader.latest_awards(community, WALL_AWARDS)
        for award in awards:
            award["badge_name"] = pages.badge_title(self._catalog, award["badge"], award["tier"])
            award["image"] = image_path(community, award["badge"], award["tier"])
        return {"community": community, "leaderboard": board, "awards": awards}

    # -- pages ------------------------------------------------------------------------

    def _index(self) -> Reply:
        communities = self._reader().communities()
        names = {c: self._issuer(c).name for c in communities}
        return self._html(pages.index(names))

    def _home(self, community: str, query: Mapping[str, str]) -> Reply:
        self._known(community)
        now = self._clock()
        q = LeaderboardQuery.parse(
            community,
            query.get("period") or "week",
            query.get("at"),
            query.get("top") or 20,
            query.get("channel"),
            now,
        )
        reader = self._reader()
        board = reader.leaderboard(community, q.period, q.at, q.top, q.channel)
        view = pages.Home(
            community=community,
            title=self._issuer(community).name,
            board=board,
            periods=PERIODS,
            channels=reader.channels(community),
            awards=self._latest(community, 10),
            health=reader.health(community, now),
            trends=reader.trends(community, now),
            catalog=self._catalog,
            now=now,
        )
        return self._html(pages.home(view))

    def _profile(self, community: str, member: str) -> Reply:
        self._known(community)
        now = self._clock()
        reader = self._reader()
        body = reader.member(community, member, now)
        if body is None:
            raise NotFound(f"No member {member!r} in community {community!r}.")
        awards = {a["award_id"]: a for a in reader.awards(community, member)}
        view = pages.Profile(
            community=community,
            title=self._issuer(community).name,
            member=body,
            awards=sorted(awards.values(), key=lambda a: (a["awarded_at"], a["badge"])),
            active_days=set(reader.active_days(community, member)),
            catalog=self._catalog,
            now=now,
        )
        return self._html(pages.profile(view))

    def _catalog_page(self, community: str) -> Reply:
        self._known(community)
        view = self._badges(community)
        return self._html(pages.catalog(community, self._issuer(community).name, view["badges"]))

    def _holders(self, community: str, badge_id: str) -> Reply:
        self._known(community)
        badge = self._badge(badge_id)
        fields = [badge_field(badge.id, tier.name) for tier in badge.tiers]
        reader = self._reader()
        holders = reader.badge_holders(community, fields)
        view = pages.Holders(
            community=community,
            title=self._issuer(community).name,
            badge=badge,
            holders=holders,
            counts=holder_counts(badge, reader.award_counts(community)),
        )
        return self._html(pages.holders(view))

    def _image(self, community: str, name: str) -> Reply:
        badge_id, _, tier = name.partition(".")
        badge = self._badge(badge_id)
        if tier and (TIER_RE.fullmatch(tier) is None or tier not in {t.name for t in badge.tiers}):
            raise NotFound(f"Badge {badge.id!r} has no tier {tier!r}.")
        return Reply(
            200,
            badge_svg(badge, tier or None).encode(),
            "image/svg+xml",
            {"Cache-Control": "public, max-age=86400"},
        )

    def _credential(self, community: str, identity: str) -> Reply:
        if len(identity) != AWARD_ID_LEN or not all(c in "0123456789abcdef" for c in identity):
            raise NotFound("An award id is 32 lowercase hexadecimal characters.")
        award = self._reader().award(community, identity)
        if award is None:
            raise NotFound(f"No award {identity} in community {community!r}.")
        issuer = self._issuer(community)
        body = open_badge(
            self._base,
            {
                "community": community,
                "id": f"{self._base}/c/{community}",
                "name": issuer.name,
                "url": issuer.url,
            },
            award,
            self._badge(award["badge"]),
        )
        return Reply(
            200,
            orjson.dumps(body, option=orjson.OPT_INDENT_2),
            "application/ld+json",
            {"Access-Control-Allow-Origin": "*"},
        )

    def _wall(self, community: str) -> Reply:
        self._known(community)
        feed = self._feed(community)
        return self._html(pages.wall(community, self._issuer(community).name, feed))

    # -- the JSON API -----------------------------------------------------------------

    def _api_leaderboard(self, community: str, period: str, query: Mapping[str, str]) -> Reply:
        q = LeaderboardQuery.parse(
            community,
            period,
            query.get("at"),
            query.get("top"),
            query.get("channel"),
            self._clock(),
        )
        return self._json(self._reader().leaderboard(q.community, q.period, q.at, q.top, q.channel))

    def _api_member(self, community: str, member: str, query: Mapping[str, str]) -> Reply:
        c, m = queries.community(community), queries.member_id(member)
        at = queries.instant(query.get("at"), self._clock())
        body = self._reader().member(c, m, at)
        if body is None:
            raise NotFound(f"no member {member!r} in community {community!r}")
        return self._json(body)
