"""HTML of the pages, rendered on the server; no JavaScript needed except for the wall's
live updates.

Every value that came from outside (community names from settings, member ids, channel
names, badge names from the catalog) passes through :func:`t` (text) or :func:`u` (a
path segment) on its way into the markup, and is wrapped in ``<bdi>`` so a right-to-left
name cannot reorder the text around it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from agents.web.art import calendar, sparkline
from agents.web.credential import image_path
from streams.badges import Badge, criteria
from streams.periods import CHANNEL_PERIODS, format_instant
from streams.queries import histogram_quantile


def t(value: object) -> str:
    """Text from anywhere, escaped for element content and quoted attributes."""
    return escape(str(value), quote=True)


def u(value: str) -> str:
    """A path segment: percent-encoded (``/`` too), then escaped for an attribute."""
    return escape(quote(value, safe=""), quote=True)


def name(value: str) -> str:
    """An outside name shown as text, isolated from the text direction around it."""
    return f"<bdi>{t(value)}</bdi>"


def member_link(community: str, member: str) -> str:
    return f'<a href="/c/{u(community)}/members/{u(member)}">{name(member)}</a>'


def badge_title(catalog: Mapping[str, Badge], badge: str, tier: str | None) -> str:
    known = catalog.get(badge)
    title = known.name if known is not None else badge
    return f"{title} ({tier})" if tier else title


def day(text: str) -> str:
    """An RFC 3339 instant as a <time> element showing its date and minute, UTC."""
    return f'<time datetime="{t(text)}">{t(text[:10])} {t(text[11:16])} UTC</time>'


def layout(title: str, body: str, community: str | None = None, css: str = "") -> str:
    nav = ""
    if community is not None:
        c = u(community)
        nav = (
            f'<nav aria-label="community"><a href="/c/{c}">Home</a>'
            f'<a href="/c/{c}/badges">Badges</a><a href="/c/{c}/wall">Wall</a></nav>'
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{t(title)} · community-pulse</title>"
        '<link rel="icon" href="/static/logo.svg" type="image/svg+xml">'
        '<link rel="stylesheet" href="/static/pulse.css"></head>'
        f'<body class="{css}"><header class="top"><a class="brand" href="/">'
        '<img src="/static/logo.svg" alt="" width="28" height="28">community-pulse</a>'
        f"{nav}</header><main>{body}</main>"
        "<footer>community-pulse · live engagement for communities</footer></body></html>"
    )


def error(status: int, message: str) -> str:
    titles = {400: "Bad request", 404: "Not found", 503: "Temporarily unavailable"}
    title = titles.get(status, "Error")
    body = (
        f'<section class="error"><h1>{status} · {t(title)}</h1><p>{t(message)}</p>'
        '<p><a href="/">All communities</a></p></section>'
    )
    return layout(title, body)


def index(communities: Mapping[str, str]) -> str:
    items = "".join(
        f'<li><a href="/c/{u(c)}">{name(title)}</a> <span class="muted">{t(c)}</span></li>'
        for c, title in communities.items()
    )
    body = "<h1>Communities</h1>" + (
        f'<ul class="communities">{items}</ul>' if items else "<p>No activity yet.</p>"
    )
    return layout("Communities", body)


def leaderboard_table(community: str, board: Mapping[str, Any]) -> str:
    rows = "".join(
        f'<tr><td class="rank">{e["rank"]}</td><td>{member_link(community, e["member_id"])}</td>'
        f'<td class="num">{e["score"]:,}</td></tr>'
        for e in board["entries"]
    )
    if not rows:
        rows = '<tr><td colspan="3" class="muted">Nobody has points in this period yet.</td></tr>'
    return (
        '<table class="board" data-board><thead><tr><th>#</th><th>Member</th>'
        f'<th class="num">Points</th></tr></thead><tbody>{rows}</tbody></table>'
    )


def award_item(community: str, award: Mapping[str, Any], catalog: Mapping[str, Badge]) -> str:
    title = badge_title(catalog, award["badge"], award["tier"])
    return (
        f'<li data-award="{t(award["award_id"])}">'
        f'<img src="{t(image_path(community, award["badge"], award["tier"]))}" alt="" '
        f'width="32" height="32"> {member_link(community, award["member_id"])} earned '
        f'<a href="/c/{u(community)}/badges/{u(award["badge"])}">{name(title)}</a> '
        f'<span class="muted">{day(award["awarded_at"])}</span></li>'
    )


@dataclass(frozen=True, slots=True)
class Home:
    community: str
    title: str
    board: Mapping[str, Any]
    periods: Sequence[str]
    channels: Sequence[str]
    awards: Sequence[Mapping[str, Any]]
    health: Mapping[str, Any]
    trends: Mapping[str, Sequence[Any]]
    catalog: Mapping[str, Badge]
    now: float


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _tile(label: str, value: str, chart: str, hint: str) -> str:
    return (
        f'<div class="tile"><div class="label">{t(label)}</div>'
        f'<div class="value">{t(value)}</div>{chart}<div class="hint">{t(hint)}</div></div>'
    )


def health_tiles(health: Mapping[str, Any], trends: Mapping[str, Sequence[Any]]) -> str:
    first = health["first_response"]
    p50, p90 = (histogram_quantile([first["forum"], first["github"]], q) for q in (0.5, 0.9))
    rating = health["feedback"]["rating_avg"]
    tiles = [
        _tile(
            "Active members",
            " / ".join(f"{health['active'][w]:,}" for w in ("1d", "7d", "30d")),
            sparkline(trends["active"], "Active members per day"),
            "last 1 / 7 / 30 days; chart: per day over 30 days",
        ),
        _tile(
            "New members",
            f"{health['new']['7d']:,} / {health['new']['30d']:,}",
            sparkline(trends["new"], "New members per day"),
            "last 7 / 30 days; chart: per day",
        ),
        _tile(
            "Engagement rate",
            f"{health['engagement_ratio'] * 100:.1f} %",
            sparkline(trends["engaged"], "Share of members active per day"),
            f"active in 30 days / {health['members']:,} members; chart: share active per day",
        ),
        _tile(
            "First response",
            f"p50 {_minutes(p50)} · p90 {_minutes(p90)}",
            "",
            "forum posts and GitHub issues, all time",
        ),
        _tile(
            "Average feedback",
            "n/a" if rating is None else f"{rating:.2f} / 5",
            sparkline(trends["rating"], "Average rating per day"),
            f"{health['feedback']['responses']:,} ratings in 30 days; chart: per day",
        ),
    ]
    return f'<section class="tiles" aria-label="community health">{"".join(tiles)}</section>'


def home(view: Home) -> str:
    c, board = view.community, view.board
    channel = board.get("channel")
    switches = []
    for period in view.periods:
        params = {"period": period}
        if channel is not None and period in CHANNEL_PERIODS:
            params["channel"] = channel
        current = ' aria-current="page"' if period == board["period"] else ""
        switches.append(f'<a href="/c/{u(c)}?{t(urlencode(params))}"{current}>{t(period)}</a>')
    # A channel's boards exist for some periods only: switching keeps the period if it can.
    period = board["period"] if board["period"] in CHANNEL_PERIODS else "week"
    everywhere = ' aria-current="page"' if channel is None else ""
    chans = [f'<a href="/c/{u(c)}?period={t(board["period"])}"{everywhere}>all channels</a>']
    for ch in view.channels:
        query = t(urlencode({"period": period, "channel": ch}))
        current = ' aria-current="page"' if ch == channel else ""
        chans.append(f'<a href="/c/{u(c)}?{query}"{current}>{name(ch)}</a>')
    scope = f" in {name(channel)}" if channel is not None else ""
    segments = view.health["segments"]
    segment_rows = "".join(
        f'<tr><td>{t(s)}</td><td class="num">{n:,}</td></tr>' for s, n in segments.items()
    )
    awards = "".join(award_item(c, a, view.catalog) for a in view.awards) or (
        '<li class="muted">No awards yet.</li>'
    )
    body = (
        f"<h1>{name(view.title)}</h1>"
        f"{health_tiles(view.health, view.trends)}"
        '<div class="columns"><section aria-labelledby="lb">'
        f'<h2 id="lb">Leaderboard · {t(board["period"])} {t(board["bucket"])}{scope}</h2>'
        f'<div class="switch" aria-label="period">{"".join(switches)}</div>'
        f'<div class="switch channels" aria-label="channel">{"".join(chans)}</div>'
        f"{leaderboard_table(c, board)}</section>"
        '<aside><section aria-labelledby="aw"><h2 id="aw">Latest awards</h2>'
        f'<ul class="awards" data-awards>{awards}</ul></section>'
        '<section aria-labelledby="sg"><h2 id="sg">Segments</h2>'
        f'<table class="segments">{segment_rows}</table></section></aside></div>'
        f'<p class="muted">As of {day(format_instant(view.now))}.</p>'
    )
    return layout(view.title, body, c)


@dataclass(frozen=True, slots=True)
class Profile:
    community: str
    title: str
    member: Mapping[str, Any]
    awards: Sequence[Mapping[str, Any]]
    active_days: set[int]
    catalog: Mapping[str, Badge]
    now: float


def profile(view: Profile) -> str:
    c, m = view.community, view.member
    ranks = "".join(
        f'<tr><td>{t(p)}</td><td class="num">{"—" if r is None else f"#{r:,}"}</td></tr>'
        for p, r in m["ranks"].items()
    )
    windows = "".join(
        f'<tr><td>{t(w)}</td><td class="num">{n:,}</td></tr>' for w, n in m["windows"].items()
    )
    by_type = "".join(
        f'<tr><td>{t(kind)}</td><td class="num">{n:,}</td></tr>'
        for kind, n in m["totals"]["by_type"].items()
    )
    badges = (
        "".join(
            f'<li class="badge"><img src="{t(image_path(c, a["badge"], a["tier"]))}" '
            f'alt="{t(badge_title(view.catalog, a["badge"], a["tier"]))}" width="64" height="64">'
            f'<div><a href="/c/{u(c)}/badges/{u(a["badge"])}">'
            f"{name(badge_title(view.catalog, a['badge'], a['tier']))}</a><br>"
            f'<span class="muted">{day(a["awarded_at"])}</span><br>'
            f'<a class="credential" href="/c/{u(c)}/awards/{u(a["award_id"])}">'
            "Open Badges credential</a></div></li>"
            for a in view.awards
        )
        or '<li class="muted">No badges yet.</li>'
    )
    newcomer = ' <span class="pill">newcomer</span>' if m["newcomer"] else ""
    body = (
        f'<h1 class="member">{name(m["member_id"])}</h1>'
        f'<p><span class="pill segment">{t(m["segment"])}</span>{newcomer} · '
        f"{m['totals']['points']:,} points from {m['totals']['events']:,} events · "
        f"{m['active_days']:,} active days · first seen {day(m['first_seen'])}, "
        f"last seen {day(m['last_seen'])}</p>"
        '<section aria-labelledby="bd"><h2 id="bd">Badges</h2>'
        f'<ul class="badges" data-badges>{badges}</ul></section>'
        '<section aria-labelledby="cal"><h2 id="cal">Active days</h2>'
        f"{calendar(view.active_days, int(view.now // 86400))}</section>"
        '<div class="columns three">'
        '<section aria-labelledby="rk"><h2 id="rk">Ranks</h2>'
        f"<table data-ranks>{ranks}</table></section>"
        '<section aria-labelledby="wn"><h2 id="wn">Points in windows</h2>'
        f"<table data-windows>{windows}</table></section>"
        '<section aria-labelledby="ty"><h2 id="ty">Activity by type</h2>'
        f"<table data-types>{by_type}</table></section></div>"
    )
    return layout(f"{m['member_id']} · {view.title}", body, c)


def catalog(community: str, title: str, badges: Sequence[Mapping[str, Any]]) -> str:
    items = []
    for b in badges:
        tiers = "".join(
            f'<li><img src="{t(image_path(community, b["badge"], tier["tier"]))}" alt="" '
            f'width="40" height="40"> {t(tier["tier"] or "badge")}: '
            f'<span data-holders="{t(tier["tier"] or "any")}">'
            f"{b['holders'][tier['tier'] or 'any']:,}</span> holders</li>"
            for tier in b["tiers"]
        )
        items.append(
            f'<article class="card" data-badge="{t(b["badge"])}">'
            f'<h2><a href="/c/{u(community)}/badges/{u(b["badge"])}">{name(b["name"])}</a></h2>'
            f"<p>{t(b['description'])}</p>"
            f'<p class="how">{t(" ".join(b["criteria"]))}</p>'
            f'<ul class="tiers">{tiers}</ul></article>'
        )
    body = f"<h1>Badges of {name(title)}</h1>" + f'<div class="cards">{"".join(items)}</div>'
    return layout(f"Badges · {title}", body, community)


@dataclass(frozen=True, slots=True)
class Holders:
    community: str
    title: str
    badge: Badge
    holders: Sequence[Mapping[str, Any]]
    counts: Mapping[str, int]


def holders(view: Holders) -> str:
    c, b = view.community, view.badge
    tiers = "".join(
        f'<li><img src="{t(image_path(c, b.id, tier.name))}" alt="" width="48" height="48"> '
        f"{t(tier.name or 'badge')} (at least {tier.at_least:,}): "
        f"{view.counts[tier.name or 'any']:,} holders</li>"
        for tier in b.tiers
    )
    rows = (
        "".join(
            f"<tr><td>{member_link(c, h['member_id'])}</td><td>{t(h['tier'] or '')}</td>"
            f"<td>{day(h['awarded_at'])}</td></tr>"
            for h in view.holders
        )
        or '<tr><td colspan="3" class="muted">Nobody holds this badge yet.</td></tr>'
    )
    how = "".join(f"<li>{t(s)}</li>" for s in criteria(b))
    body = (
        f"<h1>{name(b.name)}</h1><p>{t(b.description)}</p>"
        f'<h2>How to earn it</h2><ul class="how">{how}</ul>'
        f'<ul class="tiers">{tiers}</ul>'
        f"<h2>Holders, newest first (up to {len(view.holders)})</h2>"
        '<table class="holders" data-holders><thead><tr><th>Member</th><th>Tier</th>'
        f"<th>Awarded</th></tr></thead><tbody>{rows}</tbody></table>"
    )
    return layout(f"{b.name} · {view.title}", body, c)


def wall(community: str, title: str, feed: Mapping[str, Any]) -> str:
    board = feed["leaderboard"]
    awards = "".join(
        f'<li data-award="{t(a["award_id"])}"><img src="{t(a["image"])}" alt="" width="56" '
        f'height="56"><div><strong>{name(a["member_id"])}</strong><br>'
        f"{name(a['badge_name'])}</div></li>"
        for a in feed["awards"]
    )
    rows = "".join(
        f'<li><span class="rank">{e["rank"]}</span><span class="who">{name(e["member_id"])}</span>'
        f'<span class="num">{e["score"]:,}</span></li>'
        for e in board["entries"]
    )
    body = (
        f'<div class="wall" data-community="{t(community)}">'
        f'<h1>{name(title)} <span class="live" data-status>live</span></h1>'
        '<div class="wall-columns"><section><h2>Today\'s leaderboard</h2>'
        f'<ol class="wall-board" data-board>{rows}</ol></section>'
        "<section><h2>Latest awards</h2>"
        f'<ul class="ticker" data-awards>{awards}</ul></section></div></div>'
        '<noscript><p class="muted">Live updates need JavaScript; reload to refresh.</p>'
        "</noscript>"
        '<script src="/static/wall.js" defer></script>'
    )
    return layout(f"Wall · {title}", body, community, css="wall-page")
