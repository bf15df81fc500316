"""The health collector's pure parts: first-response buckets, bounds shared with Lua."""

from __future__ import annotations

import re
from pathlib import Path

from agents.health import FIRST_RESPONSE_BOUNDS, first_response_buckets

LUA = Path(__file__).parents[2] / "agents" / "write_batch.lua"


def test_bounds_match_the_lua_script() -> None:
    match = re.search(r"local BOUNDS = \{([0-9, ]+)\}", LUA.read_text())
    assert match is not None
    assert tuple(int(b) for b in match.group(1).split(",")) == FIRST_RESPONSE_BOUNDS


def test_buckets_are_cumulative_and_every_bound_is_present() -> None:
    buckets, total = first_response_buckets(
        {"le:300": "2", "le:3600": "1", "le:+Inf": "1", "sum": "9000.5", "count": "4"}
    )
    assert total == 9000.5
    assert buckets[0] == ("60", 0.0)
    assert dict(buckets)["300"] == 2.0
    assert dict(buckets)["1800"] == 2.0
    assert dict(buckets)["3600"] == 3.0
    assert dict(buckets)["604800"] == 3.0
    assert buckets[-1] == ("+Inf", 4.0)
    assert len(buckets) == len(FIRST_RESPONSE_BOUNDS) + 1


def test_empty_histogram_is_all_zeros() -> None:
    buckets, total = first_response_buckets({})
    assert total == 0.0
    assert {count for _, count in buckets} == {0.0}
