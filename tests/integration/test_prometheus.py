"""The Grafana dashboards and the alert rules on a real Prometheus.

A dedicated ``prometheus`` process (loopback, free port, temporary storage) loads
deploy/prometheus/alerts.yml and scrapes this test's worker every second. After a
generated community's events go through Kafka and Redis, every PromQL expression of
every panel of both dashboards returns data from Prometheus' HTTP API, every alert rule
evaluates without error, and chosen community-health gauges equal the values computed
here from the events themselves.

The events come in two rounds, and Prometheus scrapes the first round's results before
the second is published: counters first appear with their first value, which ``rate()``
cannot see, so it is the second round that makes the rate panels move.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlencode
from urllib.request import urlopen

import pytest
import yaml

from streams.periods import format_instant
from streams.simulation import generate
from tests.integration.conftest import Sandbox, Worker, free_port, metric_value, wait_for

ROOT = Path(__file__).parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
COMMUNITY = "pycon-us"
DAY = 86400
# What Grafana would put in for its interval macros on a short time range.
MACROS = {"$__rate_interval": "30s", "$__interval": "30s", "$__range": "1h"}


@dataclass
class Prometheus:
    """A prometheus server of this test's own, stopped by its pid."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urlencode(params)}" if params else ""
        with urlopen(f"{self.url}{path}{query}", timeout=10) as response:  # noqa: S310
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        return list(data["result"])

    def value(self, expr: str) -> float:
        (sample,) = self.query(expr)
        return float(sample["value"][1])

    def by_label(self, expr: str, label: str) -> dict[str, float]:
        return {s["metric"][label]: float(s["value"][1]) for s in self.query(expr)}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture
def prometheus(sandbox: Sandbox, tmp_path: Path) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: run `bash deploy/local/stack.sh install`")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {
                "job_name": "community-pulse",
                "static_configs": [{"targets": [f"127.0.0.1:{sandbox.web_port}"]}],
            }
        ],
    }
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Prometheus(process, f"http://127.0.0.1:{port}", log_path)

    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited with {process.returncode}:\n{server.log()}")
        try:
            with urlopen(f"{server.url}/-/ready", timeout=2) as response:  # noqa: S310
                return bool(response.status == 200)
        except (URLError, OSError):
            return False

    try:
        wait_for(ready, 30, "prometheus to be ready")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def chat(event_id: str, member: str, channel: str, at: float, content: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "chat.message",
        "member_id": member,
        "community": COMMUNITY,
        "source": "discord",
        "channel": channel,
        "occurred_at": format_instant(at),
        "attributes": {"content_hash": content},
    }


def thread(
    tag: str, kind: str, asker: str, helper: str, at: float, wait: float
) -> list[dict[str, Any]]:
    """A forum post or GitHub issue and its first reply by someone else ``wait`` s later."""
    opener, reply, source = {
        "forum": ("forum.post", "forum.reply", "discourse"),
        "github": ("github.issue_opened", "github.comment", "github"),
    }[kind]
    return [
        {
            "event_id": f"{tag}-{kind}-{i}",
            "type": kind_type,
            "member_id": member,
            "community": COMMUNITY,
            "source": source,
            "channel": "q-and-a" if kind == "forum" else "core",
            "occurred_at": format_instant(when),
            "attributes": {"thread_id": f"{tag}-{kind}"},
        }
        for i, (kind_type, member, when) in enumerate(
            ((opener, asker, at), (reply, helper, at + wait))
        )
    ]


def first_round(now: float) -> tuple[list[list[dict[str, Any]]], set[str]]:
    """Generated activity over 20 days plus what generate() does not make: answered
    threads, a flood, a cross-post and a member last seen 40 days ago (a late event).
    Returns the events in waves, and the ids of those over a moderation limit."""
    events = list(
        generate(
            1200,
            now=now,
            seed=11,
            span_seconds=20 * DAY,
            communities=(COMMUNITY,),
            members=150,
        )
    )
    forum = thread("r1", "forum", "asker-1", "helper-1", now - 3 * 3600, 100)
    github = thread("r1", "github", "asker-2", "helper-1", now - 2 * 3600, 250)
    # 12 messages in 22 s in one channel: the 11th and 12th follow 10 within 60 s.
    flood = [
        chat(f"flood-{i}", "flooder", "general", now - 3600 + 2 * i, f"f{i:04x}") for i in range(12)
    ]
    # The same content in a third channel within 5 minutes.
    cross = [
        chat(f"cross-{i}", "cross-poster", channel, now - 1800 + 10 * i, "5ame-c0ntent")
        for i, channel in enumerate(("general", "help", "web-dev"))
    ]
    old = {
        "event_id": "old",
        "type": "package.released",
        "member_id": "old-timer",
        "community": COMMUNITY,
        "source": "pypi",
        "occurred_at": format_instant(now - 40 * DAY),
    }
    return (
        [[*events, *flood, *cross, old, forum[0], github[0]], [forum[1], github[1]]],
        {"flood-10", "flood-11", "cross-2"},
    )


