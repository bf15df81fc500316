"""The pulse command without servers: help, config, validation and clear errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.cli import main


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("PULSE_"):
            monkeypatch.delenv(name)


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for command in (
        "worker",
        "produce",
        "validate",
        "generate",
        "config",
        "topics",
        "leaderboard",
        "member",
        "around",
        "counts",
    ):
        assert f"    {command}" in out
    assert "PULSE_" in out


def test_config_json_prints_effective_values_with_secrets_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PULSE_REDIS_URL", "redis://:topsecret@127.0.0.1:6379/0")
    monkeypatch.setenv("PULSE_POINTS", "chat.message=4")
    assert main(["config", "--json"]) == 0
    out = capsys.readouterr().out
    assert "topsecret" not in out
    config = json.loads(out)
    assert config["scoring"]["points"]["chat.message"] == 4
    assert config["topics"]["activity"] == ["pulse.activity"]
    assert set(config["windows"]) == {"1h", "24h", "7d", "30d"}


def test_configuration_errors_exit_2_with_the_variable_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PULSE_WEB_PORT", "eighty")
    assert main(["config"]) == 2
    assert "PULSE_WEB_PORT must be an integer" in capsys.readouterr().err


def write_lines(path: Path, lines: list[Any]) -> str:
    path.write_bytes(
        b"".join(
            (line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines
        )
    )
    return str(path)


def test_validate_reports_every_bad_line_and_exits_3(
    tmp_path: Path,
    make_event: Callable[..., dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = "2026-01-01T00:00:00Z"
    path = write_lines(
        tmp_path / "in.jsonl",
        [
            make_event(occurred_at=now),
            b"{not json",
            make_event(type="chat.shout", occurred_at=now),
            b"",
            make_event(member_id=..., occurred_at=now),
            # Valid JSON, but over PULSE_MAX_MESSAGE_BYTES: the worker would dead-letter it.
            make_event(occurred_at=now, attributes={"note": "x" * 70_000}),
        ],
    )
    assert main(["validate", path]) == 3
    captured = capsys.readouterr()
    assert f"{path}:2: invalid_json" in captured.err
    assert f"{path}:3: unknown_type [type]" in captured.err
    assert f"{path}:5: missing_field [member_id]" in captured.err
    assert f"{path}:6: oversized" in captured.err
    assert "1 valid, 4 invalid" in captured.out


def test_validate_accepts_a_clean_file(
    tmp_path: Path,
    make_event: Callable[..., dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_lines(
        tmp_path / "ok.jsonl",
        [make_event(event_id=str(i), occurred_at="2026-01-01T00:00:00Z") for i in range(3)],
    )
    assert main(["validate", path]) == 0
    assert "3 valid, 0 invalid" in capsys.readouterr().out


def test_badges_backtest_awards_from_valid_lines_and_skips_what_the_worker_would_reject(
    tmp_path: Path,
    make_event: Callable[..., dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = "2026-01-01T00:00:00Z"
    merge = {"type": "github.pr_merged", "source": "github", "channel": ..., "occurred_at": now}
    path = write_lines(
        tmp_path / "history.jsonl",
        [
            make_event(event_id="m1", **merge),
            make_event(event_id="m2", **merge),  # a second merge: first-merge only once
            make_event(event_id="m3", member_id="bob", **merge),
            b"{not json",
            # Valid JSON over PULSE_MAX_MESSAGE_BYTES: the worker dead-letters it.
            make_event(
                event_id="big", member_id="carol", attributes={"note": "x" * 70_000}, **merge
            ),
        ],
    )
    assert main(["badges", "backtest", path, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["events"], report["invalid"]) == (3, 2)
    first_merges = sorted(
        (a["member_id"], a["evidence"]) for a in report["list"] if a["badge"] == "first-merge"
    )
    assert first_merges == [("alice", ["m1"]), ("bob", ["m3"])]


def test_produce_refuses_a_file_with_bad_lines_before_touching_kafka(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A broker address nothing listens on: the refusal must come before any connection.
    monkeypatch.setenv("PULSE_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    path = write_lines(tmp_path / "bad.jsonl", [b"[]"])
    assert main(["produce", path]) == 3
    assert "nothing published" in capsys.readouterr().err


def test_missing_file_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "/nonexistent/file.jsonl"]) == 2
    assert "cannot read /nonexistent/file.jsonl" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["leaderboard", "--community", "PyCon", "--period", "week"], "community must be"),
        (
            ["leaderboard", "--community", "pycon", "--period", "week", "--top", "0"],
            "top must be between 1 and 1000",
        ),
        (
            ["leaderboard", "--community", "pycon", "--period", "day", "--at", "tomorrow"],
            "at must be YYYY-MM-DD",
        ),
        (["member", "a\nb", "--community", "pycon"], "member id must be"),
        (
            ["around", "alice", "--community", "pycon", "--period", "all", "--n", "x"],
            "--n must be an integer",
        ),
    ],
)
def test_bad_query_parameters_exit_2_before_any_redis_call(
    argv: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PULSE_REDIS_URL", "redis://127.0.0.1:1/0")
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_unreachable_redis_is_a_clear_service_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PULSE_REDIS_URL", "redis://:pw@127.0.0.1:1/0")
    assert main(["leaderboard", "--community", "pycon", "--period", "week"]) == 1
    err = capsys.readouterr().err
    assert "Redis at redis://:**********@127.0.0.1:1/0" in err
    assert "pw@" not in err


def test_generate_is_deterministic_and_valid(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    assert main(["generate", "--count", "50", "--seed", "3"]) == 0
    first = capsysbinary.readouterr().out
    assert main(["generate", "--count", "50", "--seed", "3"]) == 0
    second = capsysbinary.readouterr().out
    ids = [orjson.loads(line)["event_id"] for line in first.splitlines()]
    assert ids == [orjson.loads(line)["event_id"] for line in second.splitlines()]
    assert len(set(ids)) == 50
    path = tmp_path / "gen.jsonl"
    path.write_bytes(first)
    assert main(["validate", str(path)]) == 0
    assert b"50 valid, 0 invalid" in capsysbinary.readouterr().out


def test_the_worker_keeps_the_garbage_collector_off_the_hot_path() -> None:
    import gc

    from agents.cli import tune_gc

    threshold = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (50_000, 20, 100)
        # What start-up allocated is frozen: never scanned again.
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_the_worker_leaves_the_root_logger_at_the_configured_level() -> None:
    # Faust's terminal spinner would set it to DEBUG at WARNING and above: every debug
    # call of the Kafka client would then build a record nobody prints.
    import logging

    import faust

    from agents.cli import service_worker

    worker = service_worker(faust.App("test-spinner", autodiscover=False), "WARNING")
    root = logging.Logger("root-under-test", logging.WARNING)
    root.addHandler(logging.StreamHandler())
    worker.on_setup_root_logger(root, logging.WARNING)
    assert root.level == logging.WARNING
    assert len(root.handlers) == 1
