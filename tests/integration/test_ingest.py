"""Sources on the real stack: the signed webhook receiver end to end with a worker, the
simulator's malformed lines in the DLQ, and ``pulse dlq inspect``/``replay``."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import orjson
import pytest

from streams.periods import format_instant
from streams.simulation import Malformed, Scenario, simulate
from tests.integration.conftest import ROOT, Sandbox, Worker, free_port, metric_value, wait_for

FIXTURES = Path(__file__).parents[1] / "unit" / "sources" / "fixtures"
SECRET = "integration-secret"
# The reason the worker gives each kind of malformed line the simulator writes.
REASON = {
    "invalid_json": "invalid_json",
    "not_an_object": "not_an_object",
    "unknown_type": "unknown_type",
    "missing_field": "missing_field",
    "bad_community": "bad_community",
    "bad_timestamp": "bad_timestamp",
    "out_of_range": "out_of_range",
    "unknown_field": "unknown_field",
}


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, orjson.loads(response.read())
    except HTTPError as error:
        return error.code, orjson.loads(error.read())


@pytest.fixture
def ingest_url(sandbox: Sandbox, tmp_path: Path) -> Iterator[str]:
    """A real ``pulse ingest-server`` publishing to the sandbox's input topic."""
    port = free_port()
    env = sandbox.env | {
        "PULSE_GITHUB_WEBHOOK_SECRET": SECRET,
        "PULSE_DISCOURSE_WEBHOOK_SECRET": SECRET,
        "PULSE_GITHUB_COMMUNITIES": "pycon=pycon-us",
        "PULSE_DISCOURSE_COMMUNITIES": "discuss.python.org=python-discuss",
        "PULSE_INGEST_PORT": str(port),
        "PULSE_INGEST_MAX_BODY_BYTES": "65536",
    }
    log_path = tmp_path / "ingest-server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "agents", "ingest-server"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"ingest-server exited:\n{log_path.read_text()[-3000:]}")
            try:
                with urlopen(f"{url}/healthz", timeout=2) as response:  # noqa: S310
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_for(ready, 30, "the ingest server to answer")
        yield url
        process.terminate()
        process.wait(15)


def github_delivery(now: float) -> tuple[bytes, dict[str, str]]:
    payload = orjson.loads((FIXTURES / "github_issues_opened.json").read_bytes())
    payload["issue"]["created_at"] = format_instant(now - 60)
    body = orjson.dumps(payload)
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(body),
    }
    return body, headers


def settled(sandbox: Sandbox) -> float:
    """Events applied or held back by moderation (the simulator writes floods)."""
    text = sandbox.metrics()
    return metric_value(text, "pulse_community_events_total") + metric_value(
        text, "pulse_community_events_moderated_total"
    )


def redis_counts(sandbox: Sandbox, community: str) -> dict[str, int]:
    raw = sandbox.redis().hgetall(f"{sandbox.prefix}:{{{community}}}:counts")
    return {k: int(v) for k, v in raw.items()}


def test_signed_webhooks_reach_the_worker_and_a_redelivery_counts_once(
    sandbox: Sandbox, start_worker: Callable[[], Worker], ingest_url: str
) -> None:
    start_worker()
    now = time.time()
    body, headers = github_delivery(now)
    status, first = post(f"{ingest_url}/ingest/github", body, headers)
    assert status == 202
    status, again = post(f"{ingest_url}/ingest/github", body, headers)  # GitHub "Redeliver"
    assert status == 202
    assert again["event_ids"] == first["event_ids"]

    post_body = orjson.loads((FIXTURES / "discourse_post_created_topic.json").read_bytes())
    post_body["post"]["created_at"] = format_instant(now - 30)
    raw = orjson.dumps(post_body)
    status, _ = post(
        f"{ingest_url}/ingest/discourse",
        raw,
        {
            "X-Discourse-Event": "post_created",
            "X-Discourse-Instance": "https://discuss.python.org",
            "X-Discourse-Event-Signature": sign(raw),
        },
    )
    assert status == 202

    def settled() -> bool:
        text = sandbox.metrics()
        return (
            metric_value(text, "pulse_community_events_total") == 2
            and metric_value(text, "pulse_community_events_duplicate_total") == 1
        )

    wait_for(settled, 60, "two events applied and one duplicate")
    assert redis_counts(sandbox, "pycon-us") == {"github.issue_opened": 1}
    assert redis_counts(sandbox, "python-discuss") == {"forum.post": 1}
    member = sandbox.redis().hgetall(f"{sandbox.prefix}:{{pycon-us}}:member:mariatta")
    assert member["events"] == "1"


