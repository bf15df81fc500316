"""Discourse webhook payloads to forum events.

Handled (``X-Discourse-Event`` header):

- ``post_created``: the topic's first post (``post_number`` 1) -> ``forum.post``, any
  other -> ``forum.reply``; reads ``post.id``, ``username``, ``user_id``,
  ``created_at``, ``post_number``, ``post_type``, ``topic_id``,
  ``reply_to_post_number``, ``category_slug``/``category_id``, ``topic_archetype``,
  ``hidden``, ``user_deleted``
- ``accepted_solution`` (the Solved plugin; its body is the accepted post) ->
  ``forum.answer_accepted`` for the post's author. The payload carries no acceptance
  time, so the time of receipt is used (passed in), falling back to the post's
  ``updated_at``.

Skipped: whispers and small actions (``post_type`` other than 1), private messages,
system users (``user_id`` <= 0: system, discobot), hidden posts and deleted users. The
community comes from a mapping of the forum's host name (``X-Discourse-Instance``) or
``*``. Event ids are made from the host and the post id, so a redelivered webhook (or
the same post seen again) is counted once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from streams.sources.normalized import (
    Normalized,
    Outcome,
    Skipped,
    activity,
    epoch,
    event_id,
    guarded,
    lookup,
    obj,
    text,
    timestamp,
)

SOURCE: Final = "discourse"
_REGULAR_POST: Final = 1
_IGNORED: Final = frozenset(
    {
        "post_edited",
        "post_destroyed",
        "post_recovered",
        "topic_created",
        "topic_edited",
        "topic_destroyed",
        "topic_recovered",
        "user_created",
        "user_logged_in",
        "user_updated",
        "unaccepted_solution",
    }
)


@dataclass(frozen=True)
class DiscourseConfig:
    """How Discourse forums map onto communities."""

    communities: Mapping[str, str] = field(default_factory=dict)
    source: str = SOURCE


def instance_host(instance: str | None) -> str | None:
    """``https://discuss.python.org/`` -> ``discuss.python.org`` (None stays None)."""
    if not instance:
        return None
    host = urlsplit(instance if "//" in instance else f"//{instance}").hostname
    return host or None


def _author(post: dict[str, Any]) -> str | Skipped:
    username = text(post, "username")
    if username is None:
        return Skipped("no_author", "the post has no username", True)
    user_id = post.get("user_id")
    if isinstance(user_id, int) and not isinstance(user_id, bool) and user_id <= 0:
        return Skipped("bot", username[:64])
    if post.get("user_deleted") is True:
        return Skipped("deleted_user", "the author's account was deleted")
    return username


@guarded
def normalize_discourse(
    event: str,
    payload: object,
    config: DiscourseConfig,
    *,
    instance: str | None = None,
    received_at: float | None = None,
) -> Outcome:
    """One webhook delivery: its ``X-Discourse-Event``, body and ``X-Discourse-Instance``."""
    if event == "ping":
        return Skipped("ping", "webhook ping")
    if event in _IGNORED:
        return Skipped("ignored_event", event)
    if event not in ("post_created", "accepted_solution"):
        return Skipped("unsupported_event", event[:64])
    post = obj(payload, "post")
    if post is None:
        return Skipped("no_post", "the payload has no post object", True)
    post_id = text(post, "id")
    topic_id = text(post, "topic_id")
    if post_id is None or topic_id is None:
        return Skipped("no_post", "the post has no id or topic_id", True)
    host = instance_host(instance)
    community = lookup(config.communities, host)
    if community is None:
        return Skipped("unmapped_instance", (host or "no instance")[:128])
    if post.get("topic_archetype") == "private_message":
        return Skipped("private_message", "a private message, not a forum topic")
    if post.get("post_type", _REGULAR_POST) != _REGULAR_POST:
        return Skipped("not_a_regular_post", f"post_type {str(post.get('post_type'))[:8]}")
    if post.get("hidden") is True:
        return Skipped("hidden_post", "hidden after flags")
    member = _author(post)
    if isinstance(member, Skipped):
        return member

    attributes: dict[str, Any] = {"thread_id": topic_id}
    if event == "accepted_solution":
        kind = "forum.answer_accepted"
        occurred_at = timestamp(received_at) or timestamp(post.get("updated_at"))
        eid = event_id("dsc", host or "-", "accepted", post_id)
    else:
        kind = "forum.post" if post.get("post_number") == 1 else "forum.reply"
        occurred_at = timestamp(post.get("created_at"))
        eid = event_id("dsc", host or "-", "post", post_id)
        reply_to = text(post, "reply_to_post_number")
        if kind == "forum.reply" and reply_to is not None:
            attributes["reply_to"] = f"{topic_id}/{reply_to}"
    if occurred_at is None:
        return Skipped("no_timestamp", f"{event} has no usable time", True)
    channel = text(post, "category_slug") or text(post, "category_id")
    return Normalized(
        (
            activity(
                event_id=eid,
                type=kind,
                member_id=member,
                community=community,
                source=config.source,
                channel=channel,
                occurred_at=occurred_at,
                attributes=attributes,
            ),
        )
    )


def unwrap_delivery(record: object) -> tuple[str, object, str | None, float | None] | None:
    """(event, payload, instance, received_at) from a stored delivery line, or None.

    The shape is ``{"event": "post_created", "instance": "https://forum.example",
    "received_at": "2026-11-25T10:00:00Z", "payload": {"post": {...}}}``; only
    ``event`` and ``payload`` are required.
    """
    if not isinstance(record, dict) or "payload" not in record:
        return None
    event = text(record, "event")
    if event is None:
        return None
    received = timestamp(record.get("received_at"))
    return (
        event,
        record["payload"],
        text(record, "instance"),
        epoch(received) if received else None,
    )
