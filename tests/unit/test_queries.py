"""Query parameters of the CLI and the HTTP API: what is served, and what is a 400."""

from __future__ import annotations

import pytest

from streams.queries import BadQuery, LeaderboardQuery
from tests.conftest import NOON


@pytest.mark.parametrize(
    ("period", "at", "top", "channel", "expected"),
    [
        ("week", None, None, None, ("week", NOON, 10, None)),
        ("all", "", "25", "help", ("all", NOON, 25, "help")),
        ("week", None, 1000, "help", ("week", NOON, 1000, "help")),
        ("day", "2026-11-20", None, "", ("day", NOON - 5 * 86400, 10, None)),  # NOON is 11-25
    ],
)
def test_good_leaderboard_queries(
    period: str, at: str | None, top: str | int | None, channel: str | None, expected: tuple
) -> None:
    query = LeaderboardQuery.parse("pycon-us", period, at, top, channel, NOON)
    assert (query.period, query.at, query.top, query.channel) == expected


@pytest.mark.parametrize(
    ("community", "period", "at", "top", "channel", "message"),
    [
        ("PyCon", "week", None, None, None, "community must be"),
        ("pycon-us", "year", None, None, None, "period must be one of"),
        ("pycon-us", "week", None, "0", None, "top must be between 1 and 1000"),
        ("pycon-us", "week", None, "ten", None, "top must be an integer"),
        ("pycon-us", "week", "yesterday", None, None, "at must be YYYY-MM-DD"),
        ("pycon-us", "week", None, None, "a\nb", "channel must be"),
        # Channel boards are kept for week and all only: asking for another is a 400,
        # not an empty board.
        ("pycon-us", "day", None, None, "help", "channel leaderboards exist for week and all"),
        ("pycon-us", "month", None, None, "help", "not month"),
    ],
)
def test_bad_leaderboard_queries_say_why(
    community: str,
    period: str,
    at: str | None,
    top: str | None,
    channel: str | None,
    message: str,
) -> None:
    with pytest.raises(BadQuery, match=message):
        LeaderboardQuery.parse(community, period, at, top, channel, NOON)