def test_refused_webhooks_publish_nothing(sandbox: Sandbox, ingest_url: str) -> None:
    url = f"{ingest_url}/ingest/github"
    body, headers = github_delivery(time.time())
    unsigned = {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"}
    assert post(url, body, unsigned)[0] == 401
    assert post(url, body, headers | {"X-Hub-Signature-256": sign(body, "guess")})[0] == 401
    assert post(url, body + b" ", headers)[0] == 401  # body changed after signing
    big = b'{"pad": "' + b"x" * 70_000 + b'"}'
    assert post(url, big, headers | {"X-Hub-Signature-256": sign(big)})[0] == 413
    broken = b'{"action": "opened"'
    assert post(url, broken, headers | {"X-Hub-Signature-256": sign(broken)})[0] == 400
    assert post(url, body, headers)[0] == 202  # the one that counts

    records = sandbox.read_topic(sandbox.activity_topic, expected=1, timeout=20)
    assert len(records) == 1
    assert orjson.loads(records[0].value)["type"] == "github.issue_opened"
    assert records[0].key == b"mariatta"


def test_malformed_lines_are_dead_lettered_and_fixed_ones_replayed(
    sandbox: Sandbox, start_worker: Callable[[], Worker], tmp_path: Path
) -> None:
    start_worker()
    now = time.time()
    stamp = format_instant(now)
    scenario = Scenario(
        now=now,
        communities=("pycon-us", "python-discord"),
        members=40,
        days=3,
        events=300,
        seed=9,
        malformed_share=0.1,
    )
    lines = list(simulate(scenario))
    bad = [line for line in lines if isinstance(line, Malformed)]
    valid = len(lines) - len(bad)
    assert {b.kind for b in bad} == set(REASON)

    run = sandbox.pulse(
        "simulate",
        *("--communities", "pycon-us,python-discord", "--members", "40", "--days", "3"),
        *("--events", "300", "--seed", "9", "--malformed", "0.1", "--now", stamp),
    )
    assert run.returncode == 0, run.stderr
    assert f"{valid} valid events" in run.stderr
    sandbox.send([(None, b"\xff\xfe not utf-8 \x1b[31m")])

    wait_for(
        lambda: settled(sandbox) == valid,
        60,
        f"{valid} simulated events to be applied",
    )
    letters = sandbox.read_topic(sandbox.dlq_topic, expected=len(bad) + 1)
    assert len(letters) == len(bad) + 1
    by_value = {r.value: dict(r.headers) for r in letters}
    for line in bad:
        headers = by_value[line.line.encode()]
        assert headers["pulse-reason"].decode() == REASON[line.kind]
        assert headers["pulse-source-topic"].decode() == sandbox.activity_topic
    assert by_value[b"\xff\xfe not utf-8 \x1b[31m"]["pulse-reason"] == b"invalid_json"

    # inspect: every letter, machine-readable, and a terminal-safe text view
    listed = sandbox.pulse("dlq", "inspect", "--json", "--limit", "0")
    assert listed.returncode == 0, listed.stderr
    records = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert Counter(r["reason"] for r in records) == Counter(
        [REASON[b.kind] for b in bad] + ["invalid_json"]
    )
    text = sandbox.pulse("dlq", "inspect", "--reason", "invalid_json")
    assert "\\xff\\xfe not utf-8 \\x1b[31m" in text.stdout
    assert "\x1b" not in text.stdout

    # replay: fix the unknown types, keep one still broken -> refused; then the fixed ones
    fixable = [r for r in records if r["reason"] == "unknown_type"]
    fixed = []
    for record in fixable:
        record["value"]["type"] = "chat.message"
        fixed.append(orjson.dumps(record))
    still_bad = next(r for r in records if r["reason"] == "bad_community")
    path = tmp_path / "fixed.jsonl"
    path.write_bytes(b"\n".join([*fixed, orjson.dumps(still_bad)]) + b"\n")
    refused = sandbox.pulse("dlq", "replay", "--from-file", str(path))
    assert refused.returncode == 3
    assert "bad_community" in refused.stderr
    path.write_bytes(b"\n".join(fixed) + b"\n")
    replayed = sandbox.pulse("dlq", "replay", "--from-file", str(path))
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed {len(fixed)} event(s)" in replayed.stdout
    wait_for(
        lambda: settled(sandbox) == valid + len(fixed),
        60,
        "the replayed events to be applied",
    )
    # Replaying the same fix again changes nothing: the worker knows those event ids.
    assert sandbox.pulse("dlq", "replay", "--from-file", str(path)).returncode == 0
    wait_for(
        lambda: (
            metric_value(sandbox.metrics(), "pulse_community_events_duplicate_total") >= len(fixed)
        ),
        60,
        "the second replay to be recognised as duplicates",
    )
    assert settled(sandbox) == valid + len(fixed)
    tail = sandbox.read_topic(sandbox.activity_topic, expected=len(lines) + 1 + 2 * len(fixed))
    replay_headers = [dict(r.headers).get("pulse-replayed-from") for r in tail]
    assert sum(h is not None for h in replay_headers) == 2 * len(fixed)

    # --reason re-checks letters as they are: none of these is valid yet
    dry = sandbox.pulse("dlq", "replay", "--reason", "unknown_type", "--dry-run")
    assert dry.returncode == 0
    assert (
        f"would replay 0 event(s) to {sandbox.activity_topic}; {len(fixable)} still" in dry.stdout
    )
