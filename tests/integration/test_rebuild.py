"""``pulse rebuild`` on the real stack: wipe Redis, rebuild from the input topic, compare
with the state a real worker left; one community alone; a scoring change."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from streams.scoring import DEFAULT_POINTS
from streams.simulation import generate
from tests.faults.guarantees import comparable, snapshot
from tests.integration.conftest import Sandbox, Worker, metric_value, wait_for

COMMUNITIES = ("pycon-us", "python-discord", "django-forum")
COUNT = 3000


@pytest.fixture
def processed(
    sandbox: Sandbox, start_worker: Callable[[], Worker]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A worker's state after COUNT events (some twice), the worker stopped."""
    worker = start_worker()
    events = list(
        generate(COUNT, now=time.time(), seed=5, span_seconds=3 * 86400, communities=COMMUNITIES)
    )
    sandbox.send_events(events + events[:200])  # with redeliveries
    sandbox.send([(b"bad", b"{oops")])

    def done() -> bool:
        text = sandbox.metrics()
        return (
            metric_value(text, "pulse_community_events_total")
            + metric_value(text, "pulse_community_events_moderated_total")
            == COUNT
        )

    wait_for(done, 120, f"{COUNT} events to be applied")
    refused = sandbox.pulse("rebuild", "--all", "--from-beginning")
    assert refused.returncode == 1
    assert "worker(s) are consuming" in refused.stderr
    assert worker.stop() == 0
    return events, snapshot(sandbox.redis(), sandbox.prefix)


def wipe(sandbox: Sandbox, pattern: str) -> int:
    client = sandbox.redis()
    keys = list(client.scan_iter(match=f"{sandbox.prefix}:{pattern}", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    return len(keys)


def rebuild(sandbox: Sandbox, *args: str) -> dict[str, Any]:
    done = sandbox.pulse("rebuild", *args, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = orjson.loads(done.stdout)
    return report


def test_wiping_redis_and_rebuilding_gives_back_the_same_state(
    sandbox: Sandbox, processed: tuple[list[dict[str, Any]], dict[str, Any]]
) -> None:
    events, before = processed
    assert wipe(sandbox, "*") == len(before)
    report = rebuild(sandbox, "--all", "--from-beginning")
    assert comparable(snapshot(sandbox.redis(), sandbox.prefix)) == comparable(before)
    assert report["records_read"] == COUNT + 200 + 1
    assert sum(report["duplicates"].values()) == 200
    assert report["invalid"] == {"invalid_json": 1}
    # Every award was published by the worker already: none is published again.
    assert report["awards_published"] == 0
    assert report["awards_already_published"] == sum(
        len(v) for k, v in before.items() if k.endswith(":awards")
    )
    print(report)


def test_a_rebuild_creates_a_missing_awards_topic_and_announces_there(
    sandbox: Sandbox, processed: tuple[list[dict[str, Any]], dict[str, Any]]
) -> None:
    # A producer waits a minute per message for a topic that does not exist: the
    # rebuild creates its output topics first, as a worker does.
    _, before = processed
    topic = f"{sandbox.prefix}.awards-moved"
    done = subprocess.run(
        [sys.executable, "-m", "agents", "rebuild", "--all", "--from-beginning", "--json"],
        env=sandbox.env | {"PULSE_TOPIC_AWARDS": topic},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = orjson.loads(done.stdout)
    awards = sum(len(v) for k, v in before.items() if k.endswith(":awards"))
    assert awards > 0
    assert (report["awards_published"], report["awards_already_published"]) == (awards, 0)


def test_rebuilding_one_community_leaves_the_others_alone(
    sandbox: Sandbox, processed: tuple[list[dict[str, Any]], dict[str, Any]]
) -> None:
    _, before = processed
    wipe(sandbox, "{pycon-us}:*")
    client = sandbox.redis()
    client.zincrby(f"{sandbox.prefix}:{{django-forum}}:lb:all:all", -1000, "intruder")
    report = rebuild(sandbox, "--community", "pycon-us", "--from-beginning")
    assert report["communities"] == ["pycon-us"]
    assert set(report["applied"]) == {"pycon-us"}
    after = snapshot(client, sandbox.prefix)
    assert after[":{django-forum}:lb:all:all"].pop("intruder") == -1000
    assert comparable(after) == comparable(before)


def test_a_rebuild_applies_a_new_scoring_table_to_past_events(
    sandbox: Sandbox, processed: tuple[list[dict[str, Any]], dict[str, Any]]
) -> None:
    events, before = processed
    new = {"chat.message": 7, "forum.post": 0}
    done = subprocess.run(
        [sys.executable, "-m", "agents", "rebuild", "--all", "--from-beginning", "--json"],
        env=sandbox.env | {"PULSE_POINTS": "chat.message=7,forum.post=0"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = sandbox.redis()
    changed = 0
    for community in COMMUNITIES:
        key = f"{{{community}}}:lb:all:all"
        old = {m: -int(s) for m, s in before[f":{key}"].items()}
        board = {
            m: -int(s) for m, s in client.zrange(f"{sandbox.prefix}:{key}", 0, -1, withscores=True)
        }
        distinct = {e["event_id"]: e for e in events if e["community"] == community}
        for member, score in old.items():
            kinds = Counter(e["type"] for e in distinct.values() if e["member_id"] == member)
            others = {t: n for t, n in kinds.items() if t != "chat.message"}
            # Chat messages over the moderation limit earn nothing, with any table: the
            # old score tells how many of this member's messages counted.
            chats = score - sum(DEFAULT_POINTS[t] * n for t, n in others.items())
            assert 0 <= chats <= kinds["chat.message"]
            want = new["chat.message"] * chats + sum(
                new.get(t, DEFAULT_POINTS[t]) * n for t, n in others.items()
            )
            assert board.get(member, 0) == want, (community, member)
            changed += want != score
    assert changed > 0


def test_a_missing_input_topic_is_refused_before_anything_is_wiped(sandbox: Sandbox) -> None:
    client = sandbox.redis()
    key = f"{sandbox.prefix}:{{pycon-us}}:lb:all:all"
    client.zadd(key, {"ann": -5})
    done = subprocess.run(
        [sys.executable, "-m", "agents", "rebuild", "--all", "--from-beginning"],
        env=sandbox.env | {"PULSE_TOPIC_ACTIVITY": f"{sandbox.prefix}.no-such-topic"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "no-such-topic' does not exist" in done.stderr
    assert "Traceback" not in done.stderr
    assert client.zscore(key, "ann") == -5
