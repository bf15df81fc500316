"""Badge rules end to end through the evaluator (a :class:`Replay` of the events)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streams.activity import Activity, parse_activity
from streams.badges import CatalogError, award_id, default_catalog, load_catalog
from streams.policy import Policy
from streams.replay import Replay
from tests.conftest import activity_dict

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
NOW = datetime(2026, 11, 25, tzinfo=UTC).timestamp()

Award = tuple[str, str, str | None, str]


def events(
    kind: str,
    count: int,
    *,
    member: str = "alice",
    step: timedelta = timedelta(0),
    start: datetime = START,
    prefix: str | None = None,
    **extra: Any,
) -> list[Activity]:
    tag = prefix or kind
    return [
        parse_activity(
            activity_dict(
                event_id=f"{tag}-{member}-{i}",
                type=kind,
                member_id=member,
                occurred_at=(start + i * step).isoformat(),
                **extra,
            ),
            now=NOW,
            max_future_skew=300,
        )
        for i in range(count)
    ]


def replay(catalog: Any = None) -> Replay:
    return Replay(Policy(catalog=default_catalog() if catalog is None else catalog))


def awards(
    batch: Iterable[Activity], catalog: Any = None, into: Replay | None = None
) -> list[Award]:
    """The awards ``batch`` adds, as (member, badge, tier, evidence)."""
    run = into or replay(catalog)
    before = len(run.awards())
    run.feed(batch)
    return [
        (r["member_id"], r["badge"], r["tier"] or None, r["evidence"])
        for _, _, r in run.awards()[before:]
    ]


def test_first_merge_once() -> None:
    assert awards(events("github.pr_merged", 3)) == [
        ("alice", "first-merge", None, "github.pr_merged-alice-0")
    ]


def test_an_award_record_names_its_evidence_and_time() -> None:
    run = replay()
    run.feed(events("github.pr_merged", 2, step=timedelta(hours=1)))
    ((community, identity, record),) = run.awards()
    assert community == "pycon-us"
    assert identity == award_id("pycon-us", "alice", "first-merge", None)
    assert record == {
        "member_id": "alice",
        "badge": "first-merge",
        "tier": "",
        "at_ms": int(START.timestamp() * 1000),
        "evidence": "github.pr_merged-alice-0",
    }
    assert run.states[("pycon-us", "alice")].badges == {"first-merge": record["at_ms"]}


@pytest.mark.parametrize(
    ("count", "tiers"),
    [
        (4, []),
        (5, ["bronze"]),
        (24, ["bronze"]),
        (25, ["bronze", "silver"]),
        (100, ["bronze", "silver", "gold"]),
    ],
)
def test_helper_tiers_at_their_edges(count: int, tiers: list[str]) -> None:
    got = awards(events("forum.answer_accepted", count))
    assert [t for _, _, t, _ in got] == tiers
    thresholds = {"bronze": 5, "silver": 25, "gold": 100}
    for _, _, tier, evidence in got:
        assert evidence == f"forum.answer_accepted-alice-{thresholds[tier] - 1}"  # type: ignore[index]


def test_reviewer_tiers() -> None:
    assert [t for *_, t, _ in awards(events("github.review_submitted", 50))] == ["bronze", "silver"]


def test_conversationalist_needs_both_fifty_messages_and_five_days() -> None:
    one_day = events("chat.message", 60, step=timedelta(minutes=1))
    assert awards(one_day) == []
    spread = events("chat.message", 50, step=timedelta(hours=23))  # 50 msgs over ~48 days
    got = [a for a in awards(spread) if a[1] == "conversationalist"]
    assert got == [("alice", "conversationalist", None, "chat.message-alice-49")]
    four_days = events("chat.message", 80, step=timedelta(hours=1))  # 80 h = 4 UTC days
    assert awards(four_days) == []


def test_distinct_days_are_utc_days_even_with_offsets() -> None:
    def at(stamp: str, tag: str, count: int = 10) -> list[Activity]:
        return [
            parse_activity(
                activity_dict(event_id=f"{tag}-{i}", member_id="bob", occurred_at=stamp),
                now=NOW,
                max_future_skew=300,
            )
            for i in range(count)
        ]

    # Five local dates (10th..14th), but only four UTC days (11th..14th).
    batch = (
        at("2026-03-10T23:00:00-05:00", "a")
        + at("2026-03-11T01:00:00+00:00", "b")
        + at("2026-03-12T10:00:00Z", "c")
        + at("2026-03-13T10:00:00Z", "d")
        + at("2026-03-14T10:00:00Z", "e")
    )
    assert "conversationalist" not in [b for _, b, _, _ in awards(batch)]
    batch += at("2026-03-15T00:30:00+02:00", "f", 1)  # still the 14th in UTC
    assert "conversationalist" not in [b for _, b, _, _ in awards(batch)]
    batch += at("2026-03-14T23:30:00-02:00", "g", 1)  # the 15th in UTC: fifth day
    got = [a for a in awards(batch) if a[1] == "conversationalist"]
    assert got == [("bob", "conversationalist", None, "g-0")]


@pytest.mark.parametrize(
    ("start", "days"),
    [
        (datetime(2026, 1, 28, 12, tzinfo=UTC), 7),  # across a month end
        (datetime(2025, 12, 28, 12, tzinfo=UTC), 7),  # across a year end
    ],
)
def test_regular_streak_across_month_and_year_ends(start: datetime, days: int) -> None:
    batch = events("github.comment", days, step=timedelta(days=1), start=start)
    got = awards(batch)
    assert got == [("alice", "regular", None, f"github.comment-alice-{days - 1}")]


def test_a_gap_breaks_the_streak_and_late_events_can_fill_it() -> None:
    batch = events("forum.reply", 3, step=timedelta(days=1))
    batch += events(
        "forum.reply", 3, step=timedelta(days=1), start=START + timedelta(days=4), prefix="after"
    )
    run = replay()
    assert awards(batch, into=run) == []
    # Late: the stream is already three days past it.
    gap = events("forum.reply", 1, start=START + timedelta(days=3), prefix="gap")
    assert awards(gap, into=run) == [("alice", "regular", None, "gap-alice-0")]


def test_session_goer_counts_per_event_attribute() -> None:
    mixed = events("event.session_attended", 2, attributes={"event": "pycon"}, prefix="a") + events(
        "event.session_attended", 2, attributes={"event": "djangocon"}, prefix="b"
    )
    assert awards(mixed) == []
    third = events("event.session_attended", 3, attributes={"event": "pycon"}, prefix="c")
    assert awards(mixed + third) == [("alice", "session-goer", None, "c-alice-0")]
    assert awards(events("event.session_attended", 5)) == []  # no attributes.event at all


def test_event_crew_and_voice() -> None:
    batch = events("event.volunteer_shift", 2) + events("feedback.submitted", 1)
    assert [b for _, b, _, _ in awards(batch)] == ["event-crew", "voice"]


def test_redelivered_events_count_once() -> None:
    batch = events("forum.answer_accepted", 4)
    assert awards(batch + batch + batch) == []  # 4 distinct events, not 12


def test_members_are_counted_separately() -> None:
    batch = events("forum.answer_accepted", 3, member="a") + events(
        "forum.answer_accepted", 3, member="b"
    )
    assert awards(batch) == []


HELPER = """
[badges.helper]
tiers = {{ bronze = {}, silver = {}, gold = {} }}
when = [{{ kind = "count", type = "forum.answer_accepted" }}]
"""


def test_counters_only_exist_for_badges_in_the_catalog() -> None:
    run = replay(catalog=())
    assert awards(events("forum.answer_accepted", 30), into=run) == []
    run.policy = Policy(catalog=load_catalog(HELPER.format(5, 25, 100)))
    more = events("forum.answer_accepted", 1, prefix="more")
    assert awards(more, into=run) == []  # the counter starts now: 1


def test_a_lowered_threshold_awards_every_tier_passed_in_order() -> None:
    run = replay(catalog=load_catalog(HELPER.format(50, 100, 200)))
    assert awards(events("forum.answer_accepted", 30), into=run) == []
    run.policy = Policy(catalog=load_catalog(HELPER.format(5, 25, 100)))
    # The next event checks every tier: both passed ones, in order, on that event.
    more = events("forum.answer_accepted", 1, prefix="more")
    assert awards(more, into=run) == [
        ("alice", "helper", "bronze", "more-alice-0"),
        ("alice", "helper", "silver", "more-alice-0"),
    ]


def test_challenge_counts_only_inside_its_time_box() -> None:
    catalog = load_catalog("""