def second_round(now: float) -> list[list[dict[str, Any]]]:
    events = list(
        generate(
            300,
            now=now,
            seed=12,
            span_seconds=2 * DAY,
            communities=(COMMUNITY,),
            members=150,
        )
    )
    forum = thread("r2", "forum", "asker-3", "helper-2", now - 1200, 150)
    github = thread("r2", "github", "asker-3", "helper-1", now - 900, 200)
    return [[*events, forum[0], github[0]], [forum[1], github[1]]]


INVALID = (b"{not json", b"[1, 2]", b'{"event_id": "x"}')


def epoch_ms(event: dict[str, Any]) -> int:
    return round(datetime.fromisoformat(event["occurred_at"]).timestamp() * 1000)


class Expected:
    """Community-health figures computed from the events, as the issue defines them."""

    def __init__(self, live: list[dict[str, Any]]) -> None:
        self.events = live
        self.first_seen: dict[str, int] = {}
        self.last_seen: dict[str, int] = {}
        for event in live:
            member, at = event["member_id"], epoch_ms(event)
            self.first_seen[member] = min(at, self.first_seen.get(member, at))
            self.last_seen[member] = max(at, self.last_seen.get(member, at))

    def active(self, days: int, at: float) -> int:
        since = int(at * 1000) - days * DAY * 1000
        return sum(1 for seen in self.last_seen.values() if seen > since)

    def new(self, days: int, at: float) -> int:
        since = int(at * 1000) - days * DAY * 1000
        return sum(1 for seen in self.first_seen.values() if seen > since)

    def by_type(self) -> dict[str, float]:
        return {k: float(v) for k, v in Counter(e["type"] for e in self.events).items()}


def consumed(sandbox: Sandbox) -> float:
    text = sandbox.metrics()
    return sum(
        metric_value(text, name)
        for name in (
            "pulse_community_events_total",
            "pulse_community_events_moderated_total",
            "pulse_community_events_duplicate_total",
            "pulse_events_invalid_total",
        )
    )


class Publisher:
    """Sends waves of records and waits until the worker has consumed each one, then
    until Prometheus has scraped the result."""

    def __init__(self, sandbox: Sandbox, prometheus: Prometheus) -> None:
        self.sandbox = sandbox
        self.prometheus = prometheus
        self.sent = 0

    def wave(self, events: list[dict[str, Any]], invalid: tuple[bytes, ...] = ()) -> None:
        self.sandbox.send_events(events)
        self.sandbox.send([(b"bad", value) for value in invalid])
        self.sent += len(events) + len(invalid)
        wait_for(lambda: consumed(self.sandbox) == self.sent, 60, "the worker to catch up")

    def scraped(self) -> None:
        total = metric_value(self.sandbox.metrics(), "pulse_community_events_total")
        wait_for(
            lambda: self.prometheus.query(f"sum(pulse_community_events_total) == {total}") != [],
            15,
            "prometheus to scrape the worker's latest figures",
        )


