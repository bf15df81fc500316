"""SVG drawn by the pages: badge images, trend sparklines and the active-days calendar.

Everything here is deterministic: the same input gives the same bytes, so a badge image
can be cached forever at its stable URL and compared in tests. Every text from outside
goes through :func:`html.escape` before it reaches the markup.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from html import escape
from typing import Final

from streams.badges import Badge
from streams.periods import format_instant

# Tier colours (fill, ring); any other tier name gets a colour derived from its name.
TIER_COLOURS: Final = {
    None: ("#3572a5", "#1f4e79"),
    "bronze": ("#c77b30", "#8a4f1c"),
    "silver": ("#a7b1bc", "#6b7682"),
    "gold": ("#f2b807", "#a67c00"),
    "platinum": ("#7fd3d8", "#3f8f94"),
}


def _hue(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:2], "big") % 360


def tier_colours(tier: str | None) -> tuple[str, str]:
    if tier in TIER_COLOURS:
        return TIER_COLOURS[tier]
    hue = _hue(tier or "")
    return f"hsl({hue} 55% 55%)", f"hsl({hue} 55% 32%)"


def initials(name: str) -> str:
    words = [w for w in name.replace("-", " ").split() if w[:1].isalnum()]
    letters = "".join(w[0] for w in words[:2]).upper()
    return letters or "?"


def badge_svg(badge: Badge, tier: str | None) -> str:
    """A 128x128 hexagon medal: tier colours, the badge's initials, an accent band in a
    hue of its own derived from the badge id, and the name (and tier) as the title."""
    fill, ring = tier_colours(tier)
    accent = f"hsl({_hue(badge.id)} 70% 45%)"
    title = badge.name + (f" ({tier})" if tier else "")
    label = escape(initials(badge.name))
    stars = {"bronze": 1, "silver": 2, "gold": 3, "platinum": 4}.get(tier or "", 0)
    dots = "".join(
        f'<circle cx="{64 + (i - (stars - 1) / 2) * 14:g}" cy="100" r="4" fill="#fff"/>'
        for i in range(stars)
    )
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="128" height="128" '
        f'viewBox="0 0 128 128" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
        f'<polygon points="64,4 116,34 116,94 64,124 12,94 12,34" fill="{ring}"/>'
        f'<polygon points="64,14 107,39 107,89 64,114 21,89 21,39" fill="{fill}"/>'
        f'<rect x="21" y="56" width="86" height="16" fill="{accent}" opacity="0.85"/>'
        f'<text x="64" y="74" text-anchor="middle" font-family="DejaVu Sans, sans-serif" '
        f'font-size="34" font-weight="700" fill="#fff" stroke="{ring}" stroke-width="1.5" '
        f'paint-order="stroke">{label}</text>'
        f"{dots}</svg>"
    )


def sparkline(
    values: Sequence[float | None], label: str, width: int = 160, height: int = 36
) -> str:
    """A small line chart of ``values`` (oldest first); ``None`` is a gap."""
    known = [v for v in values if v is not None]
    if not known:
        return (
            f'<svg class="spark" width="{width}" height="{height}" role="img" '
            f'aria-label="{escape(label)}: no data"><title>{escape(label)}: no data</title></svg>'
        )
    low, high = min(known), max(known)
    span = (high - low) or 1.0
    step = width / max(1, len(values) - 1)
    runs: list[list[str]] = [[]]
    for i, v in enumerate(values):
        if v is None:
            runs.append([])
            continue
        y = height - 3 - (v - low) / span * (height - 6)
        runs[-1].append(f"{i * step:.1f},{y:.1f}")
    lines = "".join(
        f'<polyline points="{" ".join(r)}" fill="none" stroke="currentColor" stroke-width="2"/>'
        for r in runs
        if len(r) > 1
    )
    points = "".join(
        f'<circle cx="{r[0].split(",")[0]}" cy="{r[0].split(",")[1]}" r="2" fill="currentColor"/>'
        for r in runs
        if len(r) == 1
    )
    text = f"{label}: from {values[0] if values[0] is not None else 'n/a'} to {values[-1]}"
    return (
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(text)}"><title>{escape(text)}</title>{lines}{points}</svg>'
    )


def calendar(active: set[int], last_day: int, weeks: int = 53) -> str:
    """A GitHub-style year of squares ending with the week of ``last_day`` (days since
    the epoch, UTC); active days are filled. Weeks start on Monday."""
    size, gap = 11, 3
    # 1970-01-01 was a Thursday: weekday(day) = (day + 3) % 7 with Monday = 0.
    end_week_start = last_day - (last_day + 3) % 7
    first = end_week_start - 7 * (weeks - 1)
    cells = []
    for week in range(weeks):
        for weekday in range(7):
            day = first + 7 * week + weekday
            if day > last_day:
                continue
            on = day in active
            date = format_instant(day * 86400)[:10]
            cells.append(
                f'<rect x="{week * (size + gap)}" y="{weekday * (size + gap)}" width="{size}" '
                f'height="{size}" rx="2" class="{"on" if on else "off"}">'
                f"<title>{date}{': active' if on else ''}</title></rect>"
            )
    width, height = weeks * (size + gap), 7 * (size + gap)
    count = sum(1 for d in active if first <= d <= last_day)
    return (
        f'<svg class="calendar" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{count} active days in the last {weeks} weeks">{"".join(cells)}</svg>'
    )
