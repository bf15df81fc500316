"""GitHub webhook payloads: each handled action, the edge cases, and the skip reasons."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from streams.sources.github import GitHubConfig, guess_event, normalize_github, unwrap_delivery
from tests.unit.sources.conftest import events_of, skipped

CONFIG = GitHubConfig(communities={"pycon": "pycon-us"})
DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
Load = Callable[[str], Any]


@pytest.mark.parametrize(
    ("event", "fixture", "kind", "member", "occurred_at"),
    [
        (
            "pull_request",
            "github_pull_request_opened.json",
            "github.pr_opened",
            "octocat",
            "2025-11-24T09:14:03Z",
        ),
        (
            "pull_request",
            "github_pull_request_closed_merged.json",
            "github.pr_merged",
            "octocat",  # the author, not hugovk who merged it
            "2025-11-25T08:02:44Z",
        ),
        (
            "pull_request_review",
            "github_pull_request_review_submitted.json",
            "github.review_submitted",
            "hugovk",
            "2025-11-24T15:40:12Z",
        ),
        (
            "issues",
            "github_issues_opened.json",
            "github.issue_opened",
            "mariatta",
            "2025-11-24T11:02:31Z",
        ),
        (
            "issue_comment",
            "github_issue_comment_created.json",
            "github.comment",
            "ambv",
            "2025-11-24T12:30:00Z",
        ),
    ],
)
def test_each_handled_action_gives_one_valid_event(
    payload: Load, event: str, fixture: str, kind: str, member: str, occurred_at: str
) -> None:
    [out] = events_of(normalize_github(event, payload(fixture), CONFIG, DELIVERY))
    assert out["type"] == kind
    assert out["member_id"] == member
    assert out["community"] == "pycon-us"
    assert out["source"] == "github"
    assert out["channel"] == "pycon/pycon-site"
    assert out["occurred_at"] == occurred_at
    action = payload(fixture)["action"]
    assert out["event_id"] == f"gh-{DELIVERY}-{action}"


def test_thread_ids_tie_a_pull_request_and_its_review(payload: Load) -> None:
    [opened] = events_of(
        normalize_github("pull_request", payload("github_pull_request_opened.json"), CONFIG)
    )
    [review] = events_of(
        normalize_github(
            "pull_request_review", payload("github_pull_request_review_submitted.json"), CONFIG
        )
    )
    assert opened["attributes"]["thread_id"] == review["attributes"]["thread_id"]
    assert opened["attributes"]["thread_id"] == "pycon/pycon-site#1347"
    assert review["attributes"]["state"] == "approved"


def test_closed_but_not_merged_pull_request_is_skipped(payload: Load) -> None:
    out = skipped(
        normalize_github(
            "pull_request", payload("github_pull_request_closed_unmerged.json"), CONFIG, DELIVERY
        )
    )
    assert out.reason == "pr_closed_unmerged"
    assert not out.malformed


def test_bot_author_is_skipped(payload: Load) -> None:
    body = payload("github_pull_request_opened.json")
    bot = {"login": "dependabot[bot]", "id": 49699333, "type": "Bot"}
    body["pull_request"]["user"] = body["sender"] = bot
    assert skipped(normalize_github("pull_request", body, CONFIG)).reason == "bot"


def test_deleted_user_ghost_is_skipped(payload: Load) -> None:
    body = payload("github_issue_comment_created.json")
    body["comment"]["user"] = {"login": "ghost", "id": 10137, "type": "User"}
    assert skipped(normalize_github("issue_comment", body, CONFIG)).reason == "deleted_user"


def test_self_review_is_skipped(payload: Load) -> None:
    body = payload("github_pull_request_review_submitted.json")
    body["review"]["user"] = dict(body["pull_request"]["user"])
    assert skipped(normalize_github("pull_request_review", body, CONFIG)).reason == "self_review"


def test_release_counts_only_when_configured(payload: Load) -> None:
    body = payload("github_release_published.json")
    assert skipped(normalize_github("release", body, CONFIG)).reason == "release_not_counted"
    releases = GitHubConfig(communities={"pycon": "pycon-us"}, releases=True)
    [out] = events_of(normalize_github("release", body, releases, DELIVERY))
    assert out["type"] == "package.released"
    assert out["member_id"] == "hugovk"
    assert out["attributes"] == {"package": "pycon-site", "version": "v2026.11.0"}
    assert out["occurred_at"] == "2025-11-23T18:00:00Z"


def test_member_id_can_be_the_numeric_user_id(payload: Load) -> None:
    by_id = GitHubConfig(communities={"pycon": "pycon-us"}, member_id="id")
    [out] = events_of(
        normalize_github("pull_request", payload("github_pull_request_opened.json"), by_id)
    )
    assert out["member_id"] == "583231"


def test_community_mapping_prefers_the_repository_over_the_owner(payload: Load) -> None:
    body = payload("github_issues_opened.json")
    config = GitHubConfig(communities={"pycon/pycon-site": "pycon-web", "pycon": "pycon-us"})
    assert events_of(normalize_github("issues", body, config))[0]["community"] == "pycon-web"
    fallback = GitHubConfig(communities={"*": "everything"})
    assert events_of(normalize_github("issues", body, fallback))[0]["community"] == "everything"
    unmapped = skipped(normalize_github("issues", body, GitHubConfig()))
    assert unmapped.reason == "unmapped_repository"
    assert unmapped.detail == "pycon/pycon-site"


def test_event_id_without_a_delivery_is_stable_per_object(payload: Load) -> None:
    body = payload("github_pull_request_closed_merged.json")
    [first] = events_of(normalize_github("pull_request", body, CONFIG))
    [again] = events_of(normalize_github("pull_request", body, CONFIG))
    assert first["event_id"] == again["event_id"] == "gh-117893490-pr-1347-merged"


def test_redelivery_gives_the_same_event_id_other_deliveries_differ(payload: Load) -> None:
    body = payload("github_issues_opened.json")
    ids = {
        events_of(normalize_github("issues", body, CONFIG, d))[0]["event_id"]
        for d in (DELIVERY, DELIVERY, "0b989ba4-242f-11e5-81e1-c7b1a4d2b0f3")
    }
    assert len(ids) == 2


@pytest.mark.parametrize(
    ("event", "action", "reason"),
    [
        ("push", None, "unsupported_event"),
        ("star", "created", "unsupported_event"),
        ("workflow_run", "completed", "unsupported_event"),
        ("pull_request", "synchronize", "ignored_action"),
        ("issues", "closed", "ignored_action"),
        ("issue_comment", "deleted", "ignored_action"),
        ("pull_request_review", "dismissed", "ignored_action"),
    ],
)
def test_irrelevant_events_and_actions_are_skipped_with_a_reason(
    payload: Load, event: str, action: str | None, reason: str
) -> None:
    body = payload("github_issues_opened.json")
    body["action"] = action
    out = skipped(normalize_github(event, body, CONFIG))
    assert out.reason == reason
    assert not out.malformed


def test_ping_is_skipped(payload: Load) -> None:
    assert skipped(normalize_github("ping", payload("github_ping.json"), CONFIG)).reason == "ping"


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "text",
        {"action": "opened"},
        {"action": "opened", "repository": "pycon/pycon-site"},
        {"action": "opened", "repository": {"full_name": "pycon/x"}, "pull_request": 3},
        {"action": "opened", "repository": {"full_name": "pycon/x"}, "pull_request": {}},
        {
            "action": "opened",
            "repository": {"full_name": "pycon/x"},
            "pull_request": {"user": {"login": "a"}, "created_at": "yesterday"},
        },
    ],
)
def test_broken_payloads_are_malformed_skips_never_exceptions(body: Any) -> None:
    out = skipped(normalize_github("pull_request", body, CONFIG))
    assert out.malformed


def test_stored_deliveries_unwrap_in_both_shapes(payload: Load) -> None:
    body = payload("github_issues_opened.json")
    ours = {"event": "issues", "delivery": DELIVERY, "payload": body}
    api = {"guid": DELIVERY, "event": "issues", "action": "opened", "request": {"payload": body}}
    assert unwrap_delivery(ours) == ("issues", body, DELIVERY)
    assert unwrap_delivery(api) == ("issues", body, DELIVERY)
    assert unwrap_delivery(body) is None
    assert unwrap_delivery([1]) is None


@pytest.mark.parametrize(
    ("fixture", "event"),
    [
        ("github_pull_request_opened.json", "pull_request"),
        ("github_pull_request_review_submitted.json", "pull_request_review"),
        ("github_issues_opened.json", "issues"),
        ("github_issue_comment_created.json", "issue_comment"),
        ("github_release_published.json", "release"),
        ("github_ping.json", "ping"),
    ],
)
def test_bare_payloads_are_recognised(payload: Load, fixture: str, event: str) -> None:
    assert guess_event(payload(fixture)) == event
