"""Fixtures for the normalizer tests: payload files and a contract check on every output."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streams.activity import parse_activity
from streams.sources.normalized import Normalized, Outcome, Skipped

FIXTURES = Path(__file__).parent / "fixtures"
# Late enough that every fixture is in the past: 2027-01-01T00:00:00Z.
LATER = 1798761600.0


def events_of(outcome: Outcome | list[Outcome]) -> list[dict[str, Any]]:
    """The events of a normalizer outcome, each checked against the activity contract."""
    outcomes = outcome if isinstance(outcome, list) else [outcome]
    events = [e for o in outcomes if isinstance(o, Normalized) for e in o.events]
    for event in events:
        parse_activity(event, now=LATER, max_future_skew=0)
    return events


def skipped(outcome: Outcome) -> Skipped:
    assert isinstance(outcome, Skipped), outcome
    return outcome


@pytest.fixture
def payload() -> Callable[[str], Any]:
    """Factory: a fresh copy of a JSON fixture, by file name."""

    def load(name: str) -> Any:
        return json.loads((FIXTURES / name).read_text())

    return load


@pytest.fixture
def fixture_text() -> Callable[[str], str]:
    def read(name: str) -> str:
        return (FIXTURES / name).read_text()

    return read
