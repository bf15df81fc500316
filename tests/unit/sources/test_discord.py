"""Discord MESSAGE_CREATE: the message becomes a chat event, its text only a hash."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from streams.sources.discord import DiscordConfig, normalize_discord, snowflake_time
from streams.sources.normalized import content_hash, epoch
from tests.unit.sources.conftest import events_of, skipped

GUILD = "267624335836053506"
CONFIG = DiscordConfig(communities={GUILD: "python-discord"}, channels={GUILD: "python-general"})
Load = Callable[[str], Any]


def test_gateway_message_becomes_a_chat_message_without_its_text(payload: Load) -> None:
    frame = payload("discord_message_create.json")
    [out] = events_of(normalize_discord(frame, CONFIG))
    assert out == {
        "event_id": "dc-1442515649506058663",
        "type": "chat.message",
        "member_id": "141009127282720768",
        "community": "python-discord",
        "source": "discord",
        "channel": "python-general",
        "occurred_at": "2025-11-24T14:02:11.487000+00:00",
        "attributes": {"content_hash": content_hash(frame["d"]["content"])},
    }
    assert "asyncio" not in repr(out)


def test_bare_reply_message_keeps_what_it_replies_to(payload: Load) -> None:
    config = DiscordConfig(communities={GUILD: "python-discord"})
    [out] = events_of(normalize_discord(payload("discord_reply_in_thread.json"), config))
    assert out["attributes"]["reply_to"] == "1442515649506058663"
    assert out["channel"] == GUILD  # no name configured: the channel id


def test_cross_posts_hash_the_same_despite_case_and_spacing() -> None:
    assert content_hash("Check  out my\nPACKAGE") == content_hash("check out my package")
    assert content_hash("check out my package") != content_hash("check out my packages")


def test_bot_message_is_skipped(payload: Load) -> None:
    out = skipped(normalize_discord(payload("discord_bot_message.json"), CONFIG))
    assert out.reason == "bot"
    assert not out.malformed


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"webhook_id": "1100000000000000000"}, "webhook"),
        ({"author": {"id": "456226577798135808", "username": "Deleted User"}}, "deleted_user"),
        ({"type": 7}, "system_message"),  # a member joined
        ({"guild_id": None}, "direct_message"),
        ({"guild_id": "999"}, "unmapped_guild"),
    ],
)
def test_messages_not_written_by_a_member_here_are_skipped(
    payload: Load, change: dict[str, Any], reason: str
) -> None:
    frame = payload("discord_message_create.json")
    frame["d"].update(change)
    out = skipped(normalize_discord(frame, CONFIG))
    assert out.reason == reason
    assert not out.malformed


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("MESSAGE_UPDATE", "unsupported_event"), ("GUILD_MEMBER_ADD", "unsupported_event")],
)
def test_other_dispatches_are_skipped(payload: Load, kind: str, reason: str) -> None:
    frame = payload("discord_message_create.json")
    frame["t"] = kind
    assert skipped(normalize_discord(frame, CONFIG)).reason == reason


def test_heartbeat_ack_is_not_a_dispatch() -> None:
    assert skipped(normalize_discord({"op": 11, "d": None}, CONFIG)).reason == "not_a_dispatch"


def test_missing_timestamp_falls_back_to_the_snowflake(payload: Load) -> None:
    frame = payload("discord_message_create.json")
    del frame["d"]["timestamp"]
    [out] = events_of(normalize_discord(frame, CONFIG))
    # The snowflake's millisecond matches the gateway timestamp of the same message.
    assert epoch(out["occurred_at"]) == pytest.approx(epoch("2025-11-24T14:02:11.487Z"), abs=1)
    assert snowflake_time("not-a-number") is None


def test_empty_content_has_no_hash(payload: Load) -> None:
    frame = payload("discord_message_create.json")
    frame["d"]["content"] = ""
    [out] = events_of(normalize_discord(frame, CONFIG))
    assert "attributes" not in out


@pytest.mark.parametrize(
    "body",
    [None, [], {"op": 0, "t": "MESSAGE_CREATE"}, {"id": "1"}, {"id": "1", "author": "x"}],
)
def test_broken_payloads_are_malformed_skips(body: Any) -> None:
    assert skipped(normalize_discord(body, CONFIG)).malformed
