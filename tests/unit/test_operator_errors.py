"""Operator mistakes get one clear line: an unknown PULSE_* variable, a busy port."""

from __future__ import annotations

import socket

import pytest

from agents.cli import CliError, ensure_port_free, main
from agents.settings import ConfigError, check_variable_names


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("PULSE_REDIS_ULR", "PULSE_REDIS_URL"),
        ("PULSE_KAFKA_BOOTSTRAP_SERVER", "PULSE_KAFKA_BOOTSTRAP_SERVERS"),
        ("PULSE_WEBPORT", "PULSE_WEB_PORT"),
    ],
)
def test_an_unknown_variable_is_refused_with_the_closest_name(name: str, hint: str) -> None:
    with pytest.raises(ConfigError, match=f"unknown variable {name} \\(did you mean {hint}\\?\\)"):
        check_variable_names({name: "x"})


def test_known_and_script_variables_pass() -> None:
    check_variable_names(
        {
            "PULSE_REDIS_URL": "redis://",
            "PULSE_LOCAL_DIR": "/srv/pulse",
            "PULSE_FAUST_BROKER_SESSION_TIMEOUT": "10",
            "PATH": "/bin",
        }
    )


def test_the_cli_says_it_in_one_line_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PULSE_TOPIC_ACTIVTY", "x")
    assert main(["badges"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "pulse: configuration error: unknown variable PULSE_TOPIC_ACTIVTY "
        "(did you mean PULSE_TOPIC_ACTIVITY?)\n"
    )


def test_a_busy_port_is_one_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CliError, match=f"cannot listen on 127.0.0.1:{port}.*PULSE_WEB_PORT"):
            ensure_port_free("127.0.0.1", port, "PULSE_WEB_PORT")
    ensure_port_free("127.0.0.1", port, "PULSE_WEB_PORT")  # free again


def test_a_community_counters_exist_at_0_before_its_first_event() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from agents.metrics import PulseMetrics

    metrics = PulseMetrics(CollectorRegistry())
    assert metrics.initialise_community("pycon-us", ["chat.message", "forum.post"])
    assert not metrics.initialise_community("pycon-us", ["chat.message"])
    text = generate_latest(metrics.registry).decode()
    for series in (
        'pulse_community_events_total{community="pycon-us",type="chat.message"} 0.0',
        'pulse_community_events_total{community="pycon-us",type="forum.post"} 0.0',
        'pulse_community_events_duplicate_total{community="pycon-us"} 0.0',
        'pulse_community_events_late_total{community="pycon-us"} 0.0',
        'pulse_community_events_moderated_total{community="pycon-us"} 0.0',
    ):
        assert series in text
