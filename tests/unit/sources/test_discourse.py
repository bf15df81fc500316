"""Discourse webhooks: topics, replies, accepted answers and what is left out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from streams.sources.discourse import (
    DiscourseConfig,
    instance_host,
    normalize_discourse,
    unwrap_delivery,
)
from streams.sources.normalized import epoch
from tests.unit.sources.conftest import events_of, skipped

INSTANCE = "https://discuss.python.org"
CONFIG = DiscourseConfig(communities={"discuss.python.org": "python-discuss"})
RECEIVED = 1764057600.0  # 2025-11-25T08:00:00Z
Load = Callable[[str], Any]


def normalize(event: str, body: Any, config: DiscourseConfig = CONFIG) -> Any:
    return normalize_discourse(event, body, config, instance=INSTANCE, received_at=RECEIVED)


def test_first_post_of_a_topic_is_a_forum_post(payload: Load) -> None:
    [out] = events_of(normalize("post_created", payload("discourse_post_created_topic.json")))
    assert out == {
        "event_id": "dsc-discuss.python.org-post-178202",
        "type": "forum.post",
        "member_id": "brettcannon",
        "community": "python-discuss",
        "source": "discourse",
        "channel": "packaging",
        "occurred_at": "2025-11-24T18:21:52.419Z",
        "attributes": {"thread_id": "64123"},
    }


def test_later_post_is_a_reply_in_the_same_thread(payload: Load) -> None:
    [out] = events_of(normalize("post_created", payload("discourse_post_created_reply.json")))
    assert out["type"] == "forum.reply"
    assert out["member_id"] == "pf_moore"
    assert out["attributes"] == {"thread_id": "64123", "reply_to": "64123/1"}


def test_accepted_solution_credits_the_answer_author_at_receipt(payload: Load) -> None:
    [out] = events_of(normalize("accepted_solution", payload("discourse_accepted_solution.json")))
    assert out["type"] == "forum.answer_accepted"
    assert out["member_id"] == "pf_moore"
    assert epoch(out["occurred_at"]) == RECEIVED
    assert out["event_id"] == "dsc-discuss.python.org-accepted-178240"


def test_accepted_solution_without_receipt_time_uses_the_post_update(payload: Load) -> None:
    body = payload("discourse_accepted_solution.json")
    [out] = events_of(normalize_discourse("accepted_solution", body, CONFIG, instance=INSTANCE))
    assert out["occurred_at"] == "2025-11-25T07:45:00.000Z"


def test_system_small_action_is_skipped(payload: Load) -> None:
    body = payload("discourse_small_action_by_system.json")
    assert skipped(normalize("post_created", body)).reason == "not_a_regular_post"
    body["post"]["post_type"] = 1
    assert skipped(normalize("post_created", body)).reason == "bot"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"topic_archetype": "private_message"}, "private_message"),
        ({"post_type": 4}, "not_a_regular_post"),  # a whisper
        ({"hidden": True}, "hidden_post"),
        ({"user_deleted": True}, "deleted_user"),
        ({"user_id": -2, "username": "discobot"}, "bot"),
    ],
)
def test_posts_that_are_not_public_member_posts_are_skipped(
    payload: Load, change: dict[str, Any], reason: str
) -> None:
    body = payload("discourse_post_created_reply.json")
    body["post"].update(change)
    out = skipped(normalize("post_created", body))
    assert out.reason == reason
    assert not out.malformed


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ("ping", "ping"),
        ("topic_created", "ignored_event"),
        ("post_edited", "ignored_event"),
        ("unaccepted_solution", "ignored_event"),
        ("user_badge_granted", "unsupported_event"),
    ],
)
def test_other_events_are_skipped(payload: Load, event: str, reason: str) -> None:
    out = skipped(normalize(event, payload("discourse_post_created_reply.json")))
    assert out.reason == reason


def test_unknown_forum_is_skipped_unless_a_default_community_is_set(payload: Load) -> None:
    body = payload("discourse_post_created_topic.json")
    assert skipped(normalize("post_created", body, DiscourseConfig())).reason == (
        "unmapped_instance"
    )
    fallback = DiscourseConfig(communities={"*": "forum"})
    assert events_of(normalize("post_created", body, fallback))[0]["community"] == "forum"


@pytest.mark.parametrize(
    "body", [None, {}, {"post": []}, {"post": {"id": 1}}, {"post": {"id": 1, "topic_id": 2}}]
)
def test_broken_payloads_are_malformed_skips(body: Any) -> None:
    assert skipped(normalize("post_created", body)).malformed


def test_instance_host_and_stored_deliveries() -> None:
    assert instance_host("https://Discuss.Python.org/") == "discuss.python.org"
    assert instance_host("forum.example.org") == "forum.example.org"
    assert instance_host(None) is None
    record = {
        "event": "accepted_solution",
        "instance": INSTANCE,
        "received_at": "2025-11-25T08:00:00Z",
        "payload": {"post": {}},
    }
    assert unwrap_delivery(record) == ("accepted_solution", {"post": {}}, INSTANCE, RECEIVED)
    assert unwrap_delivery({"post": {}}) is None
