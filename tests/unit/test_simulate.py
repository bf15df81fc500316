"""The community simulator: deterministic, valid, and shaped like a real community."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from agents.cli import main
from streams.activity import InvalidActivity, parse_activity
from streams.simulation import (
    DAY,
    MALFORMED_KINDS,
    Malformed,
    Scenario,
    community_names,
    simulate,
)
from tests.conftest import NOON

SCENARIO = Scenario(now=NOON, members=400, days=28, events=20_000, seed=11, malformed_share=0.02)


def epoch(event: dict[str, Any]) -> float:
    return parse_activity(event, now=NOON, max_future_skew=0).occurred_at


@pytest.fixture(scope="module")
def lines() -> list[dict[str, Any] | Malformed]:
    return list(simulate(SCENARIO))


@pytest.fixture(scope="module")
def events(lines: list[dict[str, Any] | Malformed]) -> list[dict[str, Any]]:
    return [line for line in lines if isinstance(line, dict)]


def test_same_seed_same_lines_other_seed_other_lines() -> None:
    small = Scenario(now=NOON, members=50, days=5, events=800, seed=3)
    assert list(simulate(small)) == list(simulate(small))
    other = Scenario(now=NOON, members=50, days=5, events=800, seed=4)
    assert list(simulate(small)) != list(simulate(other))


def test_every_event_is_valid_unique_in_time_order_and_in_the_window(
    events: list[dict[str, Any]],
) -> None:
    stamps = [epoch(e) for e in events]  # parse_activity raises on any invalid event
    assert stamps == sorted(stamps)
    assert NOON - SCENARIO.days * DAY < stamps[0]
    assert stamps[-1] <= NOON
    assert len({e["event_id"] for e in events}) == len(events)
    assert all(e["event_id"].startswith("sim-11-") for e in events)


def test_the_volume_is_about_what_was_asked(events: list[dict[str, Any]]) -> None:
    assert 0.85 * SCENARIO.events <= len(events) <= 1.15 * SCENARIO.events


def test_malformed_lines_break_the_contract_each_in_its_own_way(
    lines: list[dict[str, Any] | Malformed],
) -> None:
    bad = [line for line in lines if isinstance(line, Malformed)]
    assert 0.01 <= len(bad) / len(lines) <= 0.03
    assert {b.kind for b in bad} == set(MALFORMED_KINDS)
    reasons = Counter()
    for line in bad:
        try:
            parse_activity(json.loads(line.line), now=NOON, max_future_skew=300)
        except json.JSONDecodeError:
            reasons["invalid_json"] += 1
        except InvalidActivity as exc:
            reasons[exc.reason] += 1
        else:
            pytest.fail(f"a malformed line passed validation: {line}")
    assert reasons["invalid_json"] > 0
    assert reasons["unknown_type"] > 0
    ids = {
        json.loads(b.line)["event_id"]
        for b in bad
        if b.kind not in ("invalid_json", "not_an_object")
    }
    assert all("-bad-" in i for i in ids)


def test_a_few_core_members_do_most_of_the_work(events: list[dict[str, Any]]) -> None:
    per_member = sorted(Counter(e["member_id"] for e in events).values(), reverse=True)
    top_tenth = per_member[: len(per_member) // 10]
    assert sum(top_tenth) / len(events) > 0.5
    assert per_member[len(per_member) // 2] < per_member[0] / 20  # a long tail


def test_weekdays_are_busier_than_weekends(events: list[dict[str, Any]]) -> None:
    per_day: Counter[int] = Counter()
    for e in events:
        if e["type"] == "chat.message" and e["community"] != "pycon-us":  # no conference
            per_day[int(epoch(e) // DAY)] += 1
    full_days = sorted(per_day)[1:-1]
    weekday = [per_day[d] for d in full_days if (d + 3) % 7 < 5]
    weekend = [per_day[d] for d in full_days if (d + 3) % 7 >= 5]
    assert sum(weekday) / len(weekday) > 1.5 * sum(weekend) / len(weekend)


def test_newcomers_join_and_some_members_drift_away(events: list[dict[str, Any]]) -> None:
    start = NOON - SCENARIO.days * DAY
    seen: dict[str, list[float]] = defaultdict(list)
    for e in events:
        seen[e["member_id"]].append(epoch(e))
    newcomers = [m for m, t in seen.items() if min(t) > start + 0.4 * SCENARIO.days * DAY]
    drifters = [
        m for m, t in seen.items() if len(t) >= 5 and max(t) < NOON - 0.3 * SCENARIO.days * DAY
    ]
    assert len(newcomers) >= 10
    assert len(drifters) >= 5


def test_the_conference_week(events: list[dict[str, Any]]) -> None:
    conference = [e for e in events if e["source"] == "conference"]
    kinds = Counter(e["type"] for e in conference)
    assert kinds["event.session_attended"] > kinds["event.checkin"] > kinds["feedback.submitted"]
    assert kinds["event.volunteer_shift"] > 0
    assert {e["community"] for e in conference} == {"pycon-us"}
    checkin_days = {e["occurred_at"][:10] for e in conference if e["type"] == "event.checkin"}
    assert 1 <= len(checkin_days) <= 3
    first_checkin = min(epoch(e) for e in conference if e["type"] == "event.checkin")
    ratings = [e["attributes"]["rating"] for e in conference if e["type"] == "feedback.submitted"]
    assert 3.5 < sum(ratings) / len(ratings) < 5
    feedback_times = [epoch(e) for e in conference if e["type"] == "feedback.submitted"]
    assert min(feedback_times) > first_checkin
    # One check-in per attendee per day.
    per_day = Counter(
        (e["member_id"], e["occurred_at"][:10]) for e in conference if e["type"] == "event.checkin"
    )
    assert max(per_day.values()) == 1


def test_github_flow_opened_reviewed_by_others_then_merged(events: list[dict[str, Any]]) -> None:
    opened: dict[tuple[str, str], dict[str, Any]] = {}
    for e in events:
        key = (e["community"], e.get("attributes", {}).get("thread_id", ""))
        if e["type"] == "github.pr_opened":
            opened[key] = e
        elif e["type"] in ("github.review_submitted", "github.pr_merged"):
            if key not in opened:  # opened before the simulated window
                assert epoch(e) < NOON - (SCENARIO.days - 5) * DAY
                continue
            pr = opened[key]
            assert epoch(pr) <= epoch(e)
            if e["type"] == "github.pr_merged":
                assert e["member_id"] == pr["member_id"]
            else:
                assert e["member_id"] != pr["member_id"]
    merged = sum(e["type"] == "github.pr_merged" for e in events)
    assert 0.3 * len(opened) < merged < len(opened)


def test_forum_questions_get_replies_and_accepted_answers(events: list[dict[str, Any]]) -> None:
    threads: dict[str, dict[str, Any]] = {}
    repliers: dict[str, set[str]] = defaultdict(set)
    accepted = 0
    for e in events:
        thread = e.get("attributes", {}).get("thread_id")
        if e["type"] == "forum.post":
            threads[thread] = e
        elif e["type"] == "forum.reply":
            repliers[thread].add(e["member_id"])
        elif e["type"] == "forum.answer_accepted":
            if thread not in threads:  # asked before the simulated window
                continue
            accepted += 1
            assert e["member_id"] != threads[thread]["member_id"]
            assert e["member_id"] in repliers[thread]
    assert accepted > 0.15 * len(threads)
    assert sum(1 for t in threads if repliers[t]) > 0.6 * len(threads)


def test_chat_floods_and_cross_posts(events: list[dict[str, Any]]) -> None:
    chat = [e for e in events if e["type"] == "chat.message"]
    by_member_channel: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    channels_per_hash: dict[tuple[str, str], set[str]] = defaultdict(set)
    for e in chat:
        by_member_channel[(e["community"], e["member_id"], e["channel"])].append(epoch(e))
        channels_per_hash[(e["member_id"], e["attributes"]["content_hash"])].add(e["channel"])

    def flooded(times: list[float]) -> bool:
        return any(times[i + 9] - times[i] < 300 for i in range(len(times) - 9))

    assert sum(flooded(t) for t in by_member_channel.values()) >= 5
    assert sum(len(c) >= 2 for c in channels_per_hash.values()) >= 10


def test_community_names_and_bad_scenarios() -> None:
    assert community_names(3) == ("pycon-us", "python-discord", "django-forum")
    assert len(set(community_names(40))) == 40
    with pytest.raises(ValueError, match="member"):
        Scenario(now=NOON, members=1)
    with pytest.raises(ValueError, match="malformed"):
        Scenario(now=NOON, malformed_share=0.9)


def read_lines(path: Any) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        yield from handle


def test_cli_writes_a_file_that_validate_agrees_with(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sim.jsonl"
    args = ["--communities", "2", "--members", "60", "--days", "4", "--events", "600"]
    args += ["--seed", "5", "--now", "2026-01-10T12:00:00Z", "--malformed", "0.05"]
    assert main(["simulate", *args, "--out", str(out)]) == 0
    summary = capsys.readouterr().err
    first = out.read_bytes()
    assert main(["simulate", *args, "--out", str(out)]) == 0
    assert out.read_bytes() == first  # same seed and --now: the same file
    assert main(["validate", str(out)]) == 3
    report = capsys.readouterr().out
    good = int(report.split(": ")[1].split(" valid")[0])
    assert f"simulate: {good} valid events" in summary
    assert report.startswith(f"{out}: {good} valid, ")
    assert good > 500
    communities = {
        orjson.loads(line)["community"] for line in read_lines(out) if b"-bad-" not in line
    }
    assert communities == {"pycon-us", "python-discord"}
