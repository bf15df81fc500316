"""What a batch writes: the evaluator's effects, added up per community.

The evaluator (``streams/evaluator.py``) adds each applied event's effects to the
:class:`CommunityWrites` of its community; the shell turns one into a single atomic,
fenced Redis call (``agents/redis/writer.py``). Increments are summed per (key, field)
over the batch, so a busy leaderboard or counter takes one command per batch, and
per-member values (profile, state, first/last seen) are written once, from the
member's state at the end of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from streams.activity import Activity
from streams.keys import KeyLayout
from streams.state import MemberState

APPLIED: Final = 1
DUPLICATE: Final = 0
MODERATED: Final = 2


@dataclass(slots=True)
class Spread:
    """Amounts that go to each of several keys alike: an event's points go to every
    leaderboard of its day and channel, and to the window buckets of its minute.

    Kept per key set rather than per key, so that an event costs one addition instead
    of one per key; the shell writes the amounts to each key.
    """

    keys: tuple[str, ...]
    # The earliest expiry (epoch s) among the keys: an event whose stream time is
    # before it is late for none of them.
    first_expiry: float
    # Member (leaderboards: sorted-set member; windows: hash field) -> amount.
    amounts: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class CommunityWrites:
    """Everything one batch changes in one community (one Redis slot)."""

    layout: KeyLayout
    # Leaderboard and window increments, per key set (see :class:`Spread`): per
    # (UTC day, channel) and per minute.
    boards: dict[tuple[int, str | None], Spread] = field(default_factory=dict)
    windows: dict[int, Spread] = field(default_factory=dict)
    # Events counted per (type, source, UTC day): the community's counters.
    tally: dict[tuple[str, str, int], int] = field(default_factory=dict)
    # Other sorted-set and hash increments, per key: key -> member/field -> amount
    # (and the buckets of a late event, whose key set is cut).
    zextra: dict[str, dict[str, int]] = field(default_factory=dict)
    hextra: dict[str, dict[str, int]] = field(default_factory=dict)
    # Keys that expire: key -> epoch seconds (only those written get an EXPIREAT).
    expire: dict[str, int] = field(default_factory=dict)
    # Members whose state changed: member_id -> state (the cache's object, written as
    # it is at the end of the batch).
    members: dict[str, MemberState] = field(default_factory=dict)
    # Event-id digests remembered in this batch: member -> receipt day -> digests, and
    # the (member, day) memories this batch starts (they get their expiry).
    ids: dict[str, dict[int, bytearray]] = field(default_factory=dict)
    new_ids: set[tuple[str, int]] = field(default_factory=set)
    # Members whose first event time moved earlier (their first one, or an older one
    # arriving late): the profile's first_seen and the first-seen index are written.
    firsts: set[str] = field(default_factory=set)
    # UTC days to add to members' active-days sets.
    active_days: dict[str, set[int]] = field(default_factory=dict)
    # Recorded outputs, in event order: (id, record) for awards, flags, segment changes.
    awards: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    flags: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    changes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # Event ids attached to moderation bursts: burst key -> event ids.
    bursts: dict[str, list[str]] = field(default_factory=dict)
    # Members' segment-downgrade clocks that changed: member -> due (0: none).
    dues: dict[str, int] = field(default_factory=dict)
    # First-response matching, community-wide (threads are opened and answered by
    # members of different partitions): (op, thread key, member, at ms, expire at).
    threads: list[tuple[str, str, str, int, int]] = field(default_factory=list)
    # Per evaluated event, in order: the event, its code and whether it was late.
    activities: list[Activity] = field(default_factory=list)
    codes: list[int] = field(default_factory=list)
    late: list[bool] = field(default_factory=list)
    counts_key: str = field(init=False, repr=False)
    sources_key: str = field(init=False, repr=False)
    days_key: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        layout = self.layout
        self.counts_key = layout.counts()
        self.sources_key = layout.counts_by_source()
        self.days_key = layout.events_by_day()

    @property
    def zincr(self) -> dict[str, dict[str, int]]:
        """Every sorted-set increment, added up per key and member."""
        total: dict[str, dict[str, int]] = {}
        for spread in self.boards.values():
            for key in spread.keys if spread.amounts else ():
                _merge(total, key, spread.amounts)
        for key, amounts in self.zextra.items():
            _merge(total, key, amounts)
        return total

    @property
    def hincr(self) -> dict[str, dict[str, int]]:
        """Every hash increment, added up per key and field."""
        total: dict[str, dict[str, int]] = {}
        for spread in self.windows.values():
            for key in spread.keys if spread.amounts else ():
                _merge(total, key, spread.amounts)
        for (kind, source, day), count in self.tally.items():
            _merge(total, self.counts_key, {kind: count})
            _merge(total, self.sources_key, {f"{kind}|{source}": count})
            _merge(total, self.days_key, {str(day): count})
        for key, amounts in self.hextra.items():
            _merge(total, key, amounts)
        return total

    def incremented(self) -> set[str]:
        """The keys some increment goes to."""
        keys = {
            key
            for spreads in (self.boards, self.windows)
            for spread in spreads.values()
            if spread.amounts
            for key in spread.keys
        }
        if self.tally:
            keys.update((self.counts_key, self.sources_key, self.days_key))
        keys.update(self.zextra)
        keys.update(self.hextra)
        return keys


def _merge(total: dict[str, dict[str, int]], key: str, amounts: dict[str, int]) -> None:
    row = total.setdefault(key, {})
    for name, amount in amounts.items():
        row[name] = row.get(name, 0) + amount
