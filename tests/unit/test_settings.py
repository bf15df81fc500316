"""Configuration from PULSE_* variables: types, validation, precedence, masked secrets."""

from __future__ import annotations

import json

import pytest

from agents.settings import ENV, MASK, ConfigError, Secret, Settings


def test_defaults_are_loopback_and_published_topics() -> None:
    s = Settings.from_env({})
    assert s.kafka_bootstrap_servers == ("127.0.0.1:9092",)
    assert s.web_bind == "127.0.0.1"
    assert s.activity_topics == ("pulse.activity",)
    assert s.dlq_topic == "pulse.activity.dlq"


def test_environment_values_are_parsed_and_typed() -> None:
    s = Settings.from_env(
        {
            "PULSE_KAFKA_BOOTSTRAP_SERVERS": "k1:9092, k2:9093",
            "PULSE_TOPIC_ACTIVITY": "a.one,a.two",
            "PULSE_WEB_PORT": "7000",
            "PULSE_LOG_LEVEL": "debug",
            "PULSE_POINTS": "chat.message=3",
            "PULSE_RETENTION_DAY_DAYS": "40",
            "PULSE_DEDUPE_TTL_DAYS": "2",
        }
    )
    assert s.kafka_bootstrap_servers == ("k1:9092", "k2:9093")
    assert s.activity_topics == ("a.one", "a.two")
    assert s.web_port == 7000
    assert s.log_level == "DEBUG"
    assert s.points["chat.message"] == 3
    assert s.retention.day_seconds == 40 * 86400
    assert s.retention.dedupe_seconds == 2 * 86400


def test_explicit_arguments_beat_the_environment() -> None:
    s = Settings.from_env({"PULSE_WEB_PORT": "7000"}, web_port=7100)
    assert s.web_port == 7100


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PULSE_WEB_PORT": "http"}, "PULSE_WEB_PORT must be an integer"),
        ({"PULSE_WEB_PORT": "70000"}, "PULSE_WEB_PORT must be between"),
        ({"PULSE_KAFKA_BOOTSTRAP_SERVERS": "nohostport"}, "is not host:port"),
        ({"PULSE_KAFKA_SECURITY_PROTOCOL": "TLS"}, "PULSE_KAFKA_SECURITY_PROTOCOL must be"),
        ({"PULSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "PULSE_KAFKA_SASL_MECHANISM must be"),
        (
            {"PULSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "PULSE_KAFKA_SASL_MECHANISM": "PLAIN"},
            "PULSE_KAFKA_SASL_USERNAME and PULSE_KAFKA_SASL_PASSWORD are required",
        ),
        ({"PULSE_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "no such file"),
        ({"PULSE_REDIS_URL": "http://x"}, "PULSE_REDIS_URL must start with"),
        ({"PULSE_REDIS_URL": "redis://:pw@host:abc/0"}, "PULSE_REDIS_URL has a port"),
        ({"PULSE_REDIS_URL": "redis:///0"}, "PULSE_REDIS_URL must name a host"),
        ({"PULSE_SHUTDOWN_WAIT_FOR_BATCHES": "maybe"}, "PULSE_SHUTDOWN_WAIT_FOR_BATCHES must be"),
        ({"PULSE_REDIS_KEY_PREFIX": "a{b}"}, "PULSE_REDIS_KEY_PREFIX"),
        ({"PULSE_TOPIC_ACTIVITY": "bad topic"}, "not a valid Kafka topic"),
        ({"PULSE_TOPIC_DLQ": "pulse.activity"}, "PULSE_TOPIC_DLQ must differ"),
        ({"PULSE_TOPIC_AWARDS": "pulse.activity.dlq"}, "check the PULSE_TOPIC_"),
        ({"PULSE_LOG_LEVEL": "LOUD"}, "PULSE_LOG_LEVEL must be one of"),
        ({"PULSE_POINTS": "chat.message=x"}, "PULSE_POINTS"),
        ({"PULSE_BATCH_WITHIN_SECONDS": "0"}, "PULSE_BATCH_WITHIN_SECONDS"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_secrets_never_show_in_public_config_or_repr() -> None:
    s = Settings.from_env(
        {
            "PULSE_REDIS_URL": "rediss://user:hunter2@redis.example:6380/1",
            "PULSE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "PULSE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "PULSE_KAFKA_SASL_USERNAME": "svc",
            "PULSE_KAFKA_SASL_PASSWORD": "s3cr3t-pw",
        }
    )
    text = json.dumps(s.public()) + repr(s) + str(s)
    assert "hunter2" not in text
    assert "s3cr3t-pw" not in text
    assert s.public()["redis"]["url"] == f"rediss://user:{MASK}@redis.example:6380/1"
    assert s.public()["kafka"]["sasl_password"] == MASK
    assert s.redis_url.reveal().endswith("hunter2@redis.example:6380/1")


def test_public_config_lists_scoring_windows_and_retention() -> None:
    public = Settings.from_env({}).public()
    assert public["scoring"]["points"]["github.pr_merged"] == 15
    assert public["windows"]["1h"] == {
        "seconds": 3600,
        "granularity_seconds": 60,
        "buckets": 60,
        "bucket_keys": "win:min",
    }
    # The daily buckets are the day leaderboards, so those must outlive the 30d window.
    assert public["windows"]["30d"]["bucket_keys"] == "lb:day"
    with pytest.raises(ConfigError, match="PULSE_RETENTION_DAY_DAYS must be between 30"):
        Settings.from_env({"PULSE_RETENTION_DAY_DAYS": "29"})
    assert Settings.from_env({"PULSE_RETENTION_DAY_DAYS": "30"}).retention.day_seconds == 30 * 86400
    assert public["retention"]["event_id_memory_seconds"] == 7 * 86400


def test_secret_type_masks_itself() -> None:
    secret = Secret("pw")
    assert str(secret) == MASK
    assert "pw" not in repr(secret)
    assert secret.reveal() == "pw"


def test_every_variable_has_the_documented_prefix() -> None:
    assert all(name.startswith("PULSE_") for name in ENV.values())
