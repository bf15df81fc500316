"""An in-memory interpreter of planned effects, with the semantics of ``apply_batch.lua``.

It lets the badge catalog be evaluated over a file without Kafka or Redis (``pulse
badges backtest``) and lets unit tests run rules end to end. It ignores expiry: a
backtest looks at what a file earns, not at what Redis would still hold.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from streams.effects import HEADER, Applied, CommunityPlan


@dataclass(frozen=True, slots=True)
class FiredAward:
    award_id: str
    member_id: str
    badge: str
    tier: str | None
    at_ms: int
    evidence: str


@dataclass
class MemoryLedger:
    """Hashes, sorted sets and sets in dicts, plus the seen markers and fired awards."""

    hashes: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    zsets: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    sets: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    seen: set[str] = field(default_factory=set)
    awards: list[FiredAward] = field(default_factory=list)

    def apply(self, plans: Sequence[CommunityPlan]) -> list[Applied]:
        results = []
        for plan in plans:
            before = len(self.awards)
            flags = self._apply(plan.args)
            results.append(Applied(flags, [a.award_id for a in self.awards[before:]]))
        return results

    def _run_length(self, key: str, day: int, cap: int) -> int:
        days = self.sets.get(key, set())
        length = 1
        d = day - 1
        while length < cap and str(d) in days:
            length, d = length + 1, d - 1
        d = day + 1
        while length < cap and str(d) in days:
            length, d = length + 1, d + 1
        return length

    def _apply(self, args: Sequence[str | int]) -> list[int]:
        flags: list[int] = []
        i = 0
        while i < len(args):
            seen, nops, nchecks, badges_key, member, event_id, at_ms = args[i : i + HEADER]
            i += HEADER
            fresh = seen not in self.seen
            self.seen.add(str(seen))
            for _ in range(int(nops)):
                op, key, fld, amount = (str(a) for a in args[i : i + 4])
                i += 5
                if not fresh:
                    continue
                if op == "z":
                    board = self.zsets[key]
                    board[fld] = board.get(fld, 0) + int(amount)
                elif op == "h":
                    table = self.hashes[key]
                    table[fld] = table.get(fld, 0) + int(amount)
                elif op in ("min", "max"):
                    table = self.hashes[key]
                    current = table.get(fld)
                    pick = min if op == "min" else max
                    table[fld] = int(amount) if current is None else pick(current, int(amount))
                elif op == "s":
                    self.sets[key].add(fld)
                else:
                    raise ValueError(f"unknown op {op}")
            for _ in range(int(nchecks)):
                identity, check_field, badge, tier, nconds = (str(a) for a in args[i : i + 5])
                i += 5
                met = fresh and check_field not in self.hashes.get(str(badges_key), {})
                for _ in range(int(nconds)):
                    test, key, cfield, threshold = (str(a) for a in args[i : i + 4])
                    i += 4
                    if not met:
                        continue
                    if test == "h":
                        value = self.hashes.get(key, {}).get(cfield, 0)
                    elif test == "s":
                        value = len(self.sets.get(key, ()))
                    else:
                        value = self._run_length(key, int(cfield), int(threshold))
                    met = value >= int(threshold)
                if met:
                    self.hashes[str(badges_key)][check_field] = int(at_ms)
                    self.awards.append(
                        FiredAward(
                            str(identity),
                            str(member),
                            str(badge),
                            str(tier) or None,
                            int(at_ms),
                            str(event_id),
                        )
                    )
            flags.append(1 if fresh else 0)
        return flags
