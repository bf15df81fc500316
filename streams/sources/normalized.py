"""What a platform normalizer returns, and the small readers every normalizer shares.

A normalizer maps one platform payload to a :class:`Normalized` (one or more activity
dicts) or a :class:`Skipped` with a bounded ``reason`` code. Payloads come from outside,
so the readers here never trust a shape: a missing or mistyped field gives ``None``, and
:func:`guarded` turns any shape error the normalizer did not foresee into a ``Skipped``
instead of an exception. Nothing here reads the clock; times are passed in.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any, Final, ParamSpec

from streams.activity import MAX_ID_LEN, RFC3339_RE
from streams.periods import format_instant

P = ParamSpec("P")

MALFORMED: Final = "malformed_payload"
_NAIVE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?")
_SPACES: Final = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Normalized:
    """Activity dicts made from one payload, each meant to pass ``parse_activity``."""

    events: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Skipped:
    """A payload that yields no activity, and why.

    ``reason`` is a short code from a fixed set (safe as a metric label); ``malformed``
    is true when the input itself is broken (as opposed to valid but irrelevant, such
    as a bot's message or a closed-but-not-merged pull request).
    """

    reason: str
    detail: str = ""
    malformed: bool = False


Outcome = Normalized | Skipped


@dataclass
class Tally:
    """Running totals of what a batch of payloads became, for reports and metrics."""

    events: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    malformed: Counter[str] = field(default_factory=Counter)

    def add(self, outcome: Outcome) -> None:
        if isinstance(outcome, Normalized):
            self.events.update(e["type"] for e in outcome.events)
        elif outcome.malformed:
            self.malformed[outcome.reason] += 1
        else:
            self.skipped[outcome.reason] += 1

    def summary(self) -> str:
        def part(counter: Counter[str]) -> str:
            return ", ".join(f"{k}={v}" for k, v in sorted(counter.items()))

        text = f"{sum(self.events.values())} events"
        if self.events:
            text += f" ({part(self.events)})"
        text += f"; {sum(self.skipped.values())} skipped"
        if self.skipped:
            text += f" ({part(self.skipped)})"
        text += f"; {sum(self.malformed.values())} malformed"
        if self.malformed:
            text += f" ({part(self.malformed)})"
        return text


def guarded(normalize: Callable[P, Outcome]) -> Callable[P, Outcome]:
    """Wrap a normalizer so an unforeseen payload shape becomes ``Skipped``, never a crash."""

    def run(*args: P.args, **kwargs: P.kwargs) -> Outcome:
        try:
            return normalize(*args, **kwargs)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            return Skipped(MALFORMED, f"{type(exc).__name__} while reading the payload", True)

    run.__name__ = normalize.__name__
    run.__doc__ = normalize.__doc__
    return run


def obj(value: object, *path: str) -> dict[str, Any] | None:
    """The JSON object at ``path`` inside ``value``, or None."""
    current: object = value
    for key in path:
        if not isinstance(current, dict):
            return None
        current = current.get(key)
    return current if isinstance(current, dict) else None


def text(value: object, *path: str) -> str | None:
    """A non-empty, stripped string (or an integer id as text) at ``path``, or None."""
    current: object = value
    for key in path:
        if not isinstance(current, dict):
            return None
        current = current.get(key)
    if isinstance(current, bool):
        return None
    if isinstance(current, int):
        return str(current)
    if isinstance(current, str) and current.strip():
        return current.strip()
    return None


def first(row: Mapping[str, Any], names: Iterable[str]) -> str | None:
    """The first non-empty value among the column ``names`` of a table row."""
    for name in names:
        value = text(row, name)
        if value is not None:
            return value
    return None


def timestamp(value: object, tz: tzinfo | None = None) -> str | None:
    """An RFC 3339 timestamp with an offset, from what platforms put in their payloads.

    Accepts RFC 3339 text (kept as given), epoch seconds or milliseconds (numbers) and,
    when ``tz`` is given, naive ``YYYY-MM-DD[ HH:MM[:SS]]`` local times. Anything else
    gives None, so the caller can say which field was unusable.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value) / 1000 if value > 1e11 else float(value)
        if not 0 < seconds < 253402300800:  # 9999-12-31
            return None
        return format_instant(seconds)
    if not isinstance(value, str):
        return None
    stamp = value.strip()
    if RFC3339_RE.fullmatch(stamp):
        try:
            datetime.fromisoformat(stamp.upper().replace("Z", "+00:00"))
        except ValueError:
            return None
        return stamp
    if tz is not None and _NAIVE_RE.fullmatch(stamp):
        try:
            local = datetime.fromisoformat(stamp.replace("t", "T"))
        except ValueError:
            return None
        return local.replace(tzinfo=tz).isoformat()
    return None


def epoch(stamp: str) -> float:
    """Epoch seconds of a timestamp returned by :func:`timestamp`."""
    return datetime.fromisoformat(stamp.upper().replace("Z", "+00:00")).timestamp()


def content_hash(content: str) -> str:
    """A short SHA-256 of message text, case- and whitespace-folded.

    Folding makes a copy-pasted cross-post hash the same in every channel. Only the
    hash travels; the text never leaves the normalizer.
    """
    folded = _SPACES.sub(" ", content.casefold()).strip()
    return hashlib.sha256(folded.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def event_id(*parts: str) -> str:
    """Join id parts with ``-``; ids too long or unprintable become a stable hash."""
    joined = "-".join(parts)
    if len(joined) <= MAX_ID_LEN and joined.isprintable():
        return joined
    digest = hashlib.sha256(joined.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{parts[0][:16]}-h{digest[:48]}"


def activity(
    *,
    event_id: str,
    type: str,
    member_id: str,
    community: str,
    source: str,
    occurred_at: str,
    channel: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One activity dict in the contract's field order, without empty optionals."""
    event: dict[str, Any] = {
        "event_id": event_id,
        "type": type,
        "member_id": member_id,
        "community": community,
        "source": source,
    }
    if channel is not None:
        event["channel"] = channel
    event["occurred_at"] = occurred_at
    if attributes:
        event["attributes"] = {k: v for k, v in attributes.items() if v is not None}
    return event


def lookup(mapping: Mapping[str, str], *keys: str | None) -> str | None:
    """The value of the first key present in ``mapping`` (keys compared in lower case),
    else the ``*`` default, else None."""
    for key in keys:
        if key is not None and (found := mapping.get(key.lower())) is not None:
            return found
    return mapping.get("*")


def table_rows(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for each data row of a CSV export with a header line.

    Header names are folded (``"Attendee ID"`` -> ``attendee_id``) so exports from
    different tools read the same; a row's line number is where the row starts.
    """
    reader = csv.reader(lines)
    header: list[str] | None = None
    start = 1
    for row in reader:
        if header is None:
            header = [_SPACES.sub("_", name.strip().lower().lstrip("\ufeff")) for name in row]
            start = reader.line_num + 1
            continue
        line, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in row):
            continue
        yield line, {name: cell for name, cell in zip(header, row, strict=False) if name}
