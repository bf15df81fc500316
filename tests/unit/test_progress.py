"""Progress lines: drawn on a terminal, absent elsewhere."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from agents.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_known_total_shows_count_bar_share_rate_and_eta() -> None:
    clock = Clock()
    progress = Progress("rebuild", 1000, unit="records", stream=io.StringIO(), clock=clock)
    clock.now += 10
    progress.advance(250)
    assert progress.line() == (
        "rebuild  250/1,000 records [#####...............]  25%  25/s  ETA 0:30"
    )


def test_an_unknown_total_shows_count_rate_and_elapsed_time() -> None:
    clock = Clock()
    progress = Progress("backtest", unit="lines", stream=io.StringIO(), clock=clock)
    clock.now += 75
    progress.advance(1500)
    assert progress.line() == "backtest  1,500 lines  20/s  1:15"


def test_a_terminal_gets_redrawn_lines_at_most_five_times_a_second_then_a_clear_one() -> None:
    clock = Clock()
    stream = io.StringIO()
    with Progress("publishing", 100, stream=stream, enabled=True, clock=clock) as progress:
        for _ in range(100):
            clock.now += 0.01
            progress.advance()
    text = stream.getvalue()
    # 1 s of work: a draw at the start, then one per 0.2 s.
    assert 4 <= text.count("\r") - 2 <= 6
    assert text.endswith("\r")
    assert text.split("\r")[-2].strip() == ""  # the line is blanked out


def test_nothing_is_written_when_the_stream_is_not_a_terminal() -> None:
    stream = io.StringIO()
    with Progress("publishing", 10, stream=stream) as progress:
        progress.advance(10)
    assert stream.getvalue() == ""


def test_a_real_terminal_is_detected() -> None:
    leader, follower = os.openpty()
    try:
        with (
            os.fdopen(follower, "w", closefd=False) as tty,
            Progress("publishing", 10, stream=tty) as progress,
        ):
            progress.advance(3)
        assert b"publishing  3/10" in os.read(leader, 4096)
    finally:
        os.close(leader)
        os.close(follower)


@pytest.mark.parametrize("terminal", [False, True])
def test_badges_backtest_draws_only_on_a_terminal(tmp_path: Path, terminal: bool) -> None:
    events = tmp_path / "events.jsonl"
    line = {
        "event_id": "e-{}",
        "type": "chat.message",
        "member_id": "m-1",
        "community": "pycon-us",
        "source": "discord",
        "occurred_at": "2026-11-30T10:00:00Z",
        "channel": "general",
    }
    events.write_bytes(
        b"".join(orjson.dumps({**line, "event_id": f"e-{i}"}) + b"\n" for i in range(3000))
    )
    argv = [sys.executable, "-m", "agents", "badges", "backtest", str(events)]
    env = {**os.environ, "PULSE_LOG_LEVEL": "WARNING"}
    if terminal:
        leader, follower = os.openpty()
        try:
            done = subprocess.run(
                argv, stdout=subprocess.PIPE, stderr=follower, env=env, timeout=120
            )
            os.close(follower)
            err = b""
            while True:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                err += chunk
        finally:
            os.close(leader)
        assert done.returncode == 0
        assert b"backtest  " in err
        assert b" lines  " in err
    else:
        done = subprocess.run(argv, capture_output=True, env=env, timeout=120)
        assert done.returncode == 0
        assert b"\r" not in done.stderr
    assert b"3000" in done.stdout or b"3,000" in done.stdout
