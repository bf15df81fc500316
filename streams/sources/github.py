"""GitHub webhook payloads to activity events.

Handled (event header ``X-GitHub-Event`` . ``action``):

- ``pull_request.opened`` -> ``github.pr_opened`` (the pull request's author)
- ``pull_request.closed`` with ``pull_request.merged`` -> ``github.pr_merged``, credited
  to the pull request's author, not to whoever pressed the button; closed without a
  merge is skipped (``pr_closed_unmerged``)
- ``pull_request_review.submitted`` -> ``github.review_submitted`` (the reviewer; a
  review of one's own pull request is skipped)
- ``issues.opened`` -> ``github.issue_opened``
- ``issue_comment.created`` -> ``github.comment`` (comments on issues and pull requests)
- ``release.published`` -> ``package.released``, only when releases are configured to
  count as package releases

The community comes from a mapping of ``owner/repo`` or ``owner`` (or ``*``) to a
community. The member is the acting user's login, or the numeric user id when so
configured. The event id is ``gh-<delivery id>-<action>``: GitHub keeps the delivery id
when it redelivers, so a redelivery is counted once. Without a delivery id (payloads
exported from elsewhere) the id is made from the repository id and the object's own id.
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
    event_id,
    guarded,
    lookup,
    obj,
    text,
    timestamp,
)

SOURCE: Final = "github"
# GitHub replaces a deleted account with this placeholder user.
GHOST_LOGIN: Final = "ghost"
MEMBER_ID_MODES: Final = ("login", "id")

# event -> action -> activity type
_HANDLED: Final[dict[str, dict[str, str]]] = {
    "pull_request": {"opened": "github.pr_opened", "closed": "github.pr_merged"},
    "pull_request_review": {"submitted": "github.review_submitted"},
    "issues": {"opened": "github.issue_opened"},
    "issue_comment": {"created": "github.comment"},
    "release": {"published": "package.released"},
}


@dataclass(frozen=True)
class GitHubConfig:
    """How GitHub payloads map onto communities and members."""

    communities: Mapping[str, str] = field(default_factory=dict)
    member_id: str = "login"
    releases: bool = False
    source: str = SOURCE


def _actor(user: dict[str, Any] | None, config: GitHubConfig) -> str | Skipped:
    if user is None:
        return Skipped("no_actor", "the payload names no user", True)
    login = text(user, "login")
    if login is None:
        return Skipped("no_actor", "the user has no login", True)
    if user.get("type") == "Bot" or login.endswith("[bot]"):
        return Skipped("bot", login[:64])
    if login == GHOST_LOGIN:
        return Skipped("deleted_user", "the account was deleted (shown as ghost)")
    if config.member_id == "id":
        user_id = text(user, "id")
        if user_id is None:
            return Skipped("no_actor", "the user has no id", True)
        return user_id
    return login


@guarded
def normalize_github(
    event: str, payload: object, config: GitHubConfig, delivery: str | None = None
) -> Outcome:
    """One webhook delivery (its ``X-GitHub-Event``, body and ``X-GitHub-Delivery``)."""
    if event == "ping":
        return Skipped("ping", "webhook ping")
    actions = _HANDLED.get(event)
    if actions is None:
        return Skipped("unsupported_event", event[:64])
    if not isinstance(payload, dict):
        return Skipped("not_an_object", "the payload is not a JSON object", True)
    action = text(payload, "action")
    kind = actions.get(action or "")
    if action is None or kind is None:
        return Skipped("ignored_action", f"{event}.{(action or '?')[:32]}")

    repo = obj(payload, "repository")
    full_name = text(repo, "full_name")
    if repo is None or full_name is None:
        return Skipped("no_repository", "the payload names no repository", True)
    owner = text(repo, "owner", "login") or full_name.partition("/")[0]
    community = lookup(config.communities, full_name, owner)
    if community is None:
        return Skipped("unmapped_repository", full_name[:128])

    sender = obj(payload, "sender")
    pr = obj(payload, "pull_request")
    attributes: dict[str, Any] = {}
    when: object = None
    key: tuple[str, ...]
    if event == "pull_request":
        if pr is None:
            return Skipped("no_pull_request", "pull_request is missing", True)
        number = text(pr, "number") or text(payload, "number") or "?"
        attributes["thread_id"] = f"{full_name}#{number}"
        user = obj(pr, "user") or sender
        if action == "closed":
            if pr.get("merged") is not True:
                return Skipped("pr_closed_unmerged", f"{full_name}#{number}")
            when = pr.get("merged_at") or pr.get("closed_at")
            key = ("pr", number, "merged")
        else:
            when = pr.get("created_at")
            key = ("pr", number, "opened")
    elif event == "pull_request_review":
        review = obj(payload, "review")
        if review is None or pr is None:
            return Skipped("no_review", "review or pull_request is missing", True)
        number = text(pr, "number") or "?"
        user = obj(review, "user") or sender
        author = text(pr, "user", "login")
        if author is not None and author == text(user, "login"):
            return Skipped("self_review", f"{full_name}#{number}")
        when = review.get("submitted_at")
        attributes["thread_id"] = f"{full_name}#{number}"
        state = text(review, "state")
        attributes["state"] = state.lower() if state else None
        key = ("review", text(review, "id") or "?")
    elif event == "issues":
        issue = obj(payload, "issue")
        if issue is None:
            return Skipped("no_issue", "issue is missing", True)
        number = text(issue, "number") or "?"
        user = obj(issue, "user") or sender
        when = issue.get("created_at")
        attributes["thread_id"] = f"{full_name}#{number}"
        key = ("issue", number, "opened")
    elif event == "issue_comment":
        comment = obj(payload, "comment")
        if comment is None:
            return Skipped("no_comment", "comment is missing", True)
        user = obj(comment, "user") or sender
        when = comment.get("created_at")
        issue_number = text(payload, "issue", "number")
        if issue_number is not None:
            attributes["thread_id"] = f"{full_name}#{issue_number}"
        key = ("comment", text(comment, "id") or "?")
    else:  # release
        if not config.releases:
            return Skipped("release_not_counted", "releases are not configured as packages")
        release = obj(payload, "release")
        if release is None:
            return Skipped("no_release", "release is missing", True)
        user = obj(release, "author") or sender
        when = release.get("published_at") or release.get("created_at")
        tag = text(release, "tag_name")
        attributes["package"] = text(repo, "name")
        attributes["version"] = tag[:64] if tag else None
        if release.get("prerelease") is True:
            attributes["prerelease"] = True
        key = ("release", text(release, "id") or tag or "?")

    member = _actor(user, config)
    if isinstance(member, Skipped):
        return member
    occurred_at = timestamp(when)
    if occurred_at is None:
        return Skipped("no_timestamp", f"{event}.{action} has no usable time", True)
    if delivery:
        eid = event_id("gh", delivery, action)
    else:
        eid = event_id("gh", text(repo, "id") or full_name, *key)
    return Normalized(
        (
            activity(
                event_id=eid,
                type=kind,
                member_id=member,
                community=community,
                source=config.source,
                channel=full_name,
                occurred_at=occurred_at,
                attributes=attributes,
            ),
        )
    )


def unwrap_delivery(record: object) -> tuple[str, object, str | None] | None:
    """(event, payload, delivery id) from a stored delivery, or None if it is not one.

    Two shapes are read: ``{"event", "delivery", "payload"}`` (what ``pulse ingest
    github`` documents) and GitHub's own delivery record from the hook deliveries API
    (``{"guid", "event", "request": {"payload": ...}}``).
    """
    if not isinstance(record, dict):
        return None
    event = text(record, "event")
    if event is None:
        return None
    if "payload" in record:
        return event, record["payload"], text(record, "delivery") or text(record, "guid")
    request = obj(record, "request")
    if request is not None and "payload" in request:
        return event, request["payload"], text(record, "guid")
    return None


def guess_event(payload: object) -> str | None:
    """The ``X-GitHub-Event`` a bare payload was sent with, judged by its objects.

    For files of payloads saved without their headers; a delivery with its event name
    is always preferred.
    """
    if not isinstance(payload, dict):
        return None
    if "zen" in payload and "hook_id" in payload:
        return "ping"
    if "review" in payload and "pull_request" in payload:
        return "pull_request_review"
    if "comment" in payload and "pull_request" in payload:
        return "pull_request_review_comment"
    if "pull_request" in payload:
        return "pull_request"
    if "comment" in payload and "issue" in payload:
        return "issue_comment"
    if "issue" in payload:
        return "issues"
    if "release" in payload:
        return "release"
    return None
