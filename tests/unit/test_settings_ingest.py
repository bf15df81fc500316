"""Settings of the webhook ingest and the normalizers: parsing, validation, masking."""

from __future__ import annotations

import json

import pytest

from agents.settings import ENV, MASK, ConfigError, Secret, Settings


def test_defaults_listen_on_loopback_and_accept_no_unsigned_webhook() -> None:
    s = Settings.from_env({})
    assert (s.ingest_bind, s.ingest_port) == ("127.0.0.1", 6067)
    assert s.ingest_max_body_bytes == 1_048_576
    assert not s.github_webhook_secret
    assert not s.discourse_webhook_secret
    assert s.github_member_id == "login"
    assert s.github_releases is False
    assert s.ingest_topic("github") == "pulse.activity"


def test_values_are_parsed() -> None:
    s = Settings.from_env(
        {
            "PULSE_TOPIC_ACTIVITY": "pulse.activity,pulse.activity.github",
            "PULSE_INGEST_TOPICS": "github=pulse.activity.github, discord=pulse.activity",
            "PULSE_INGEST_PORT": "7070",
            "PULSE_INGEST_BIND": "10.0.0.5",
            "PULSE_INGEST_MAX_BODY_BYTES": "65536",
            "PULSE_GITHUB_COMMUNITIES": "Python/CPython=cpython, pycon=pycon-us, *=python",
            "PULSE_GITHUB_MEMBER_ID": "ID",
            "PULSE_GITHUB_RELEASES": "yes",
            "PULSE_DISCORD_COMMUNITIES": "267624335836053506=python-discord",
            "PULSE_DISCORD_CHANNELS": "267624335836053506=general,470884583684964352=help",
            "PULSE_DISCOURSE_COMMUNITIES": "Discuss.Python.org=python-discuss",
        }
    )
    assert s.ingest_topic("github") == "pulse.activity.github"
    assert s.ingest_topic("discourse") == "pulse.activity"
    assert (s.ingest_bind, s.ingest_port, s.ingest_max_body_bytes) == ("10.0.0.5", 7070, 65536)
    assert s.github_communities == {"python/cpython": "cpython", "pycon": "pycon-us", "*": "python"}
    assert s.github_member_id == "id"
    assert s.github_releases is True
    assert s.discord_communities == {"267624335836053506": "python-discord"}
    assert s.discord_channels["470884583684964352"] == "help"
    assert s.discourse_communities == {"discuss.python.org": "python-discuss"}


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PULSE_GITHUB_COMMUNITIES", "pycon", "is not key=value"),
        ("PULSE_GITHUB_COMMUNITIES", "pycon=PyCon US", "is not a community name"),
        ("PULSE_DISCOURSE_COMMUNITIES", "=forum", "is not key=value"),
        ("PULSE_DISCORD_CHANNELS", "1=bad\tname", "is not a channel name"),
        ("PULSE_INGEST_TOPICS", "github=no spaces", "is not a valid Kafka topic name"),
        ("PULSE_INGEST_TOPICS", "gitlab=pulse.gitlab", "unknown platform 'gitlab'"),
        ("PULSE_INGEST_TOPICS", "github=pulse.activity.dlq", "must not publish to the DLQ"),
        ("PULSE_GITHUB_MEMBER_ID", "email", "must be login or id"),
        ("PULSE_GITHUB_RELEASES", "maybe", "must be true or false"),
        ("PULSE_INGEST_PORT", "0", "between 1 and 65535"),
        ("PULSE_INGEST_MAX_BODY_BYTES", "10", "between 1024 and"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({name: value})
    assert name in str(raised.value)
    assert message in str(raised.value)


def test_webhook_secrets_are_masked_everywhere() -> None:
    s = Settings.from_env(
        {"PULSE_GITHUB_WEBHOOK_SECRET": "gh-s3cret", "PULSE_DISCOURSE_WEBHOOK_SECRET": "dsc-s3cret"}
    )
    assert s.github_webhook_secret == Secret("gh-s3cret")
    assert s.github_webhook_secret.reveal() == "gh-s3cret"
    public = s.public()
    text = json.dumps(public) + repr(s) + str(s)
    assert "s3cret" not in text
    assert public["ingest"]["github"]["webhook_secret"] == MASK
    assert public["ingest"]["discourse"]["webhook_secret"] == MASK
    assert Settings.from_env({}).public()["ingest"]["github"]["webhook_secret"] is None


def test_every_new_variable_is_listed_in_env() -> None:
    for name in (
        "PULSE_GITHUB_WEBHOOK_SECRET",
        "PULSE_DISCOURSE_WEBHOOK_SECRET",
        "PULSE_INGEST_BIND",
        "PULSE_INGEST_PORT",
        "PULSE_INGEST_MAX_BODY_BYTES",
        "PULSE_INGEST_TOPICS",
        "PULSE_GITHUB_COMMUNITIES",
        "PULSE_GITHUB_MEMBER_ID",
        "PULSE_GITHUB_RELEASES",
        "PULSE_DISCORD_COMMUNITIES",
        "PULSE_DISCORD_CHANNELS",
        "PULSE_DISCOURSE_COMMUNITIES",
    ):
        assert name in ENV.values()
