"""Fixtures shared by every test tier: factories for activities and settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from agents.settings import Settings
from streams.activity import Activity, parse_activity

# 2026-11-25T12:00:00Z, a Wednesday in ISO week 48.
NOON = 1795608000.0


def activity_dict(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "evt-1",
        "type": "chat.message",
        "member_id": "alice",
        "community": "pycon-us",
        "source": "discord",
        "channel": "general",
        "occurred_at": "2026-11-25T11:59:00Z",
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not ...}


# One message of each kind the worker dead-letters, with the reason it must give.
INVALID_MESSAGES: list[tuple[bytes, str]] = [
    (b"{not json", "invalid_json"),
    (b"\xff\xfe\x00", "invalid_json"),
    (b"[1, 2]", "not_an_object"),
    (orjson.dumps(activity_dict(event_id=...)), "missing_field"),
    (orjson.dumps(activity_dict(type="chat.shout")), "unknown_type"),
    (orjson.dumps(activity_dict(community="Bad Community")), "bad_community"),
    (orjson.dumps(activity_dict(occurred_at="2099-01-01T00:00:00Z")), "in_future"),
]


@pytest.fixture
def make_event() -> Callable[..., dict[str, Any]]:
    """Factory of valid activity dicts; pass field=... to change one, field=... (Ellipsis)
    to drop it."""
    return activity_dict


@pytest.fixture
def make_activity() -> Callable[..., Activity]:
    def make(**overrides: Any) -> Activity:
        return parse_activity(activity_dict(**overrides), now=NOON, max_future_skew=300)

    return make


@pytest.fixture
def settings() -> Settings:
    return Settings.from_env({})
