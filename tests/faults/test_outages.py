"""Outages seen from outside: the ingest server during a Kafka outage and the worker's
HTTP API and ``/metrics`` during a Redis outage answer fast and honestly."""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import orjson
import pytest

from streams.periods import format_instant
from tests.faults.conftest import ROOT, Lab, WorkerProcess, make_stream, metric_value, wait_for
from tests.faults.servers import free_port

FIXTURES = ROOT / "tests" / "unit" / "sources" / "fixtures"
SECRET = "fault-secret"
LOG_LINE = re.compile(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ", re.MULTILINE)


def request(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], float]:
    """(status, JSON body, seconds taken)."""
    started = time.monotonic()
    req = Request(url, data=body, headers=headers or {}, method="POST" if body else "GET")  # noqa: S310
    try:
        with urlopen(req, timeout=30) as response:  # noqa: S310 - loopback
            status, raw = response.status, response.read()
    except HTTPError as error:
        status, raw = error.code, error.read()
    return status, orjson.loads(raw), time.monotonic() - started


def github_delivery() -> tuple[bytes, dict[str, str]]:
    payload = orjson.loads((FIXTURES / "github_issues_opened.json").read_bytes())
    payload["issue"]["created_at"] = format_instant(time.time() - 60)
    body = orjson.dumps(payload)
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {
        "Content-Type": "application/json",
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": signature,
    }


@dataclass
class IngestServer:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log_lines(self) -> int:
        return len(LOG_LINE.findall(self.log_path.read_bytes()))


@pytest.fixture
def ingest_server(lab: Lab) -> Iterator[IngestServer]:
    port = free_port()
    log_path = lab.root / "ingest-server.log"
    env = lab.env(
        PULSE_GITHUB_WEBHOOK_SECRET=SECRET,
        PULSE_GITHUB_COMMUNITIES="pycon=pycon-us",
        PULSE_INGEST_PORT=str(port),
        PULSE_INGEST_TOPICS=f"github={lab.activity_topic}",
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "agents", "ingest-server"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = IngestServer(process, f"http://127.0.0.1:{port}", log_path)

    def ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"ingest-server exited:\n{log_path.read_text()[-3000:]}")
        try:
            with urlopen(f"{server.url}/healthz", timeout=2) as response:  # noqa: S310
                return bool(response.status == 200)
        except OSError:
            return False

    wait_for(ready, 60, "the ingest server to answer")
    yield server
    if process.poll() is None:
        process.kill()
        process.wait(10)


def test_a_webhook_during_a_kafka_outage_gets_503_json_fast_and_sigterm_exits(
    lab: Lab, ingest_server: IngestServer
) -> None:
    status, body, _ = request(f"{ingest_server.url}/ingest/github", *github_delivery())
    assert status == 202, body
    lab.stack.broker.stop()
    outage_started = time.monotonic()
    lines_before = ingest_server.log_lines()
    answers = [request(f"{ingest_server.url}/ingest/github", *github_delivery()) for _ in range(3)]
    for status, body, seconds in answers:
        assert status == 503, body
        assert body["status"] == 503
        assert "redeliver" in body["error"]
        # The bound is 5 s (GitHub gives up after 10 s); the server's is 3 s.
        assert seconds < 5.0, f"the 503 took {seconds:.1f}s"
    time.sleep(max(0.0, 10 - (time.monotonic() - outage_started)))
    seconds_down = time.monotonic() - outage_started
    rate = (ingest_server.log_lines() - lines_before) / seconds_down
    print(f"503 after {[round(a[2], 2) for a in answers]} s; {rate:.1f} log lines/s")
    # One line per second per dependency, plus one warning per refused webhook.
    assert rate <= 2.0, ingest_server.log_path.read_text()[-3000:]
    started = time.monotonic()
    ingest_server.process.terminate()
    code = ingest_server.process.wait(30)
    seconds = time.monotonic() - started
    print(f"SIGTERM to exit with Kafka down: {seconds:.1f}s (exit code {code})")
    assert seconds < 15, f"SIGTERM took {seconds:.1f}s (grace 10 s)"
    lab.stack.broker.start()


