"""Rolling windows: which buckets a window sums, exactly at the bucket edges."""

from __future__ import annotations

import pytest

from streams.windows import DAY, HOUR, MINUTE, WINDOWS, Window, bucket_index

BY_NAME = {w.name: w for w in WINDOWS}


def window_sum(window: Window, events: list[tuple[float, int]], at: float) -> int:
    buckets = set(window.buckets(at))
    return sum(p for t, p in events if bucket_index(t, window.granularity) in buckets)


def test_published_granularities() -> None:
    assert [(w.name, w.seconds, w.granularity) for w in WINDOWS] == [
        ("1h", HOUR, MINUTE),
        ("24h", DAY, HOUR),
        ("7d", 7 * DAY, HOUR),
        ("30d", 30 * DAY, DAY),
    ]
    assert [len(w.buckets(1e9)) for w in WINDOWS] == [60, 24, 168, 30]


T = 1_800_000_000.0  # divisible by 3600 and 60 but not a day boundary


@pytest.mark.parametrize(
    ("name", "offset", "counted"),
    [
        ("1h", 0, True),  # in T's own bucket
        ("1h", -59 * MINUTE, True),  # oldest whole minute still inside
        ("1h", -60 * MINUTE, False),  # exactly one hour back: out (half-open)
        ("1h", -60 * MINUTE - 1, False),
        ("1h", 59, True),  # later in T's minute: same bucket
        ("1h", 60, False),  # the next minute is not yet in the window
        ("24h", -23 * HOUR, True),
        ("24h", -24 * HOUR, False),
        ("7d", -(7 * 24 - 1) * HOUR, True),
        ("7d", -7 * DAY, False),
    ],
)
def test_window_edges(name: str, offset: float, counted: bool) -> None:
    window = BY_NAME[name]
    assert window_sum(window, [(T + offset, 3)], T) == (3 if counted else 0)


def test_thirty_day_window_counts_whole_utc_days() -> None:
    window = BY_NAME["30d"]
    at = 20_000 * DAY + 10 * HOUR
    assert window_sum(window, [(20_000 * DAY - 29 * DAY, 1)], at) == 1
    assert window_sum(window, [(20_000 * DAY - 29 * DAY - 1, 1)], at) == 0


def test_window_length_must_be_a_multiple_of_granularity() -> None:
    with pytest.raises(ValueError, match="multiple"):
        Window("odd", 90, 60)
