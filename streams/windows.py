"""Rolling engagement windows over fixed-size time buckets.

A window ``W`` with granularity ``g`` evaluated at time ``T`` sums the buckets
``b`` with ``floor(T/g) - W/g < b <= floor(T/g)``, where an event at ``t`` lies in
bucket ``floor(t/g)``. In words: the ``W/g`` whole buckets ending with the one that
holds ``T``, i.e. events with ``occurred_at`` in ``[floor_g(T) + g - W, floor_g(T) + g)``.
That is the window ``(T - W, T]`` computed exactly to the bucket granularity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MINUTE: Final = 60
HOUR: Final = 3600
DAY: Final = 86400


@dataclass(frozen=True, slots=True)
class Window:
    """A named rolling window: its length and the bucket granularity, both in seconds."""

    name: str
    seconds: int
    granularity: int

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.granularity <= 0 or self.seconds % self.granularity:
            raise ValueError(f"window {self.name}: length must be a multiple of granularity")

    def buckets(self, at: float) -> range:
        """Bucket indices (of this window's granularity) that make up the window at ``at``."""
        last = int(at // self.granularity)
        return range(last - self.seconds // self.granularity + 1, last + 1)


WINDOWS: Final[tuple[Window, ...]] = (
    Window("1h", HOUR, MINUTE),
    Window("24h", DAY, HOUR),
    Window("7d", 7 * DAY, HOUR),
    Window("30d", 30 * DAY, DAY),
)

# The granularities window buckets are kept at, with the name used in Redis keys.
GRANULARITIES: Final[dict[str, int]] = {"min": MINUTE, "hour": HOUR, "day": DAY}
GRANULARITY_NAME: Final[dict[int, str]] = {v: k for k, v in GRANULARITIES.items()}
# The granularities with window keys of their own. A member's points of a UTC day are
# its score on that day's leaderboard (``lb:day:<date>``): the daily buckets are read
# from there rather than written twice, so day leaderboards are kept at least as long
# as the longest daily window (:data:`LONGEST_DAILY_DAYS`).
STORED: Final[dict[str, int]] = {"min": MINUTE, "hour": HOUR}
LONGEST_DAILY_DAYS: Final = max(w.seconds // DAY for w in WINDOWS if w.granularity == DAY)


def on_day_boards(window: Window) -> bool:
    """Whether the window's buckets are the day leaderboards (which hold points
    negated) rather than window hashes of their own."""
    return GRANULARITY_NAME[window.granularity] not in STORED


def bucket_index(ts: float, granularity: int) -> int:
    """The bucket of ``granularity`` seconds that holds the instant ``ts``."""
    return int(ts // granularity)
