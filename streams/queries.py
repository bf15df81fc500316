"""Validation of query parameters shared by the CLI and the HTTP API.

Both surfaces take the same parameters from untrusted text; each parser returns a typed
request or raises :class:`BadQuery` with a message fit to show the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from streams.activity import (
    COMMUNITY_RE,
    MAX_CHANNEL_LEN,
    MAX_ID_LEN,
    InvalidActivity,
    parse_timestamp,
)
from streams.periods import CHANNEL_PERIODS, PERIODS, parse_day

MAX_TOP: Final = 1000
MAX_AROUND: Final = 100


class BadQuery(ValueError):
    """A query parameter that cannot be served."""


def community(text: str) -> str:
    if COMMUNITY_RE.fullmatch(text) is None:
        raise BadQuery("community must be 1..64 characters of [a-z0-9._-], starting with [a-z0-9]")
    return text


def period(text: str) -> str:
    if text not in PERIODS:
        raise BadQuery(f"period must be one of {', '.join(PERIODS)}")
    return text


def member_id(text: str) -> str:
    if not text or len(text) > MAX_ID_LEN or not text.isprintable():
        raise BadQuery(f"member id must be 1..{MAX_ID_LEN} printable characters")
    return text


def channel(text: str | None) -> str | None:
    if text is None or text == "":
        return None
    if len(text) > MAX_CHANNEL_LEN or not text.isprintable():
        raise BadQuery(f"channel must be 1..{MAX_CHANNEL_LEN} printable characters")
    return text


def bounded_int(text: str | int | None, name: str, default: int, low: int, high: int) -> int:
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadQuery(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise BadQuery(f"{name} must be between {low} and {high}")
    return value


def instant(text: str | None, now: float) -> float:
    """``--at``/``at=``: a date (``YYYY-MM-DD``, read as noon UTC so the day is unambiguous)
    or an RFC 3339 timestamp; ``now`` when absent."""
    if text is None or text == "":
        return now
    if len(text) == 10:
        try:
            return parse_day(text) + 12 * 3600
        except ValueError as exc:
            raise BadQuery(str(exc)) from None
    try:
        return parse_timestamp(text, "at")
    except InvalidActivity as exc:
        raise BadQuery(f"at must be YYYY-MM-DD or an RFC 3339 timestamp ({exc.detail})") from None


@dataclass(frozen=True, slots=True)
class LeaderboardQuery:
    community: str
    period: str
    at: float
    top: int
    channel: str | None

    @classmethod
    def parse(
        cls,
        community_text: str,
        period_text: str,
        at: str | None,
        top: str | int | None,
        channel_text: str | None,
        now: float,
    ) -> LeaderboardQuery:
        chosen, board = period(period_text), channel(channel_text)
        if board is not None and chosen not in CHANNEL_PERIODS:
            raise BadQuery(
                f"channel leaderboards exist for {' and '.join(CHANNEL_PERIODS)} only, not {chosen}"
            )
        return cls(
            community(community_text),
            chosen,
            instant(at, now),
            bounded_int(top, "top", 10, 1, MAX_TOP),
            board,
        )


def histogram_quantile(histograms: list[dict[str, str]], q: float) -> float | None:
    """The ``q`` quantile of the sum of histograms kept as ``le:<bound>`` -> count
    fields (per bucket, not cumulative; ``le:+Inf`` above the last bound), interpolated
    linearly inside its bucket as Prometheus does; None without observations."""
    counts: dict[float, int] = {}
    for fields in histograms:
        for key, value in fields.items():
            if key.startswith("le:"):
                bound = float(key[3:])
                counts[bound] = counts.get(bound, 0) + int(value)
    total = sum(counts.values())
    if total == 0:
        return None
    rank = q * total
    running, lower = 0, 0.0
    finite = [b for b in sorted(counts) if b != float("inf")]
    for bound in sorted(counts):
        count = counts[bound]
        if running + count >= rank and count:
            if bound == float("inf"):
                return finite[-1] if finite else None
            return lower + (bound - lower) * (rank - running) / count
        running += count
        lower = bound
    return finite[-1] if finite else None
