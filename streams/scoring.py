"""Points per activity type.

The default table is the product's published scoring; operators override single
entries (``PULSE_POINTS=chat.message=2,forum.post=4``). A type missing from the table
earns nothing, which is never silent: the table is validated to cover every type.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from streams.activity import ACTIVITY_TYPES

DEFAULT_POINTS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "chat.message": 1,
        "forum.post": 3,
        "forum.reply": 2,
        "forum.answer_accepted": 10,
        "github.issue_opened": 3,
        "github.comment": 1,
        "github.pr_opened": 5,
        "github.pr_merged": 15,
        "github.review_submitted": 8,
        "event.checkin": 2,
        "event.session_attended": 4,
        "event.volunteer_shift": 20,
        "feedback.submitted": 2,
        "package.released": 10,
    }
)

MAX_POINTS: Final = 1_000_000


def scoring_table(overrides: Mapping[str, int] | None = None) -> Mapping[str, int]:
    """The default table with ``overrides`` applied; ValueError on unknown types or bad values."""
    table = dict(DEFAULT_POINTS)
    for kind, points in (overrides or {}).items():
        if kind not in table:
            raise ValueError(
                f"unknown activity type {kind!r} in points override; known: "
                + ", ".join(ACTIVITY_TYPES)
            )
        if isinstance(points, bool) or not isinstance(points, int):
            raise ValueError(f"points for {kind} must be an integer")
        if not 0 <= points <= MAX_POINTS:
            raise ValueError(f"points for {kind} must be between 0 and {MAX_POINTS}")
        table[kind] = points
    return MappingProxyType(table)


def parse_points(text: str) -> dict[str, int]:
    """Parse ``type=points,type=points`` (the ``PULSE_POINTS`` format)."""
    result: dict[str, int] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        kind, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{item!r} is not of the form type=points")
        try:
            result[kind.strip()] = int(value.strip())
        except ValueError:
            raise ValueError(
                f"points for {kind.strip()} must be an integer, got {value!r}"
            ) from None
    return result
