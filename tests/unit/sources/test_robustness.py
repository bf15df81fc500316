"""No payload, however mangled, makes a normalizer raise: it is skipped with a reason."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

import pytest

from streams.sources.conference import ConferenceConfig, normalize_scan, normalize_shift
from streams.sources.discord import DiscordConfig, normalize_discord
from streams.sources.discourse import DiscourseConfig, normalize_discourse
from streams.sources.feedback import normalize_feedback
from streams.sources.github import GitHubConfig, normalize_github
from streams.sources.normalized import Normalized, Outcome, Skipped, Tally, guarded, timestamp
from streams.sources.pypi import PyPIConfig, normalize_pypi

ODD_VALUES: list[Any] = [None, 0, -1, True, 1.5, "", " ", "x" * 300, [], {}, [1], {"a": 1}]
ANY: dict[str, str] = {"*": "fuzz"}


def mangle(value: Any, rng: random.Random) -> Any:
    """A copy of ``value`` with some nested values swapped for odd ones or removed."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            roll = rng.random()
            if roll < 0.08:
                continue
            out[key] = rng.choice(ODD_VALUES) if roll < 0.2 else mangle(item, rng)
        return out
    if isinstance(value, list):
        return [mangle(item, rng) for item in value]
    return value


NORMALIZERS: dict[str, Callable[[Any], list[Outcome]]] = {
    "github_pull_request_closed_merged.json": lambda p: [
        normalize_github("pull_request", p, GitHubConfig(ANY), "d-1")
    ],
    "github_pull_request_review_submitted.json": lambda p: [
        normalize_github("pull_request_review", p, GitHubConfig(ANY))
    ],
    "github_issue_comment_created.json": lambda p: [
        normalize_github("issue_comment", p, GitHubConfig(ANY))
    ],
    "github_release_published.json": lambda p: [
        normalize_github("release", p, GitHubConfig(ANY, releases=True))
    ],
    "discord_message_create.json": lambda p: [normalize_discord(p, DiscordConfig(ANY))],
    "discourse_post_created_reply.json": lambda p: [
        normalize_discourse("post_created", p, DiscourseConfig(ANY), received_at=1.7e9)
    ],
    "pypi_project.json": lambda p: normalize_pypi(p, PyPIConfig("fuzz")),
}


@pytest.mark.parametrize("fixture", sorted(NORMALIZERS))
def test_mangled_payloads_never_raise(fixture: str, payload: Callable[[str], Any]) -> None:
    original = payload(fixture)
    normalize = NORMALIZERS[fixture]
    rng = random.Random(fixture)
    tally = Tally()
    for _ in range(300):
        for outcome in normalize(mangle(copy.deepcopy(original), rng)):
            assert isinstance(outcome, Normalized | Skipped)
            tally.add(outcome)
    # The mangling is mild enough that some payloads still work and some do not.
    assert tally.events
    assert tally.skipped or tally.malformed


@pytest.mark.parametrize("value", ODD_VALUES)
def test_odd_top_level_values_are_skipped(value: Any) -> None:
    for outcomes in (
        [normalize_github("issues", value, GitHubConfig(ANY))],
        [normalize_discord(value, DiscordConfig(ANY))],
        [normalize_discourse("post_created", value, DiscourseConfig(ANY))],
        normalize_pypi(value, PyPIConfig("fuzz")),
    ):
        assert all(isinstance(o, Skipped) for o in outcomes)
    config = ConferenceConfig(community="c", event="e")
    row = {"attendee_id": value, "volunteer_id": value, "rating": value, "scanned_at": value}
    for normalize in (normalize_scan, normalize_shift, normalize_feedback):
        assert isinstance(normalize(row, config), Normalized | Skipped)


def test_guarded_turns_an_unforeseen_error_into_a_malformed_skip() -> None:
    @guarded
    def explode(payload: object) -> Outcome:
        return Normalized(({"x": payload["missing"]},))  # type: ignore[index]

    out = explode({})
    assert isinstance(out, Skipped)
    assert (out.reason, out.malformed) == ("malformed_payload", True)
    assert out.detail == "KeyError while reading the payload"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-11-24T09:14:03Z", "2025-11-24T09:14:03Z"),
        ("2025-11-24T09:14:03.5+01:00", "2025-11-24T09:14:03.5+01:00"),
        (1795608000, "2026-11-25T12:00:00.000Z"),
        (1795608000123, "2026-11-25T12:00:00.123Z"),
        ("2025-11-24 09:14:03", None),  # naive, no zone given
        ("2025-02-30T00:00:00Z", None),
        ("yesterday", None),
        (True, None),
        (-5, None),
        (None, None),
    ],
)
def test_timestamps(value: Any, expected: str | None) -> None:
    assert timestamp(value) == expected
