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
class CommunityWrites:
    """Everything one batch changes in one community (one Redis slot)."""

    layout: KeyLayout
    # Sorted-set and hash increments: key -> member/field -> amount.
    zincr: dict[str, dict[str, int]] = field(default_factory=dict)
    hincr: dict[str, dict[str, int]] = field(default_factory=dict)
    # Keys that expire: key -> epoch seconds (only those written get an EXPIREAT).
    expire: dict[str, int] = field(default_factory=dict)
    # Members whose state changed: member_id -> state (the cache's object, written as
    # it is at the end of the batch).
    members: dict[str, MemberState] = field(default_factory=dict)
    # Event-id digests remembered in this batch: member -> receipt day -> digests, and
    # the (member, day) memories this batch starts (they get their expiry).
    ids: dict[str, dict[int, bytearray]] = field(default_factory=dict)
    new_ids: set[tuple[str, int]] = field(default_factory=set)
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
    # The evaluator's lookups that recur within a batch (not written).
    boards: dict[tuple[int, str | None], tuple[tuple[str, int], ...]] = field(
        default_factory=dict, repr=False
    )
    windows: dict[int, tuple[tuple[str, int], ...]] = field(default_factory=dict, repr=False)
    counts_key: str = field(init=False, repr=False)
    sources_key: str = field(init=False, repr=False)
    days_key: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        layout = self.layout
        self.counts_key = layout.counts()
        self.sources_key = layout.counts_by_source()
        self.days_key = layout.events_by_day()
