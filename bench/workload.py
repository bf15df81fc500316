"""Generated input of realistic shape, and the totals every implementation must reach.

Events follow the demo generator's mix of types, sources and channels (pinned
below), about 250 bytes of JSON each, with Zipf-skewed member
activity. Unlike the demo generator this one draws members in O(log n) per event, so it
can make millions of events for a million members, and it can guarantee that every
member appears at least once (for the memory-per-member scenario).

The expected totals are computed here from the generated input alone, with the same
points table (``streams.scoring.DEFAULT_POINTS``); the benchmark fails when any
implementation's leaderboards disagree with them. Chat bursts that the moderation rules
would flag (and so score zero) are spread out in time before the events are encoded, so
the straightforward totals are the right answer for every implementation.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from streams.periods import format_instant
from streams.scoring import DEFAULT_POINTS

DEFAULT_COMMUNITIES: Final = ("pycon-us", "python-discord", "django-forum")
# (type, source, relative frequency, channels): the demo generator's mix, pinned here so
# that a change to the demo does not change the benchmark's input between runs.
MIX: Final[tuple[tuple[str, str, int, tuple[str, ...]], ...]] = (
    ("chat.message", "discord", 60, ("general", "help", "web-dev", "data-science")),
    ("forum.post", "discourse", 5, ("q-and-a", "announcements")),
    ("forum.reply", "discourse", 10, ("q-and-a", "ideas")),
    ("forum.answer_accepted", "discourse", 2, ("q-and-a",)),
    ("github.issue_opened", "github", 3, ("core", "docs")),
    ("github.comment", "github", 6, ("core", "docs")),
    ("github.pr_opened", "github", 3, ("core", "docs")),
    ("github.pr_merged", "github", 2, ("core", "docs")),
    ("github.review_submitted", "github", 3, ("core",)),
    ("event.checkin", "pycon", 2, ()),
    ("event.session_attended", "pycon", 2, ()),
    ("event.volunteer_shift", "pycon", 1, ()),
    ("feedback.submitted", "pycon", 1, ()),
    ("package.released", "pypi", 1, ()),
)
# The moderation defaults (streams.moderation.ModerationPolicy): a member's 11th chat
# message in one channel within 60 s scores nothing. Bursts are kept below that.
FLOOD_MESSAGES: Final = 10
FLOOD_WINDOW: Final = 60.0


@dataclass(frozen=True, slots=True)
class Spec:
    """What to generate. Same spec and seed, same bytes."""

    events: int
    members: int
    communities: tuple[str, ...] = DEFAULT_COMMUNITIES
    seed: int = 8
    span_seconds: int = 7 * 86400
    cover_all_members: bool = False
    id_prefix: str = "bench"


@dataclass(slots=True)
class Expected:
    """The answer: all-time points per (community, member) and events per type."""

    points: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    counts: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    events: int = 0
    members: int = 0

    def total_points(self) -> int:
        return sum(sum(board.values()) for board in self.points.values())


@dataclass(slots=True)
class Workload:
    spec: Spec
    now: float
    messages: list[tuple[bytes, bytes]]
    expected: Expected
    mean_bytes: float
    flood_fixes: int


def _member_picker(rng: random.Random, members: int) -> tuple[list[str], list[float]]:
    names = [f"m{i:07d}" for i in range(members)]
    cumulative = list(itertools.accumulate(1.0 / (i + 1) for i in range(members)))
    return names, cumulative


def _members(spec: Spec, rng: random.Random) -> list[str]:
    names, cumulative = _member_picker(rng, spec.members)
    total = cumulative[-1]
    # Coverage events (each member once) are at most 80% of all, the rest Zipf-skewed.
    cover = min(spec.members, spec.events - spec.events // 5) if spec.cover_all_members else 0
    drawn = [
        names[bisect.bisect_left(cumulative, rng.random() * total)]
        for _ in range(spec.events - cover)
    ]
    picked = names[:cover] + drawn
    rng.shuffle(picked)
    return picked


def _times(spec: Spec, rng: random.Random, now: float) -> list[float]:
    return [now - 1.0 - rng.random() * spec.span_seconds for _ in range(spec.events)]


def _spread_bursts(rows: list[dict[str, Any]], times: list[float], rng: random.Random) -> int:
    """Move chat messages that would trip the flood rule to a random other time."""
    fixes = 0
    while True:
        by_key: dict[tuple[str, str, str], list[int]] = defaultdict(list)
        for i, row in enumerate(rows):
            if row["type"] == "chat.message":
                by_key[(row["community"], row["member_id"], row["channel"])].append(i)
        moved = 0
        for indices in by_key.values():
            if len(indices) <= FLOOD_MESSAGES:
                continue
            indices.sort(key=times.__getitem__)
            for j in range(FLOOD_MESSAGES, len(indices)):
                if times[indices[j]] - times[indices[j - FLOOD_MESSAGES]] <= FLOOD_WINDOW + 1:
                    times[indices[j]] -= rng.random() * 3600 + FLOOD_WINDOW
                    moved += 1
        fixes += moved
        if not moved:
            return fixes


def build(spec: Spec, now: float) -> Workload:
    """Generate the events (Kafka key, JSON value) and the expected totals."""
    rng = random.Random(spec.seed)  # noqa: S311 - a benchmark, not security
    kinds = [m[0] for m in MIX]
    weights = [m[2] for m in MIX]
    by_kind = {m[0]: m for m in MIX}
    types = rng.choices(kinds, weights, k=spec.events)
    members = _members(spec, rng)
    times = _times(spec, rng, now)
    rows: list[dict[str, Any]] = []
    ncomm = len(spec.communities)
    for n in range(spec.events):
        kind = types[n]
        _, source, _, channels = by_kind[kind]
        row: dict[str, Any] = {
            "event_id": f"{spec.id_prefix}-{spec.seed}-{n:08d}-{rng.getrandbits(40):010x}",
            "type": kind,
            "member_id": members[n],
            "community": spec.communities[rng.randrange(ncomm)],
            "source": source,
        }
        if channels:
            row["channel"] = channels[rng.randrange(len(channels))]
        if kind == "chat.message":
            row["attributes"] = {"content_hash": f"{rng.getrandbits(64):016x}"}
        elif kind == "feedback.submitted":
            row["attributes"] = {"rating": rng.randint(1, 5), "event": "pycon-2026"}
        elif kind == "event.session_attended":
            row["attributes"] = {"event": "pycon-2026", "session": f"talk-{rng.randrange(40)}"}
        else:
            # What sources attach: a thread, pull request or release reference.
            row["attributes"] = {"ref": f"{source}/{rng.getrandbits(48):012x}"}
        rows.append(row)
    fixes = _spread_bursts(rows, times, rng)
    expected = Expected()
    messages: list[tuple[bytes, bytes]] = []
    size = 0
    seen_members: set[str] = set()
    for row, ts in zip(rows, times, strict=True):
        row["occurred_at"] = format_instant(ts)
        value = orjson.dumps(row)
        size += len(value)
        messages.append((row["member_id"].encode(), value))
        board = expected.points[row["community"]]
        board[row["member_id"]] = board.get(row["member_id"], 0) + DEFAULT_POINTS[row["type"]]
        expected.counts[row["community"]][row["type"]] += 1
        seen_members.add(row["member_id"])
    expected.events = spec.events
    expected.members = len(seen_members)
    return Workload(spec, now, messages, expected, size / max(1, spec.events), fixes)
