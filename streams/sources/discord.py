"""Discord gateway ``MESSAGE_CREATE`` payloads to ``chat.message`` events.

Reads the gateway dispatch frame (``{"op": 0, "t": "MESSAGE_CREATE", "d": message}``) or
a bare message object: ``id``, ``guild_id``, ``channel_id``, ``author.id``,
``author.bot``, ``webhook_id``, ``type``, ``timestamp``, ``content`` and
``message_reference.message_id``. The text is only hashed (``attributes.content_hash``);
it never leaves this module. Bots, webhooks, system messages, direct messages and the
"Deleted User" placeholder are skipped with their reason.

The member is the author's snowflake id (names change, ids do not). The community comes
from a mapping of guild id (or ``*``) to community; the channel is the channel's name
when one is configured for its id, else the id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from streams.sources.normalized import (
    Normalized,
    Outcome,
    Skipped,
    activity,
    content_hash,
    event_id,
    guarded,
    lookup,
    obj,
    text,
    timestamp,
)

SOURCE: Final = "discord"
DISCORD_EPOCH_MS: Final = 1420070400000
# Discord shows messages of deleted accounts under this one user id.
DELETED_USER_ID: Final = "456226577798135808"
# Message types people write: DEFAULT and REPLY. Joins, pins, boosts... are system ones.
_PERSON_TYPES: Final = frozenset({0, 19})


@dataclass(frozen=True)
class DiscordConfig:
    """How Discord guilds and channels map onto communities and channel names."""

    communities: Mapping[str, str] = field(default_factory=dict)
    channels: Mapping[str, str] = field(default_factory=dict)
    source: str = SOURCE


def snowflake_time(snowflake: str) -> float | None:
    """Creation time (epoch seconds) encoded in a Discord snowflake id."""
    if not snowflake.isdigit():
        return None
    return ((int(snowflake) >> 22) + DISCORD_EPOCH_MS) / 1000


@guarded
def normalize_discord(payload: object, config: DiscordConfig) -> Outcome:
    """One gateway dispatch (or bare message object) to a ``chat.message``."""
    if not isinstance(payload, dict):
        return Skipped("not_an_object", "the payload is not a JSON object", True)
    message: dict[str, Any] = payload
    if "t" in payload or "op" in payload:
        if payload.get("op") != 0:
            return Skipped("not_a_dispatch", f"gateway op {str(payload.get('op'))[:8]}")
        kind = text(payload, "t") or "?"
        if kind != "MESSAGE_CREATE":
            return Skipped("unsupported_event", kind[:64])
        data = obj(payload, "d")
        if data is None:
            return Skipped("no_message", "the dispatch has no message (d)", True)
        message = data

    message_id = text(message, "id")
    author = obj(message, "author")
    author_id = text(author, "id")
    if message_id is None or author is None or author_id is None:
        return Skipped("no_author", "the message has no id or author id", True)
    if author.get("bot") is True or author.get("system") is True:
        return Skipped("bot", (text(author, "username") or author_id)[:64])
    if text(message, "webhook_id") is not None:
        return Skipped("webhook", "posted by a webhook, not a member")
    if author_id == DELETED_USER_ID:
        return Skipped("deleted_user", "the author's account was deleted")
    msg_type = message.get("type", 0)
    if isinstance(msg_type, bool) or not isinstance(msg_type, int) or msg_type not in _PERSON_TYPES:
        return Skipped("system_message", f"message type {str(msg_type)[:8]}")
    guild = text(message, "guild_id")
    if guild is None:
        return Skipped("direct_message", "not sent in a guild")
    community = lookup(config.communities, guild)
    if community is None:
        return Skipped("unmapped_guild", guild[:32])
    channel_id = text(message, "channel_id")
    if channel_id is None:
        return Skipped("no_channel", "the message has no channel_id", True)

    occurred_at = timestamp(message.get("timestamp"))
    if occurred_at is None and (created := snowflake_time(message_id)) is not None:
        occurred_at = timestamp(created)
    if occurred_at is None:
        return Skipped("no_timestamp", "neither timestamp nor a snowflake id", True)
    content = message.get("content")
    attributes: dict[str, object] = {}
    if isinstance(content, str) and content.strip():
        attributes["content_hash"] = content_hash(content)
    reply_to = text(message, "message_reference", "message_id")
    if reply_to is not None and msg_type == 19:
        attributes["reply_to"] = reply_to
    return Normalized(
        (
            activity(
                event_id=event_id("dc", message_id),
                type="chat.message",
                member_id=author_id,
                community=community,
                source=config.source,
                channel=config.channels.get(channel_id, channel_id),
                occurred_at=occurred_at,
                attributes=attributes,
            ),
        )
    )