def test_the_api_answers_503_json_and_metrics_stay_stale_while_redis_is_down(lab: Lab) -> None:
    worker = lab.start_worker()
    lab.send(make_stream(300, seed=31, now=time.time()))
    lab.wait_caught_up()
    base = f"http://127.0.0.1:{worker.web_port}"
    text = worker.metrics()
    assert metric_value(text, "pulse_community_health_stale") == 0
    communities = set(re.findall(r'pulse_community_members\{community="([^"]+)"\}', text))
    assert communities
    community = sorted(communities)[0]
    status, _, _ = request(f"{base}/api/v1/communities/{community}/leaderboards/all")
    assert status == 200
    lab.stack.redis.stop()
    try:
        status, body, seconds = request(f"{base}/api/v1/communities/{community}/leaderboards/all")
        assert status == 503, body
        assert body["status"] == 503
        assert "Redis" in body["error"]
        assert seconds < 10
        status, body, _ = request(f"{base}/api/v1/communities/{community}/members/nobody")
        assert status == 503, body
        wait_for(
            lambda: metric_value(worker.metrics(), "pulse_redis_up") == 0,
            20,
            "pulse_redis_up to drop to 0",
        )
        text = worker.metrics()
        assert metric_value(text, "pulse_community_health_stale") == 1
        # The figures are kept, marked stale, instead of vanishing.
        stale = set(re.findall(r'pulse_community_members\{community="([^"]+)"\}', text))
        assert stale == communities
        assert "Traceback" not in worker.log()
    finally:
        lab.stack.redis.start()
    wait_for(
        lambda: metric_value(worker.metrics(), "pulse_community_health_stale") == 0,
        30,
        "fresh community-health figures",
    )


def worker_log_lines(worker: WorkerProcess) -> int:
    return sum(1 for line in worker.log().splitlines() if line.startswith("[20"))


def test_a_kafka_outage_shows_in_the_metrics_logs_stay_quiet_and_sigterm_exits(lab: Lab) -> None:
    worker = lab.start_worker()
    lab.send(make_stream(300, seed=41, now=time.time()))
    lab.wait_caught_up()
    wait_for(
        lambda: metric_value(worker.metrics(), "pulse_kafka_up") == 1,
        20,
        "the Kafka probe to succeed",
    )
    text = worker.metrics()
    assert metric_value(text, "pulse_redis_up") == 1
    assert metric_value(text, "pulse_build_info") == 1
    assert metric_value(text, "process_resident_memory_bytes") > 0
    assert metric_value(text, "pulse_last_applied_batch_age_seconds") < 60
    lab.stack.broker.stop()
    down = time.monotonic()
    wait_for(
        lambda: metric_value(worker.metrics(), "pulse_kafka_up") == 0,
        20,
        "pulse_kafka_up to drop to 0",
    )
    print(f"pulse_kafka_up 0 after {time.monotonic() - down:.1f}s")
    text = worker.metrics()
    assert math.isnan(metric_value(text, "pulse_consumer_lag_messages")), "lag must be unknown"
    lines_before, started = worker_log_lines(worker), time.monotonic()
    time.sleep(15)
    rate = (worker_log_lines(worker) - lines_before) / (time.monotonic() - started)
    print(f"worker log lines/s with Kafka down: {rate:.2f}")
    # At most one line per second per dependency (and the worker's own few).
    assert rate <= 2.0, worker.log()[-4000:]
    assert metric_value(worker.metrics(), "pulse_kafka_last_fetch_age_seconds") >= 10
    code, seconds = worker.terminate(60)
    print(f"SIGTERM to exit with Kafka down: {seconds:.1f}s (exit code {code})")
    assert code is not None, "the worker did not stop within 60 s"
    assert seconds <= 30, f"SIGTERM took {seconds:.1f}s; the documented grace is 30 s"
    lab.stack.broker.start()


def test_after_a_sigkill_the_group_resumes_consumption_within_10s(lab: Lab) -> None:
    survivor = lab.start_worker()
    victim = lab.start_worker()
    lab.send(make_stream(300, seed=51, now=time.time()))
    lab.wait_caught_up()
    victim.kill()
    killed = time.monotonic()
    lab.send(make_stream(300, seed=52, now=time.time()))
    wait_for(lab.caught_up, 60, "the survivor to take over every partition", every=0.1)
    seconds = time.monotonic() - killed
    print(f"consumption resumed on every partition {seconds:.1f}s after the SIGKILL")
    assert seconds <= 10, f"took {seconds:.1f}s"
    assert survivor.alive()


def test_cli_commands_with_kafka_down_fail_within_10s_in_one_line(lab: Lab) -> None:
    lab.stack.broker.stop()
    try:
        for command in (("dlq", "inspect"), ("simulate", "--events", "20", "--rate", "50")):
            started = time.monotonic()
            result = lab.pulse(*command, timeout=60, PULSE_LOG_LEVEL="WARNING")
            seconds = time.monotonic() - started
            print(f"pulse {' '.join(command)} with Kafka down: {seconds:.1f}s")
            assert result.returncode == 1, result.stderr
            assert result.stderr.count("\n") == 1, result.stderr
            assert "Kafka at" in result.stderr
            assert seconds < 10, f"pulse {command[0]} took {seconds:.1f}s"
    finally:
        lab.stack.broker.start()
