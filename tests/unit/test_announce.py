"""pulse announce: configuration, rendering, delivery decisions (pure parts)."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agents.announce.config import AnnounceConfigError, load
from agents.announce.deliver import Answer, classify, deliver
from agents.announce.render import BadMessage, Request, delivery_id, request
from streams.segments import change_id

ENV = {
    "DISCORD_URL": "https://discord.test/api/webhooks/1/secret-token",
    "SLACK_URL": "https://hooks.slack.test/services/T/B/xyz",
    "HOOK_URL": "https://bot.test/pulse",
    "HOOK_SECRET": "s3cret",
    "FORUM_KEY": "forum-api-key",
}
CONFIG = """
image_url = "https://pulse.test/c/{community}/badges/{badge}.svg"
max_attempts = 4

[[destination]]
name = "pycon-discord"
kind = "discord"
communities = ["pycon-us"]
events = ["awards"]
url_env = "DISCORD_URL"

[[destination]]
name = "slack"
kind = "slack"
url_env = "SLACK_URL"
awards_template = "{member_id} got *{badge_name}*{tier_suffix}"

[[destination]]
name = "forum"
kind = "discourse"
url = "https://discuss.test/"
topic_id = 42
api_username = "pulse-bot"
api_key_env = "FORUM_KEY"
events = ["segments"]

