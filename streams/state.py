"""A member's engine state: everything the rules remember about one member of one
community, owned by the worker that owns the member's input partition.

The worker keeps the states of its partitions' members in memory, loads a member's
state from Redis on first touch and writes it back with each batch that changed it
(:func:`to_record` / :func:`from_record` give its JSON-ready form; the shell encodes
it). The evaluator (``streams/evaluator.py``) is the only code that changes a state.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Final

# Bumped when the record layout changes; a record of another version is refused (the
# operator runs ``pulse rebuild --from-beginning``).
STATE_VERSION: Final = 3
DAY_MS: Final = 86_400_000


def event_digest(event_id: str) -> bytes:
    """The 8-byte digest an event id is remembered by."""
    return hashlib.blake2b(event_id.encode(), digest_size=8).digest()


@dataclass(slots=True)
class MemberState:
    """One member's rule state. Times are epoch milliseconds, days UTC day numbers."""

    points: int = 0
    events: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    first_seen: int = 0
    last_seen: int = 0
    # The newest event time seen (applied or not): what pruning is judged against.
    newest: int = 0
    # The newest UTC day added to the member's active-days set in Redis (-1: none).
    last_day: int = -1
    # Badge condition counters ("badge/i[/group]") and day sets ("badge/i").
    counters: dict[str, int] = field(default_factory=dict)
    days: dict[str, set[int]] = field(default_factory=dict)
    # Badges held: "badge[:tier]" -> awarded at.
    badges: dict[str, int] = field(default_factory=dict)
    # Points per UTC day over the last 30 days of the member's event time.
    score: dict[int, int] = field(default_factory=dict)
    segment: str = "beginner"
    # When the 30-day score fell below the segment's lower threshold (0: it has not),
    # and when the downgrade grace ends (0: no downgrade pending).
    below_since: int = 0
    due: int = 0
    # Moderation windows: per channel the recent messages (at, event_id), sorted; per
    # content hash the channels it was posted in (channel -> last at); the open bursts
    # ("rule|scope" -> [flag_id, end]).
    flood: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    crosspost: dict[str, dict[str, int]] = field(default_factory=dict)
    bursts: dict[str, tuple[str, int]] = field(default_factory=dict)
    # Event ids applied recently: their digests, per UTC day the record was received
    # (its Kafka timestamp, part of the input); kept for the dedupe retention after the
    # newest receipt. Stored apart from the record (:func:`to_record`), appended to one
    # Redis string per member and day, so that a busy member's state written with each
    # batch does not grow with its events.
    # Packed, not a set: 8 bytes per id in memory as in Redis, where a set of ints
    # costs about 100; a lookup is a C-speed scan of a few kilobytes.
    seen: dict[int, bytearray] = field(default_factory=dict)
    received: int = 0
    # The newest UTC day the score was pruned for (not stored; -1: not since loading).
    pruned: int = field(default=-1, compare=False, repr=False)
    # Not stored either, and not the rules': the shell's copy of the member's scores in
    # the leaderboards it writes (board key -> score), so that a batch sets a score with
    # ZADD instead of having Redis read and add it (agents/writer.py). ``scored``: every
    # board missing from ``boards`` holds no score of the member (a member new to Redis);
    # ``asked``: boards sent as increments, with the number of the batch that sent them
    # last (its reply tells the score).
    boards: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    scored: bool = field(default=False, compare=False, repr=False)
    asked: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def remembers(self, digest: bytes) -> bool:
        """Whether an event id with this digest (:func:`event_digest`) was applied."""
        # The digests are packed end to end: a match counts at a multiple of 8 only.
        for packed in self.seen.values():
            at = packed.find(digest)
            while at >= 0:
                if not at % 8:
                    return True
                at = packed.find(digest, at + 1)
        return False

    def remember(self, day: int, digest: bytes) -> None:
        packed = self.seen.get(day)
        if packed is None:
            self.seen[day] = bytearray(digest)
        else:
            packed += digest

    def score_at(self, day: int) -> int:
        """The 30-day score on ``day``: points of days ``day - 29 .. day``."""
        if day == self.newest // DAY_MS and self.pruned == day:
            # Kept days are exactly the 30 up to the newest (the evaluator's hot path).
            return sum(self.score.values())
        # A loop: half the time of sum() over a generator.
        total, oldest = 0, day - 30
        for d, points in self.score.items():
            if oldest < d <= day:
                total += points
        return total


def dedupe_horizon(received: int, retention_seconds: int) -> int:
    """The oldest UTC receipt day whose event ids are still remembered when the newest
    record was received at ``received`` (ms)."""
    return (received - retention_seconds * 1000) // DAY_MS


def restore_seen(state: MemberState, days: dict[int, str], retention_seconds: int) -> None:
    """Give a loaded state its remembered event ids: per UTC day, the digests as hex
    (as the shell stores them), forgetting days the retention has passed."""
    horizon = dedupe_horizon(state.received, retention_seconds)
    state.seen = {d: bytearray.fromhex(text) for d, text in sorted(days.items()) if d >= horizon}


def to_record(state: MemberState) -> list[Any]:
    """The state as JSON-ready values (a list: short field names cost bytes per member).

    Containers go as they are where a JSON encoder takes them (tuples are arrays, the
    score's int day keys become strings): this runs for every member of every batch.
    """
    return [
        STATE_VERSION,
        state.points,
        state.events,
        state.by_type,
        state.first_seen,
        state.last_seen,
        state.newest,
        state.last_day,
        state.counters,
        {k: sorted(v) for k, v in state.days.items()},
        state.badges,
        state.score,
        state.segment,
        state.below_since,
        state.due,
        state.flood,
        state.crosspost,
        state.bursts,
        state.received,
    ]


class StateVersionError(ValueError):
    """A stored state of a layout this version cannot read."""


def from_record(record: list[Any]) -> MemberState:
    """The inverse of :func:`to_record`."""
    if not record or record[0] != STATE_VERSION:
        raise StateVersionError(
            f"member state of version {record[0] if record else None!r}, expected "
            f"{STATE_VERSION}: run `pulse rebuild --from-beginning`"
        )
    (
        _,
        points,
        events,
        by_type,
        first_seen,
        last_seen,
        newest,
        last_day,
        counters,
        days,
        badges,
        score,
        segment,
        below_since,
        due,
        flood,
        crosspost,
        bursts,
        received,
    ) = record
    return MemberState(
        points=points,
        events=events,
        by_type=by_type,
        first_seen=first_seen,
        last_seen=last_seen,
        newest=newest,
        last_day=last_day,
        counters=counters,
        days={k: set(v) for k, v in days.items()},
        badges=badges,
        score={int(d): p for d, p in score.items()},
        segment=segment,
        below_since=below_since,
        due=due,
        # Kept sorted by the evaluator (states stored before were in arrival order).
        flood={k: sorted((int(m[0]), str(m[1])) for m in v) for k, v in flood.items()},
        crosspost=crosspost,
        bursts={k: (str(v[0]), int(v[1])) for k, v in bursts.items()},
        received=received,
    )
