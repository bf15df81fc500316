"""Leaderboards, windows and member views on the real stack, against a straightforward
recomputation over the same events; a full replay changes nothing; CLI equals HTTP."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.error import HTTPError
from urllib.request import urlopen

import pytest

from streams.scoring import DEFAULT_POINTS
from streams.simulation import generate
from tests.integration.conftest import Sandbox, Worker, metric_value, wait_for

COMMUNITIES = ("pycon-us", "python-discord", "django-forum")
COUNT = 3000


def when(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00"))


def label(period: str, moment: datetime) -> str:
    """The period label, computed directly from the calendar (independent of the core)."""
    if period == "day":
        return moment.strftime("%Y-%m-%d")
    if period == "week":
        year, week, _ = moment.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return moment.strftime("%Y-%m")
    return "all"


def expected_board(
    events: list[dict[str, Any]],
    community: str,
    period: str,
    at: datetime,
    channel: str | None = None,
) -> list[dict[str, Any]]:
    scores: dict[str, int] = defaultdict(int)
    for e in events:
        if e["community"] != community or label(period, when(e)) != label(period, at):
            continue
        if channel is not None and e.get("channel") != channel:
            continue
        scores[e["member_id"]] += DEFAULT_POINTS[e["type"]]
    ordered = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return [{"rank": i + 1, "member_id": m, "score": s} for i, (m, s) in enumerate(ordered)]


def expected_member(
    events: list[dict[str, Any]], community: str, member: str, at: float
) -> dict[str, Any]:
    mine = [e for e in events if e["community"] == community and e["member_id"] == member]
    windows = {}
    for name, seconds, granularity in (
        ("1h", 3600, 60),
        ("24h", 86400, 3600),
        ("7d", 7 * 86400, 3600),
        ("30d", 30 * 86400, 86400),
    ):
        last = int(at // granularity)
        first = last - seconds // granularity + 1
        windows[name] = sum(
            DEFAULT_POINTS[e["type"]]
            for e in mine
            if first <= int(when(e).timestamp() // granularity) <= last
        )
    by_type: dict[str, int] = defaultdict(int)
    for e in mine:
        by_type[e["type"]] += 1
    stamps = sorted(when(e).timestamp() for e in mine)
    return {
        "windows": windows,
        "totals": {
            "points": sum(DEFAULT_POINTS[e["type"]] for e in mine),
            "events": len(mine),
            "by_type": dict(sorted(by_type.items())),
        },
        "first_seen_ms": int(stamps[0] * 1000),
        "last_seen_ms": int(stamps[-1] * 1000),
        "active_days": len({when(e).date() for e in mine}),
    }


def http_json(url: str) -> tuple[int, Any]:
    try:
        with urlopen(url, timeout=10) as response:  # noqa: S310 - loopback test server
            return response.status, json.loads(response.read())
    except HTTPError as exc:
        return exc.code, json.loads(exc.read())


def check_everything(sandbox: Sandbox, events: list[dict[str, Any]], at: float) -> None:
    at_dt = datetime.fromtimestamp(at, tz=UTC)
    stamp = at_dt.isoformat().replace("+00:00", "Z")
    for community in COMMUNITIES:
        for period in ("day", "week", "month", "all"):
            status, body = http_json(
                f"{sandbox.base_url}/api/v1/communities/{community}/"
                f"leaderboards/{period}?top=1000&at={stamp}"
            )
            assert status == 200
            assert body["bucket"] == label(period, at_dt)
            assert body["entries"] == expected_board(events, community, period, at_dt), (
                community,
                period,
            )
        for channel in ("general", "q-and-a", "core"):
            for period in ("week", "all"):
                _, body = http_json(
                    f"{sandbox.base_url}/api/v1/communities/{community}/"
                    f"leaderboards/{period}?top=1000&at={stamp}&channel={channel}"
                )
                assert body["entries"] == expected_board(events, community, period, at_dt, channel)
        members = sorted({e["member_id"] for e in events if e["community"] == community})
        for member in members:
            status, body = http_json(
                f"{sandbox.base_url}/api/v1/communities/{community}/members/{member}?at={stamp}"
            )
            assert status == 200
            want = expected_member(events, community, member, at)
            assert body["windows"] == want["windows"], member
            assert body["totals"] == want["totals"], member
            assert body["active_days"] == want["active_days"]
            seen = datetime.fromisoformat(body["first_seen"].replace("Z", "+00:00"))
            assert int(seen.timestamp() * 1000) == want["first_seen_ms"]
            seen = datetime.fromisoformat(body["last_seen"].replace("Z", "+00:00"))
            assert int(seen.timestamp() * 1000) == want["last_seen_ms"]
            for period in ("day", "week", "month", "all"):
                board = expected_board(events, community, period, at_dt)
                rank = next((r["rank"] for r in board if r["member_id"] == member), None)
                assert body["ranks"][period] == rank, (member, period)


@pytest.fixture
def loaded(
    sandbox: Sandbox, start_worker: Callable[[], Worker]
) -> tuple[list[dict[str, Any]], float]:
    start_worker()
    now = time.time()
    events = list(
        generate(
            COUNT, now=now, seed=11, span_seconds=40 * 86400, communities=COMMUNITIES, members=120
        )
    )
    sandbox.send_events(events)
    wait_for(
        lambda: metric_value(sandbox.metrics(), "pulse_community_events_total") == COUNT,
        120,
        f"{COUNT} events to be processed",
    )
    return events, now


def test_every_view_matches_a_recomputation_and_replay_changes_nothing(
    sandbox: Sandbox,
    loaded: tuple[list[dict[str, Any]], float],
) -> None:
    events, now = loaded
    check_everything(sandbox, events, now)
    check_everything(sandbox, events, now - 3 * 86400)  # --at in the past, within retention

    sandbox.send_events(events)  # redeliver everything
    wait_for(
        lambda: metric_value(sandbox.metrics(), "pulse_community_events_duplicate_total") == COUNT,
        120,
        "the replay to be recognised as duplicates",
    )
    assert metric_value(sandbox.metrics(), "pulse_community_events_total") == COUNT
    check_everything(sandbox, events, now)


def test_cli_and_http_give_the_same_answers(
    sandbox: Sandbox,
    loaded: tuple[list[dict[str, Any]], float],
) -> None:
    events, now = loaded
    stamp = datetime.fromtimestamp(now, tz=UTC).isoformat().replace("+00:00", "Z")
    member = events[0]["member_id"]
    community = events[0]["community"]
    for period in ("day", "week", "month", "all"):
        cli = sandbox.pulse(
            "leaderboard",
            "--community",
            community,
            "--period",
            period,
            "--top",
            "25",
            "--at",
            stamp,
            "--json",
        )
        assert cli.returncode == 0, cli.stderr
        _, http = http_json(
            f"{sandbox.base_url}/api/v1/communities/{community}/leaderboards/"
            f"{period}?top=25&at={stamp}"
        )
        assert json.loads(cli.stdout) == http
    cli = sandbox.pulse("member", member, "--community", community, "--at", stamp, "--json")
    assert cli.returncode == 0, cli.stderr
    _, http = http_json(
        f"{sandbox.base_url}/api/v1/communities/{community}/members/{member}?at={stamp}"
    )
    assert json.loads(cli.stdout) == http

    around = sandbox.pulse(
        "around", member, "--community", community, "--period", "all", "--n", "2", "--json"
    )
    body = json.loads(around.stdout)
    board = expected_board(events, community, "all", datetime.fromtimestamp(now, tz=UTC))
    rank = next(r["rank"] for r in board if r["member_id"] == member)
    assert body["rank"] == rank
    assert body["entries"] == board[max(0, rank - 3) : rank + 2]


def test_http_errors_are_json(sandbox: Sandbox, start_worker: Callable[[], Worker]) -> None:
    start_worker()
    base = f"{sandbox.base_url}/api/v1/communities"
    assert http_json(f"{base}/pycon-us/leaderboards/decade")[0] == 400
    assert http_json(f"{base}/pycon-us/leaderboards/week?top=-1")[0] == 400
    assert http_json(f"{base}/pycon-us/leaderboards/week?at=someday")[0] == 400
    assert http_json(f"{base}/Not%20Valid/leaderboards/week")[0] == 400
    status, body = http_json(f"{base}/pycon-us/members/nobody")
    assert (status, body["status"]) == (404, 404)
    assert "nobody" in body["error"]
