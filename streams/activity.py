"""The activity event contract (``schemas/activity.v1.json``) and its validation.

One JSON object per Kafka message, keyed by ``member_id``. ``parse_activity`` turns an
already-decoded JSON value into an :class:`Activity` or raises :class:`InvalidActivity`
with a bounded ``reason`` code (safe as a metric label) and a human-readable detail.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final, NamedTuple

ACTIVITY_TYPES: Final[tuple[str, ...]] = (
    "chat.message",
    "forum.post",
    "forum.reply",
    "forum.answer_accepted",
    "github.issue_opened",
    "github.comment",
    "github.pr_opened",
    "github.pr_merged",
    "github.review_submitted",
    "event.checkin",
    "event.session_attended",
    "event.volunteer_shift",
    "feedback.submitted",
    "package.released",
)
_TYPE_SET: Final = frozenset(ACTIVITY_TYPES)

COMMUNITY_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# Source names become metric labels, so they are held to a short, plain alphabet.
SOURCE_RE: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
# RFC 3339 date-time with a mandatory offset ("Z" or +hh:mm), optional fraction.
RFC3339_RE: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})"
)

MAX_ID_LEN: Final = 128
MAX_CHANNEL_LEN: Final = 128
MAX_ATTRIBUTES: Final = 32

_KNOWN_FIELDS: Final = frozenset(
    {
        "event_id",
        "type",
        "member_id",
        "community",
        "source",
        "channel",
        "occurred_at",
        "attributes",
        "schema_version",
    }
)
_REQUIRED: Final = ("event_id", "type", "member_id", "community", "source", "occurred_at")


class InvalidActivity(ValueError):
    """An input message that breaks the activity contract.

    ``reason`` is one of a fixed set of codes (used as a metric label); ``field`` names
    the offending field when there is one; ``detail`` is for humans and the DLQ.
    """

    def __init__(self, reason: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.field = field
        self.detail = detail


class Activity(NamedTuple):
    """One validated member activity. ``occurred_at`` is epoch seconds (UTC).

    A named tuple, immutable like a frozen dataclass: one is made per event, and a
    frozen dataclass's ``__init__`` costs five times as much.
    """

    event_id: str
    type: str
    member_id: str
    community: str
    source: str
    occurred_at: float
    channel: str | None = None
    attributes: dict[str, Any] | None = None


def _text(obj: dict[str, Any], name: str, max_len: int) -> str:
    value = obj[name]
    if not isinstance(value, str):
        raise InvalidActivity("wrong_type", f"{name} must be a string", name)
    if not value:
        raise InvalidActivity("empty_field", f"{name} must not be empty", name)
    if len(value) > max_len:
        raise InvalidActivity("too_long", f"{name} is longer than {max_len} characters", name)
    if not value.isprintable():
        raise InvalidActivity(
            "bad_characters", f"{name} contains control or unprintable characters", name
        )
    return value


def parse_timestamp(value: object, name: str = "occurred_at") -> float:
    """Parse an RFC 3339 timestamp with an explicit offset into epoch seconds."""
    if not isinstance(value, str):
        raise InvalidActivity("wrong_type", f"{name} must be an RFC 3339 string", name)
    if RFC3339_RE.fullmatch(value) is None:
        raise InvalidActivity(
            "bad_timestamp",
            f"{name} must be RFC 3339 with an offset, e.g. 2026-11-25T10:00:00Z",
            name,
        )
    if value[10] == "t" or value[-1] == "z":
        value = value.upper()
    try:
        # fromisoformat reads "Z" and a space separator itself (Python 3.11).
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidActivity("bad_timestamp", f"{name} is not a valid date-time", name) from exc
    return parsed.timestamp()


# The attributes the pipeline reads, and the JSON types schemas/activity.v1.json allows.
_ATTRIBUTE_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "thread_id": (str, int),
    "reply_to": (str, int),
    "event": (str,),
    "content_hash": (str,),
}


def _attributes(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidActivity("wrong_type", "attributes must be an object", "attributes")
    if len(value) > MAX_ATTRIBUTES:
        raise InvalidActivity(
            "too_long", f"attributes has more than {MAX_ATTRIBUTES} keys", "attributes"
        )
    for name, kinds in _ATTRIBUTE_TYPES.items():
        if (item := value.get(name)) is not None and (
            isinstance(item, bool) or not isinstance(item, kinds)
        ):
            wanted = "a string or an integer" if int in kinds else "a string"
            raise InvalidActivity(
                "wrong_type", f"attributes.{name} must be {wanted}", f"attributes.{name}"
            )
    rating = value.get("rating")
    if isinstance(rating, float) and rating.is_integer():
        # JSON Schema's "integer" includes 5.0; count it as the 5 it is.
        value = {**value, "rating": int(rating)}
        rating = value["rating"]
    if rating is not None and (
        isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5
    ):
        raise InvalidActivity(
            "out_of_range", "attributes.rating must be an integer 1..5", "attributes.rating"
        )
    return value


# Community and source names seen valid: a deployment has a handful of each, and every
# event names one. Bounded, so hostile input cannot grow them.
_VALID_COMMUNITIES: Final[set[str]] = set()
_VALID_SOURCES: Final[set[str]] = set()
_REMEMBERED: Final = 1024


def _valid(pattern: re.Pattern[str], value: str, seen: set[str]) -> bool:
    if pattern.fullmatch(value) is None:
        return False
    if len(seen) < _REMEMBERED:
        seen.add(value)
    return True


def parse_activity(obj: object, *, now: float, max_future_skew: float) -> Activity:
    """Validate a decoded JSON value against the activity contract.

    ``now`` is the processing time (epoch seconds); events that claim to happen more
    than ``max_future_skew`` seconds after it are rejected, because a clock far in the
    future would otherwise pin a member to the top of every leaderboard.
    """
    if not isinstance(obj, dict):
        raise InvalidActivity("not_an_object", "the message must be a JSON object")
    for name in _REQUIRED:
        if name not in obj or obj[name] is None:
            raise InvalidActivity("missing_field", f"{name} is required", name)
    if not _KNOWN_FIELDS.issuperset(obj):
        name = sorted(obj.keys() - _KNOWN_FIELDS)[0][:64]
        raise InvalidActivity("unknown_field", f"unknown field {name!r}", name)
    version = obj.get("schema_version", 1)
    if version != 1 or isinstance(version, bool):
        raise InvalidActivity("unsupported_version", "schema_version must be 1", "schema_version")

    event_id = _text(obj, "event_id", MAX_ID_LEN)
    kind = obj["type"]
    if not isinstance(kind, str):
        raise InvalidActivity("wrong_type", "type must be a string", "type")
    if kind not in _TYPE_SET:
        raise InvalidActivity("unknown_type", f"type {kind[:64]!r} is not an activity type", "type")
    member_id = _text(obj, "member_id", MAX_ID_LEN)
    community = obj["community"]
    if not isinstance(community, str):
        raise InvalidActivity("wrong_type", "community must be a string", "community")
    if community not in _VALID_COMMUNITIES and not _valid(
        COMMUNITY_RE, community, _VALID_COMMUNITIES
    ):
        raise InvalidActivity(
            "bad_community",
            "community must be 1..64 characters of [a-z0-9._-], starting with [a-z0-9]",
            "community",
        )
    source = obj["source"]
    if not isinstance(source, str):
        raise InvalidActivity("wrong_type", "source must be a string", "source")
    if source not in _VALID_SOURCES and not _valid(SOURCE_RE, source, _VALID_SOURCES):
        raise InvalidActivity(
            "bad_source", "source must be 1..32 characters of [a-z0-9._-]", "source"
        )
    channel = None
    if obj.get("channel") is not None:
        channel = _text(obj, "channel", MAX_CHANNEL_LEN)
    occurred_at = parse_timestamp(obj["occurred_at"])
    if occurred_at > now + max_future_skew:
        raise InvalidActivity(
            "in_future",
            f"occurred_at is more than {max_future_skew:g}s ahead of the processing clock",
            "occurred_at",
        )
    attributes = None
    if obj.get("attributes") is not None:
        attributes = _attributes(obj["attributes"])
    return Activity(
        event_id=event_id,
        type=kind,
        member_id=member_id,
        community=community,
        source=source,
        occurred_at=occurred_at,
        channel=channel,
        attributes=attributes,
    )
