"""What evaluating an activity adds to its community's writes: counters, leaderboards,
windows, expiry, lateness, in-batch repeats and key safety."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from streams.activity import Activity
from streams.effects import APPLIED, DUPLICATE, CommunityWrites
from streams.evaluator import evaluate
from streams.keys import KeyLayout
from streams.policy import Policy, Retention
from streams.replay import Replay
from streams.state import MemberState
from tests.conftest import NOON

BASE = "pulse:{pycon-us}"
AT = NOON - 60  # make_activity's default occurred_at, 2026-11-25T11:59Z
DAY = int(NOON // 86400)
DAY_END = 1795651200  # 2026-11-26T00:00Z
WEEK_END = 1795996800  # Monday 2026-11-30T00:00Z
MONTH_END = 1796083200  # 2026-12-01T00:00Z
BOARDS = {
    f"{BASE}:lb:day:2026-11-25": ("day", DAY_END),
    f"{BASE}:lb:week:2026-W48": ("week", WEEK_END),
    f"{BASE}:lb:month:2026-11": ("month", MONTH_END),
    f"{BASE}:lb:all:all": ("all", None),
    f"{BASE}:lb:ch:general:week:2026-W48": ("week", WEEK_END),
    f"{BASE}:lb:ch:general:all:all": ("all", None),
}
MINUTE = int(AT // 60)
WINDOWS = {
    f"{BASE}:win:min:{MINUTE}": (MINUTE + 1) * 60,
    f"{BASE}:win:hour:{MINUTE // 60}": (MINUTE // 60 + 1) * 3600,
}


def evaluate_one(
    activity: Activity,
    stream_time: float = NOON,
    retention: Retention | None = None,
    points: dict[str, int] | None = None,
) -> tuple[int, CommunityWrites]:
    policy = Policy(
        points=points or {"chat.message": 1, "github.pr_merged": 15},
        retention=retention or Retention(),
    )
    out = CommunityWrites(KeyLayout("pulse", activity.community))
    code = evaluate(MemberState(), activity, policy, out, stream_time)
    return code, out


def test_a_chat_message_updates_counters_and_the_member(
    make_activity: Callable[..., Activity],
) -> None:
    code, out = evaluate_one(make_activity())
    assert code == APPLIED
    assert (out.codes, out.late) == ([APPLIED], [False])
    assert out.hincr[f"{BASE}:counts"] == {"chat.message": 1}
    assert out.hincr[f"{BASE}:counts:source"] == {"chat.message|discord": 1}
    assert out.hincr[f"{BASE}:events:day"] == {str(DAY): 1}
    assert out.active_days == {"alice": {DAY}}
    state = out.members["alice"]
    assert (state.points, state.events, state.by_type) == (1, 1, {"chat.message": 1})
    assert state.first_seen == state.last_seen == int(AT * 1000)


def test_an_event_moves_six_leaderboards_by_minus_its_points(
    make_activity: Callable[..., Activity],
) -> None:
    _, out = evaluate_one(make_activity(type="github.pr_merged"), points={"github.pr_merged": 40})
    assert out.zincr == {key: {"alice": -40} for key in BOARDS}


def test_an_event_without_a_channel_moves_no_channel_board(
    make_activity: Callable[..., Activity],
) -> None:
    _, out = evaluate_one(make_activity(channel=...))
    assert set(out.zincr) == {k for k in BOARDS if ":lb:ch:" not in k}


def test_windows_get_the_points_per_minute_hour_and_day(
    make_activity: Callable[..., Activity],
) -> None:
    _, out = evaluate_one(make_activity(), points={"chat.message": 3})
    windows = {k: v for k, v in out.hincr.items() if ":win:" in k}
    assert windows == {key: {"alice": 3} for key in WINDOWS}


RETENTION = Retention(day_seconds=100, week_seconds=200, month_seconds=300, window_seconds=400)
KEEP = {"day": 100, "week": 200, "month": 300}


@pytest.mark.parametrize(
    ("key", "expire_at"),
    [(key, None if end is None else end + KEEP[period]) for key, (period, end) in BOARDS.items()]
    + [(key, end + 400) for key, end in WINDOWS.items()],
)
def test_keys_expire_at_their_bucket_end_plus_retention(
    make_activity: Callable[..., Activity], key: str, expire_at: int | None
) -> None:
    _, out = evaluate_one(make_activity(), retention=RETENTION)
    assert out.expire.get(key) == expire_at


OLD = "2026-01-05T10:00:00Z"  # Monday of 2026-W02
OLD_TS = 1767607200
SHORT = Retention(
    day_seconds=86400, week_seconds=400 * 86400, month_seconds=86400, window_seconds=86400
)
OLD_BOARDS = {
    "day": f"{BASE}:lb:day:2026-01-05",
    "week": f"{BASE}:lb:week:2026-W02",
    "month": f"{BASE}:lb:month:2026-01",
    "all": f"{BASE}:lb:all:all",
    "ch-week": f"{BASE}:lb:ch:general:week:2026-W02",
    "ch-all": f"{BASE}:lb:ch:general:all:all",
}


OLD_WINDOWS = {
    "min": f"{BASE}:win:min:{OLD_TS // 60}",
    "hour": f"{BASE}:win:hour:{OLD_TS // 3600}",
}
ALL_BOARDS = list(OLD_BOARDS)
OLD_DAY_END = OLD_TS + 14 * 3600


@pytest.mark.parametrize(
    ("stream_time", "boards", "windows"),
    [
        # The stream is at the event, or just before its first bucket goes: nothing is late.
        (OLD_TS, ALL_BOARDS, ["min", "hour"]),
        (OLD_TS + 60 + 86400 - 1, ALL_BOARDS, ["min", "hour"]),
        # A bucket whose end plus retention is at or before the stream time is skipped.
        (OLD_TS + 60 + 86400, ALL_BOARDS, ["hour"]),
        # (The day's window bucket is its day leaderboard.)
        (OLD_DAY_END + 86400 - 1, ALL_BOARDS, []),
        (OLD_DAY_END + 86400, ["week", "month", "all", "ch-week", "ch-all"], []),
        # Months later: only the week (kept 400 days) and all time remain.
        (NOON, ["week", "all", "ch-week", "ch-all"], []),
    ],
)
def test_lateness_is_judged_against_the_stream_time(
    make_activity: Callable[..., Activity],
    stream_time: float,
    boards: list[str],
    windows: list[str],
) -> None:
    code, out = evaluate_one(make_activity(occurred_at=OLD), stream_time, SHORT)
    assert code == APPLIED
    assert out.late == [len(boards) + len(windows) < 8]
    assert set(out.zincr) == {OLD_BOARDS[b] for b in boards}
    assert {k for k in out.hincr if ":win:" in k} == {OLD_WINDOWS[w] for w in windows}
    written = [k for k in (*out.zincr, *out.hincr) if k in out.expire]
    assert all(out.expire[k] > stream_time for k in written)
    # A late event still counts for the member and the community.
    assert out.members["alice"].points == 1
    assert out.hincr[f"{BASE}:counts"] == {"chat.message": 1}


def test_a_repeated_event_id_in_a_batch_is_a_duplicate(
    make_activity: Callable[..., Activity],
) -> None:
    policy = Policy(points={"chat.message": 1})
    out = CommunityWrites(KeyLayout("pulse", "pycon-us"))
    state = MemberState()
    codes = [evaluate(state, make_activity(), policy, out, NOON) for _ in range(3)]
    assert codes == [APPLIED, DUPLICATE, DUPLICATE]
    assert out.codes == codes
    assert out.hincr[f"{BASE}:counts"] == {"chat.message": 1}
    assert out.zincr[f"{BASE}:lb:all:all"] == {"alice": -1}
    assert state.events == 1


def test_the_same_event_id_in_another_community_is_another_event(
    make_activity: Callable[..., Activity],
) -> None:
    replay = Replay(Policy(points={"chat.message": 1}))
    codes = replay.feed(
        [
            make_activity(event_id="a"),
            make_activity(event_id="b", community="django"),
            make_activity(event_id="a"),  # producer retry inside one batch
            make_activity(event_id="a", community="django"),
        ]
    )
    assert codes == [APPLIED, APPLIED, DUPLICATE, APPLIED]
    applied = {
        c: [a.event_id for a, code in zip(out.activities, out.codes, strict=True) if code]
        for c, out in replay.writes.items()
    }
    assert applied == {"pycon-us": ["a"], "django": ["b", "a"]}


def test_feedback_ratings_and_threads(make_activity: Callable[..., Activity]) -> None:
    policy = Policy()
    out = CommunityWrites(KeyLayout("pulse", "pycon-us"))
    state = MemberState()
    for activity in (
        make_activity(event_id="f", type="feedback.submitted", attributes={"rating": 4}),
        make_activity(event_id="t", type="forum.post", attributes={"thread_id": 7}),
        make_activity(event_id="r", type="forum.reply", attributes={"thread_id": "7"}),
    ):
        evaluate(state, activity, policy, out, NOON)
    assert out.hincr[f"{BASE}:feedback:day"] == {f"{DAY}:sum": 4, f"{DAY}:n": 1}
    expire_at = int(AT) + Retention().thread_seconds
    thread = f"{BASE}:thread:forum:7"
    assert out.threads == [
        ("open", thread, "alice", int(AT * 1000), expire_at),
        ("reply", thread, "alice", int(AT * 1000), expire_at),
    ]


def test_hostile_member_ids_stay_inside_their_own_keys(
    make_activity: Callable[..., Activity],
) -> None:
    evil: dict[str, Any] = {"member_id": "x}:{django}:member:bob", "channel": "* #general"}
    _, out = evaluate_one(make_activity(**evil))
    keys = [*out.zincr, *out.hincr, *out.expire]
    assert len(keys) > 10
    for key in keys:
        assert key.startswith(f"{BASE}:")
        assert "{django}" not in key
        assert " " not in key
        assert "*" not in key
