"""What the announcer sends: one HTTP request per (message, destination). Pure.

Message fields (member ids, channel names, badge names) come from outside and are
hostile: templates are the operator's, values are inserted as text, Discord may not
mention anyone (``allowed_mentions``), Slack's control characters are escaped, and the
generic webhook carries the original message as JSON.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Final

import orjson

from agents.announce.config import Destination
from streams.activity import parse_timestamp
from streams.segments import change_id

# Output topic kind -> the message's id field (segment changes carry none: derived).
ID_FIELDS: Final = {"awards": "award_id", "flags": "flag_id"}
MAX_TEXT: Final = 1800  # below Discord's 2,000-character limit


class BadMessage(ValueError):
    """A message on an output topic that cannot be announced (kept as a dead letter)."""


@dataclass(frozen=True, slots=True)
class Request:
    url: str
    body: bytes
    headers: dict[str, str]


def delivery_id(event: str, message: dict[str, Any]) -> str:
    """The id a destination remembers a delivery by: award_id, flag_id, or the segment
    change's deterministic id (the same as the worker's)."""
    try:
        if event == "segments":
            at_ms = round(parse_timestamp(message["changed_at"], "changed_at") * 1000)
            return change_id(
                str(message["community"]), str(message["member_id"]),
                str(message["from"]), str(message["to"]), at_ms,
            )  # fmt: skip
        identity = message[ID_FIELDS[event]]
    except (KeyError, TypeError, ValueError) as exc:
        raise BadMessage(f"no usable id: {exc}") from None
    if not isinstance(identity, str) or not 1 <= len(identity) <= 128:
        raise BadMessage("no usable id")
    return identity


def _values(event: str, message: dict[str, Any], image_url: str | None) -> dict[str, str]:
    values = {k: "" if v is None else str(v) for k, v in message.items()}
    if event == "awards":
        tier = values.get("tier", "")
        values["tier_suffix"] = f" ({tier})" if tier else ""
        values.setdefault("badge_name", values.get("badge", ""))
        values["image_url"] = (
            image_url.format(community=values.get("community", ""), badge=values.get("badge", ""))
            if image_url
            else ""
        )
    return values


def text(destination: Destination, event: str, message: dict[str, Any], image: str | None) -> str:
    values = _values(event, message, image)
    try:
        out = destination.templates[event].format_map(values)
    except (KeyError, IndexError, ValueError) as exc:
        raise BadMessage(f"the {event} template does not fit the message: {exc}") from None
    return out[:MAX_TEXT]


def _slack_escape(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def sign(secret: str, body: bytes) -> str:
    """GitHub's scheme: ``sha256=`` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def request(
    destination: Destination,
    event: str,
    message: dict[str, Any],
    identity: str,
    image_url: str | None = None,
) -> Request:
    headers = {"Content-Type": "application/json", "User-Agent": "community-pulse-announce"}
    kind = destination.kind
    if kind == "webhook":
        body = orjson.dumps({"event": event, "delivery": identity, "message": message})
        headers["X-Pulse-Delivery"] = identity
        headers["X-Pulse-Event"] = event
        headers["X-Pulse-Signature-256"] = sign(destination.secret.reveal(), body)
        return Request(destination.url.reveal(), body, headers)
    line = text(destination, event, message, image_url)
    if kind == "discord":
        payload: dict[str, Any] = {"content": line, "allowed_mentions": {"parse": []}}
        image = _values(event, message, image_url).get("image_url")
        if image:
            payload["embeds"] = [{"image": {"url": image}}]
        return Request(destination.url.reveal(), orjson.dumps(payload), headers)
    if kind == "slack":
        return Request(
            destination.url.reveal(), orjson.dumps({"text": _slack_escape(line)}), headers
        )
    headers["Api-Key"] = destination.api_key.reveal()
    headers["Api-Username"] = destination.api_username
    body = orjson.dumps({"topic_id": destination.topic_id, "raw": line})
    return Request(f"{destination.url.reveal()}/posts.json", body, headers)