[badges.sprint-week]
name = "Sprint week"
[[badges.sprint-week.when]]
kind = "count"
type = "github.pr_merged"
at_least = 3
from = 2026-03-02T00:00:00Z
until = 2026-03-09T00:00:00Z
""")
    inside = events("github.pr_merged", 2, step=timedelta(days=2))
    outside = events("github.pr_merged", 3, start=START + timedelta(days=8), prefix="out")
    assert awards(inside + outside, catalog=catalog) == []
    third = events("github.pr_merged", 1, start=START + timedelta(days=6), prefix="in")
    assert awards(inside + outside + third, catalog=catalog) == [
        ("alice", "sprint-week", None, "in-alice-0")
    ]


def test_filters_on_channel_source_and_attributes() -> None:
    catalog = load_catalog("""
[badges.docs-helper]
[[badges.docs-helper.when]]
kind = "count"
type = "github.comment"
channel = "docs"
source = "github"
attributes = { label = "good-first-issue" }
at_least = 2
""")
    good: dict[str, Any] = {
        "channel": "docs",
        "source": "github",
        "attributes": {"label": "good-first-issue"},
    }
    wrong: dict[str, Any] = {
        "channel": "core",
        "source": "github",
        "attributes": {"label": "good-first-issue"},
    }
    batch = events("github.comment", 1, prefix="w", **wrong) + events(
        "github.comment", 1, prefix="g1", **good
    )
    assert awards(batch, catalog=catalog) == []
    batch += events("github.comment", 1, prefix="g2", **good)
    assert [b for _, b, _, _ in awards(batch, catalog=catalog)] == ["docs-helper"]


def test_award_ids_are_deterministic_and_distinct() -> None:
    one = award_id("pycon-us", "alice", "helper", "bronze")
    assert one == award_id("pycon-us", "alice", "helper", "bronze")
    others = {
        award_id("pycon-us", "alice", "helper", "silver"),
        award_id("django", "alice", "helper", "bronze"),
        award_id("pycon-us", "bob", "helper", "bronze"),
        award_id("pycon-us", "alice", "reviewer", "bronze"),
    }
    assert one not in others
    assert len(others) == 4


def test_default_catalog_is_exactly_the_published_one() -> None:
    table = {
        b.id: (
            [(t.name, t.at_least) for t in b.tiers],
            [(c.kind, c.filter.type, c.at_least, c.same) for c in b.conditions],
        )
        for b in default_catalog()
    }
    assert table == {
        "first-merge": ([(None, 1)], [("count", "github.pr_merged", 1, None)]),
        "helper": (
            [("bronze", 5), ("silver", 25), ("gold", 100)],
            [("count", "forum.answer_accepted", 0, None)],
        ),
        "reviewer": (
            [("bronze", 10), ("silver", 50), ("gold", 200)],
            [("count", "github.review_submitted", 0, None)],
        ),
        "conversationalist": (
            [(None, 50)],
            [("count", "chat.message", 50, None), ("distinct_days", "chat.message", 5, None)],
        ),
        "regular": ([(None, 7)], [("streak", None, 7, None)]),
        "session-goer": ([(None, 3)], [("count", "event.session_attended", 3, "event")]),
        "event-crew": ([(None, 1)], [("count", "event.volunteer_shift", 1, None)]),
        "voice": ([(None, 1)], [("count", "feedback.submitted", 1, None)]),
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[badges.x]\nwhen = []", "at least one condition"),
        ("[badges.X]\nwhen = [{kind='first', type='chat.message'}]", "badge id"),
        ("[badges.x]\nwhen = [{kind='sometimes'}]", "kind must be one of"),
        ("[badges.x]\nwhen = [{kind='count', type='chat.shout', at_least=1}]", "not an activity"),
        ("[badges.x]\nwhen = [{kind='count', type='chat.message'}]", "at_least must be"),
        (
            "[badges.x]\nwhen = [{kind='count', type='chat.message', at_least=0}]",
            "at_least must be",
        ),
        (
            "[badges.x]\ntiers = {gold = 10, silver = 5}\n"
            "when = [{kind='count', type='chat.message'}]",
            "strictly increasing",
        ),
        ("[badges.x]\nwhen = [{kind='first', type='chat.message', at_least=2}]", "no at_least"),
        (
            "[badges.x]\nwhen = [{kind='count', type='chat.message', at_least=1, colour='red'}]",
            "unknown key 'colour'",
        ),
        (
            "[badges.x]\nwhen = [{kind='count', type='chat.message', at_least=1, "
            "from=2026-01-02T00:00:00Z, until=2026-01-01T00:00:00Z}]",
            "until must be after",
        ),
        (
            "[badges.x]\nwhen = [{kind='count', type='chat.message', at_least=1, "
            "from=2026-01-02T00:00:00}]",
            "offset",
        ),
        ("[badges.x]\nwhen = [{kind='streak', at_least=1, same='attributes.e'}]", "same must be"),
        ("badges = 3", "[badges.<id>]"),
        ("[badges.x\n", "not valid TOML"),
    ],
)
def test_bad_catalogs_are_explained(text: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_catalog(text)
