"""An in-memory interpreter of planned effects, with the semantics of ``apply_batch.lua``.

It lets the badge catalog be evaluated over a file without Kafka or Redis (``pulse
badges backtest``) and lets unit tests run rules end to end: dedupe, moderation gates
(a moderated message counts for no badge), counters and award checks. It leaves out
what a backtest does not report: key expiry, first-response histograms and segment
changes (the segment rules are tested on their own and against the real Redis).

It applies every op at once, in event order. The script adds up its upper-case ops and
writes them at the end of the call, but they write keys that nothing in the call reads,
so when they land cannot change an outcome.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from streams.effects import APPLIED, DUPLICATE, GATE, HEADER, MODERATED, Applied, CommunityPlan


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
    moderated: list[tuple[str, str]] = field(default_factory=list)  # (rule, event_id)

    def apply(self, plans: Sequence[CommunityPlan]) -> list[Applied]:
        results = []
        for plan in plans:
            before = len(self.awards)
            codes = self._apply(plan)
            results.append(Applied(codes, [a.award_id for a in self.awards[before:]]))
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

    def _over_limit(self, gate: Sequence[str], event_id: str, at: int) -> bool:
        rule, key, window, limit, channel = gate[0], gate[1], int(gate[2]), int(gate[3]), gate[4]
        board = self.zsets[key]
        count = sum(1 for t in board.values() if at - window < t <= at)
        if rule == "flood":
            board[event_id] = at
        else:
            own = board.get(channel)
            if own is not None and at - window < own <= at:
                count -= 1
            board[channel] = max(own, at) if own is not None else at
        return count >= limit

    def _apply(self, plan: CommunityPlan) -> list[int]:
        args, keys = plan.args, plan.keys
        codes: list[int] = []
        i = 0
        while i < len(args):
            seen, nops, nchecks, ngates, badges_key, member, event_id, at_ms = (
                str(a) for a in args[i : i + 8]
            )
            i += HEADER
            fresh = seen not in self.seen
            self.seen.add(seen)
            moderated = False
            for _ in range(int(ngates)):
                gate = [str(a) for a in args[i : i + GATE]]
                i += GATE
                if fresh and self._over_limit(gate, event_id, int(at_ms)) and not moderated:
                    moderated = True
                    self.moderated.append((gate[0], event_id))
            live = fresh and not moderated
            for _ in range(int(nops)):
                op, index, fld, amount = args[i : i + 4]
                i += 4
                if live:
                    key = str(keys[2 * int(index) - 2])
                    self._op(str(op).lower(), key, str(fld), int(amount))
            for _ in range(int(nchecks)):
                identity, check_field, badge, tier, nconds = (str(a) for a in args[i : i + 5])
                i += 5
                met = live and check_field not in self.hashes.get(badges_key, {})
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
                    self.hashes[badges_key][check_field] = int(at_ms)
                    self.awards.append(
                        FiredAward(identity, member, badge, tier or None, int(at_ms), event_id)
                    )
            codes.append(DUPLICATE if not fresh else MODERATED if moderated else APPLIED)
        return codes

    def _op(self, op: str, key: str, fld: str, amount: int) -> None:
        if op == "z":
            board = self.zsets[key]
            board[fld] = board.get(fld, 0) + amount
        elif op == "h":
            table = self.hashes[key]
            table[fld] = table.get(fld, 0) + amount
        elif op in ("min", "max", "lt", "gt"):
            store: dict[str, int] | dict[str, float] = (
                self.hashes[key] if op in ("min", "max") else self.zsets[key]
            )
            current = store.get(fld)
            pick = min if op in ("min", "lt") else max
            store[fld] = amount if current is None else pick(current, amount)  # type: ignore[assignment]
        elif op == "s":
            self.sets[key].add(fld)
        elif op not in ("open", "reply"):
            raise ValueError(f"unknown op {op}")