def test_every_dashboard_query_returns_data_and_the_gauges_match_the_events(
    sandbox: Sandbox,
    start_worker: Callable[[], Worker],
    prometheus: Prometheus,
    tmp_path: Path,
) -> None:
    sandbox.extra_env["PULSE_PYPI_PACKAGES"] = f"requests={COMMUNITY},Flask={COMMUNITY}"
    start_worker()
    wait_for(
        lambda: prometheus.query('up{job="community-pulse"} == 1') != [],
        30,
        "prometheus to scrape the worker",
    )
    # Two weeks of PyPI downloads (a BigQuery export), imported twice: the same figures.
    newest = int(time.time() // 86400) - 1
    rows = [(newest - back, "requests", 1000 if back >= 7 else 400) for back in range(14)]
    rows.append((newest, "flask", 50))
    export = tmp_path / "downloads.csv"
    export.write_text(
        "date,project,downloads\n"
        + "".join(
            f"{time.strftime('%Y-%m-%d', time.gmtime(day * 86400))},{name},{n}\n"
            for day, name, n in rows
        )
    )
    for _ in range(2):
        imported = sandbox.pulse("import", "pypi-downloads", str(export))
        assert imported.returncode == 0, imported.stderr
    assert "imported 15 day(s) of 2 package(s): flask, requests" in imported.stdout
    publish = Publisher(sandbox, prometheus)
    # Replies go in a wave after their threads: the two members' events travel on
    # different partitions, so a reply sent together with its thread may be applied
    # before it.
    round1, moderated = first_round(time.time())
    publish.wave(round1[0], INVALID)
    publish.wave(round1[1])
    publish.scraped()
    round2 = second_round(time.time())
    duplicates = round1[0][:25]
    publish.wave(round2[0] + duplicates, INVALID)
    publish.wave(round2[1])
    publish.scraped()
    wait_for(
        lambda: prometheus.query("pulse_consumer_lag_messages") != [],
        15,
        "the worker's first consumer-lag measurement",
    )

    # Every panel of both dashboards, as Grafana would ask for it: with one community
    # chosen, and (where the variable allows several) with "All" (Grafana's `.*`).
    queries: list[tuple[str, str]] = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                choices = [COMMUNITY]
                if '=~"$community"' in target["expr"]:
                    choices.append(".*")
                for community in choices:
                    expr = target["expr"].replace("$community", community)
                    for macro, value in MACROS.items():
                        expr = expr.replace(macro, value)
                    assert "$" not in expr, expr
                    queries.append((f"{board['title']} / {panel['title']}", expr))
    assert len(queries) >= 60

    def without_data() -> list[str]:
        empty = []
        for title, expr in queries:
            values = [float(s["value"][1]) for s in prometheus.query(expr)]
            if not any(not math.isnan(v) for v in values):
                empty.append(f"{title}: {expr} -> {values}")
        return empty

    # A rate needs two scrapes (5 s apart) of a series after it appeared: a dashboard
    # refreshed a few seconds after the burst shows every panel.
    deadline = time.monotonic() + 20
    while (empty := without_data()) and time.monotonic() < deadline:
        time.sleep(2)
    assert empty == [], "panels without data:\n" + "\n".join(empty)

    # Every alert rule loaded and evaluated without error on the real series.
    groups = prometheus.get("/api/v1/rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == sum(len(g["rules"]) for g in yaml.safe_load(ALERTS.read_text())["groups"])
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []

    # Chosen gauges against the events: unique event ids, moderated ones left out.
    unique = {e["event_id"]: e for wave in round1 + round2 for e in wave}
    live = [e for i, e in unique.items() if i not in moderated]
    expected = Expected(live)
    selector = f'community="{COMMUNITY}"'
    assert prometheus.value(f"max(pulse_community_members{{{selector}}})") == len(
        expected.last_seen
    )
    assert prometheus.by_label(
        f"sum by (type) (pulse_community_events_total{{{selector}}})",
        "type",
    ) == pytest.approx(expected.by_type())
    active = f'pulse_community_active_members{{{selector}, window="7d"}}'
    scraped_at = prometheus.value(f"max(timestamp({active}))")
    # The worker reads its clock just after the scrape starts; a member whose last
    # event sits right on the 7-day boundary may fall either side.
    assert (
        expected.active(7, scraped_at + 1)
        <= prometheus.value(f"max({active})")
        <= expected.active(7, scraped_at)
    )
    assert expected.active(7, scraped_at) < len(expected.last_seen)
    assert prometheus.value(
        f'max(pulse_community_new_members{{{selector}, window="30d"}})'
    ) == expected.new(30, scraped_at)
    assert prometheus.value(f"max(pulse_community_inactive_members{{{selector}}})") == (
        len(expected.last_seen) - expected.active(30, scraped_at)
    )
    ratings = [e["attributes"]["rating"] for e in live if e["type"] == "feedback.submitted"]
    assert ratings
    assert prometheus.value(f"max(pulse_community_feedback_responses{{{selector}}})") == len(
        ratings
    )
    assert prometheus.value(
        f"max(pulse_community_feedback_rating_avg{{{selector}}})"
    ) == pytest.approx(sum(ratings) / len(ratings))
    assert prometheus.by_label(
        f"max by (kind) (pulse_community_first_response_seconds_count{{{selector}}})", "kind"
    ) == {"forum": 2.0, "github": 2.0}
    assert prometheus.by_label(
        f"sum by (rule) (pulse_community_moderation_flags_total{{{selector}}})", "rule"
    ) == {"flood": 1.0, "cross-post": 1.0}
    assert prometheus.value("sum(pulse_community_events_moderated_total)") == len(moderated)
    assert prometheus.value("sum(pulse_community_events_duplicate_total)") == len(duplicates)
    assert prometheus.value("sum(pulse_events_invalid_total)") == 2 * len(INVALID)
    assert prometheus.value("sum(pulse_community_events_late_total)") == 1
    assert prometheus.by_label(
        f'max by (package) (pulse_package_downloads{{{selector}, window="7d"}})', "package"
    ) == {"requests": 2800.0, "flask": 50.0}
    assert prometheus.value(
        f'max(pulse_package_downloads_week_over_week{{{selector}, package="requests"}})'
    ) == pytest.approx(-0.6)
