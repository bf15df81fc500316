"""The thinnest vertical slice on the real stack: Kafka in, Redis counts, DLQ, /metrics."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.error import HTTPError
from urllib.request import urlopen

import pytest

from streams.periods import format_instant
from tests.conftest import INVALID_MESSAGES as INVALID
from tests.conftest import activity_dict
from tests.integration.conftest import Sandbox, Worker, metric_value, wait_for


def events(now: float) -> list[dict[str, Any]]:
    kinds = ["chat.message", "forum.post", "github.pr_merged", "event.checkin"]
    return [
        activity_dict(
            event_id=f"ok-{i}",
            type=kinds[i % 4],
            member_id=f"m{i % 7}",
            community=("pycon-us", "django")[i % 2],
            occurred_at=format_instant(now - i),
        )
        for i in range(40)
    ]


def redis_counts(sandbox: Sandbox, community: str) -> dict[str, int]:
    raw = sandbox.redis().hgetall(f"{sandbox.prefix}:{{{community}}}:counts")
    return {k: int(v) for k, v in raw.items()}


def test_valid_events_are_counted_invalid_ones_dead_lettered_and_metrics_exported(
    sandbox: Sandbox,
    start_worker: Callable[[], Worker],
) -> None:
    start_worker()
    valid = events(time.time())
    sandbox.send_events(valid)
    sandbox.send([(b"bad-key", value) for value, _ in INVALID])

    expected: dict[str, Counter[str]] = {"pycon-us": Counter(), "django": Counter()}
    for event in valid:
        expected[event["community"]][event["type"]] += 1
    wait_for(
        lambda: all(redis_counts(sandbox, c) == dict(e) for c, e in expected.items()),
        60,
        "the Redis counts to match the events sent",
    )

    letters = sandbox.read_topic(sandbox.dlq_topic, expected=len(INVALID))
    assert len(letters) == len(INVALID)
    by_value = {r.value: dict(r.headers) for r in letters}
    for value, reason in INVALID:
        assert by_value[value]["pulse-reason"].decode() == reason
        assert by_value[value]["pulse-detail"]
        assert by_value[value]["pulse-source-topic"].decode() == sandbox.activity_topic
    assert {r.key for r in letters} == {b"bad-key"}

    text = sandbox.metrics()
    for community, counts in expected.items():
        for kind, count in counts.items():
            assert (
                metric_value(text, "pulse_community_events_total", community=community, type=kind)
                == count
            )
    for reason, count in Counter(reason for _, reason in INVALID).items():
        assert metric_value(text, "pulse_events_invalid_total", reason=reason) == count
    assert metric_value(text, "pulse_processing_latency_seconds_count") == len(valid)

    # The worker's web server also serves the pages, from the same router as `pulse web`.
    member = valid[0]["member_id"]
    with urlopen(f"{sandbox.base_url}/c/pycon-us?period=all", timeout=10) as reply:  # noqa: S310
        assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
        assert "Leaderboard · all" in reply.read().decode()
    with urlopen(f"{sandbox.base_url}/static/pulse.css", timeout=10) as reply:  # noqa: S310
        assert reply.headers["Content-Type"] == "text/css; charset=utf-8"
    with pytest.raises(HTTPError) as missing:
        urlopen(f"{sandbox.base_url}/c/pycon-us/members/nobody-{member}", timeout=10)  # noqa: S310
    missing.value.close()
    assert missing.value.code == 404


def test_redelivered_events_change_nothing(
    sandbox: Sandbox,
    start_worker: Callable[[], Worker],
) -> None:
    start_worker()
    valid = events(time.time())
    sandbox.send_events(valid)
    wait_for(
        lambda: sum(redis_counts(sandbox, "pycon-us").values()) == 20, 60, "the first delivery"
    )
    before = {c: redis_counts(sandbox, c) for c in ("pycon-us", "django")}
    sandbox.send_events(valid)  # the same event_ids again
    wait_for(
        lambda: metric_value(sandbox.metrics(), "pulse_community_events_duplicate_total") == 40,
        60,
        "the redelivery to be recognised",
    )
    assert {c: redis_counts(sandbox, c) for c in ("pycon-us", "django")} == before
    assert metric_value(sandbox.metrics(), "pulse_community_events_total") == 40
