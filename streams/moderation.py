"""Automated moderation in the stream: chat floods and cross-posting.

- ``flood``: a ``chat.message`` is over the limit when the same member already posted
  ``flood_messages`` (10) or more ``chat.message`` in the same channel within the previous
  ``flood_window`` (60 s) of event time.
- ``cross-post``: a ``chat.message`` whose ``attributes.content_hash`` the same member
  already posted in ``crosspost_channels`` (2) or more *other* channels within the
  previous ``crosspost_window`` (5 min) is over the limit.

An over-limit message earns no points and counts for no badge. The first one of a burst
raises one flag, which is published; later ones within the same burst (no gap longer
than the window) are attached to that flag in Redis and not published again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final

from streams.activity import Activity
from streams.periods import format_instant

RULES: Final = ("flood", "cross-post")


@dataclass(frozen=True, slots=True)
class ModerationPolicy:
    flood_messages: int = 10
    flood_window: int = 60
    crosspost_channels: int = 2
    crosspost_window: int = 300

    def public(self) -> dict[str, Any]:
        return {
            "flood": {"messages": self.flood_messages, "window_seconds": self.flood_window},
            "cross-post": {
                "other_channels": self.crosspost_channels,
                "window_seconds": self.crosspost_window,
            },
        }


def content_hash(activity: Activity) -> str | None:
    value = (activity.attributes or {}).get("content_hash")
    return value[:128] if isinstance(value, str) and value else None


def flag_id(community: str, member_id: str, rule: str, event_id: str) -> str:
    """Deterministic id of the flag a burst's first over-limit message raises."""
    text = "\x1f".join((community, member_id, rule, event_id))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def flag_message(community: str, identity: str, record: dict[str, Any]) -> dict[str, Any]:
    """The ``moderation-flagged.v1`` message (``schemas/moderation-flagged.v1.json``)."""
    return {
        "schema_version": 1,
        "flag_id": identity,
        "community": community,
        "member_id": record["member_id"],
        "channel": record["channel"],
        "rule": record["rule"],
        "window_start": format_instant(int(record["start_ms"]) / 1000),
        "window_end": format_instant(int(record["end_ms"]) / 1000),
        "event_ids": list(record["event_ids"]),
        "flagged_at": format_instant(int(record["end_ms"]) / 1000),
    }
