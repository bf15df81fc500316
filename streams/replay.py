"""Evaluating a whole history in memory: ``pulse badges backtest`` and the tests.

The same evaluator as the worker, with one stream (stream time = the newest event time
so far) and every member's state kept: no Kafka, no Redis.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from streams.activity import Activity
from streams.effects import CommunityWrites
from streams.evaluator import evaluate
from streams.keys import KeyLayout
from streams.policy import Policy
from streams.state import MemberState


@dataclass(slots=True)
class Replay:
    """Member states and each community's added-up writes after a history."""

    policy: Policy
    prefix: str = "pulse"
    states: dict[tuple[str, str], MemberState] = field(default_factory=dict)
    writes: dict[str, CommunityWrites] = field(default_factory=dict)
    stream_time: float = 0.0

    def feed(self, activities: Iterable[Activity]) -> list[int]:
        """Evaluate activities in order; returns their codes."""
        codes = []
        for activity in activities:
            community = activity.community
            out = self.writes.get(community)
            if out is None:
                out = self.writes[community] = CommunityWrites(KeyLayout(self.prefix, community))
            key = (community, activity.member_id)
            state = self.states.get(key)
            if state is None:
                state = self.states[key] = MemberState()
            self.stream_time = max(self.stream_time, activity.occurred_at)
            codes.append(evaluate(state, activity, self.policy, out, self.stream_time))
        return codes

    def awards(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(community, award_id, record) of every award, per community in event order."""
        return [(c, i, r) for c, out in self.writes.items() for i, r in out.awards]