[[destination]]
name = "role-bot"
kind = "webhook"
url_env = "HOOK_URL"
secret_env = "HOOK_SECRET"
"""
AWARD = {
    "schema_version": 1,
    "award_id": "a" * 32,
    "community": "pycon-us",
    "member_id": "<@everyone> & <script>",
    "badge": "helper",
    "tier": "bronze",
    "awarded_at": "2026-12-01T10:00:00.000Z",
    "evidence": ["e-1"],
    "badge_name": "Helper",
    "description": "Answered questions",
}
AT = datetime(2026, 12, 1, 10, tzinfo=UTC)
CHANGE = {
    "schema_version": 1,
    "community": "pycon-us",
    "member_id": "m-1",
    "from": "beginner",
    "to": "intermediate",
    "changed_at": "2026-12-01T10:00:00.000Z",
    "score_30d": 25,
}


def config(tmp_path: Path, text: str = CONFIG, env: dict[str, str] | None = None) -> Any:
    path = tmp_path / "announce.toml"
    path.write_text(text)
    return load(str(path), ENV if env is None else env)


def test_destinations_and_what_they_want(tmp_path: Path) -> None:
    loaded = config(tmp_path)
    discord, slack, forum, hook = loaded.destinations
    assert (discord.wants("pycon-us", "awards"), discord.wants("pycon-us", "flags")) == (
        True,
        False,
    )
    assert not discord.wants("django", "awards")
    assert slack.wants("django", "flags")  # every community, every event
    assert forum.url.reveal() == "https://discuss.test"
    assert loaded.max_attempts == 4
    assert "secret-token" not in repr(discord)
    assert "s3cret" not in repr(hook)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('kind = "discord"', 'kind = "irc"'), "destination[0] (pycon-discord).kind: one of"),
        (('url_env = "DISCORD_URL"', 'url = "https://x.test"'), "must not be written in the file"),
        (('url_env = "DISCORD_URL"', 'url_env = "NOPE"'), "the variable 'NOPE' is not set"),
        (('secret_env = "HOOK_SECRET"', ""), "a webhook needs secret_env or secret_file"),
        (('events = ["awards"]', 'events = ["awards", "likes"]'), "events: unknown likes"),
        (("topic_id = 42", 'topic_id = "42"'), "topic_id: the topic's number"),
        (('name = "slack"', 'name = "pycon-discord"'), "destination names must be unique"),
        (("{badge_name}", "{password}"), "unknown field(s) password"),
        (('communities = ["pycon-us"]', 'communities = ["Py Con"]'), "is not a community"),
    ],
)
def test_a_bad_configuration_names_the_place(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    with pytest.raises(AnnounceConfigError) as caught:
        config(tmp_path, CONFIG.replace(*change, 1))
    assert message in str(caught.value)


def test_a_secret_file_is_read_and_trimmed(tmp_path: Path) -> None:
    secret = tmp_path / "hook.secret"
    secret.write_text("from-a-file\n")
    loaded = config(
        tmp_path, CONFIG.replace('secret_env = "HOOK_SECRET"', f'secret_file = "{secret}"')
    )
    assert loaded.destinations[3].secret.reveal() == "from-a-file"


def test_discord_never_mentions_and_shows_the_badge_image(tmp_path: Path) -> None:
    discord = config(tmp_path).destinations[0]
    sent = request(
        discord, "awards", AWARD, AWARD["award_id"], "https://pulse.test/{community}/{badge}.svg"
    )
    body = json.loads(sent.body)
    assert sent.url == ENV["DISCORD_URL"]
    assert body["content"] == "<@everyone> & <script> earned Helper (bronze) in pycon-us"
    assert body["allowed_mentions"] == {"parse": []}
    assert body["embeds"] == [{"image": {"url": "https://pulse.test/pycon-us/helper.svg"}}]


def test_slack_escapes_its_control_characters(tmp_path: Path) -> None:
    slack = config(tmp_path).destinations[1]
    body = json.loads(request(slack, "awards", AWARD, AWARD["award_id"]).body)
    assert body == {"text": "&lt;@everyone&gt; &amp; &lt;script&gt; got *Helper* (bronze)"}


def test_discourse_posts_into_the_topic_with_its_api_headers(tmp_path: Path) -> None:
    forum = config(tmp_path).destinations[2]
    sent = request(forum, "segments", CHANGE, "id")
    assert sent.url == "https://discuss.test/posts.json"
    assert sent.headers["Api-Key"] == "forum-api-key"
    assert sent.headers["Api-Username"] == "pulse-bot"
    assert json.loads(sent.body) == {
        "topic_id": 42,
        "raw": "m-1 is now intermediate in pycon-us (was beginner)",
    }


def test_the_webhook_is_signed_like_github_and_carries_the_delivery_id(tmp_path: Path) -> None:
    hook = config(tmp_path).destinations[3]
    sent = request(hook, "awards", AWARD, AWARD["award_id"])
    expected = hmac.new(b"s3cret", sent.body, hashlib.sha256).hexdigest()
    assert sent.headers["X-Pulse-Signature-256"] == f"sha256={expected}"
    assert sent.headers["X-Pulse-Delivery"] == AWARD["award_id"]
    assert json.loads(sent.body)["message"] == AWARD


def test_delivery_ids() -> None:
    assert delivery_id("awards", AWARD) == AWARD["award_id"]
    assert delivery_id("segments", CHANGE) == change_id(
        "pycon-us", "m-1", "beginner", "intermediate", int(AT.timestamp() * 1000)
    )
    with pytest.raises(BadMessage):
        delivery_id("flags", {"community": "pycon-us"})


class Headers(dict[str, str]):
    pass


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        (204, {}, b"", Answer(True, None, "ok")),
        (429, {"Retry-After": "7"}, b"", Answer(False, 7.0, "rate_limited")),
        (429, {}, b'{"message": "You are being rate limited.", "retry_after": 0.25}',
         Answer(False, 0.25, "rate_limited")),
        (429, {"Retry-After": "3600"}, b"", Answer(False, 60.0, "rate_limited")),
        (429, {}, b"", Answer(False, 2.0, "rate_limited")),  # attempt 3: the backoff
        (503, {}, b"", Answer(False, 2.0, "http_503")),
        (404, {}, b"", Answer(False, None, "http_404")),
        (401, {}, b"", Answer(False, None, "http_401")),
    ],
)  # fmt: skip
def test_answers(status: int, headers: dict[str, str], body: bytes, expected: Answer) -> None:
    assert classify(status, Headers(headers), body, attempt=3) == expected


def test_retries_then_gives_up_with_the_last_reason() -> None:
    waits: list[float] = []
    retried: list[str] = []
    answers = iter([Answer(False, 1.0, "http_502"), Answer(False, 2.0, "timeout")] * 3)
    got = deliver(
        Request("u", b"", {}), 4, 1.0, retried.append, waits.append,
        lambda _r, _t, _a: next(answers),
    )  # fmt: skip
    assert got == Answer(False, None, "retries_exhausted: timeout")
    assert waits == [1.0, 2.0, 1.0]
    assert retried == ["http_502", "timeout", "http_502"]


def test_a_permanent_refusal_is_not_retried() -> None:
    calls: list[int] = []

    def send(_r: Request, _t: float, attempt: int) -> Answer:
        calls.append(attempt)
        return Answer(False, None, "http_400")

    assert deliver(Request("u", b"", {}), 5, 1.0, send=send).reason == "http_400"
    assert calls == [1]
