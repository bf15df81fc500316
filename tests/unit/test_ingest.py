"""Ingest without a broker: the webhook app with a fake sink, and ``pulse ingest``/``import``
in dry-run mode."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from agents.cli import main
from agents.ingest_server import IngestMetrics, create_app, signature_matches
from agents.settings import Settings
from streams.activity import parse_activity

FIXTURES = Path(__file__).parent / "sources" / "fixtures"
SECRET = "It's a Secret to Everybody"
NOW = 1798761600.0  # 2027-01-01, after every fixture


class FakeSink:
    """Records what would have gone to Kafka; can be told to fail."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.fail = fail

    async def publish(self, topic: str, messages: Sequence[tuple[bytes, bytes]]) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.extend((topic, key, value) for key, value in messages)


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def settings(**env: str) -> Settings:
    base = {
        "PULSE_GITHUB_WEBHOOK_SECRET": SECRET,
        "PULSE_DISCOURSE_WEBHOOK_SECRET": SECRET,
        "PULSE_GITHUB_COMMUNITIES": "pycon=pycon-us",
        "PULSE_DISCOURSE_COMMUNITIES": "discuss.python.org=python-discuss",
        "PULSE_INGEST_MAX_BODY_BYTES": "4096",
    }
    base.update(env)
    return Settings.from_env(base)


def post(
    sink: FakeSink,
    path: str,
    body: bytes,
    headers: dict[str, str],
    config: Settings | None = None,
) -> tuple[int, dict[str, Any], str]:
    app = create_app(config or settings(), sink, IngestMetrics(CollectorRegistry()), lambda: NOW)

    async def run() -> tuple[int, dict[str, Any], str]:
        async with TestClient(TestServer(app)) as client:
            response = await client.post(path, data=body, headers=headers)
            answer = await response.json()
            metrics = await (await client.get("/metrics")).text()
            return response.status, answer, metrics

    return asyncio.run(run())


def github_body(name: str = "github_issues_opened.json") -> bytes:
    return (FIXTURES / name).read_bytes()


def github_headers(body: bytes, event: str = "issues", **extra: str) -> dict[str, str]:
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "X-Hub-Signature-256": sign(body),
        "Content-Type": "application/json",
    }
    headers.update(extra)
    return headers


def test_signature_check_is_exact() -> None:
    body = b'{"zen": "Keep it logically awesome."}'
    assert signature_matches(SECRET.encode(), body, sign(body))
    assert not signature_matches(SECRET.encode(), body, sign(body, "other"))
    assert not signature_matches(SECRET.encode(), body + b" ", sign(body))
    assert not signature_matches(SECRET.encode(), body, sign(body)[7:])  # no sha256= prefix
    assert not signature_matches(SECRET.encode(), body, "sha256=\u00e9")


def test_signed_github_delivery_is_published_then_answered_202() -> None:
    sink = FakeSink()
    body = github_body()
    status, answer, metrics = post(sink, "/ingest/github", body, github_headers(body))
    assert status == 202
    [(topic, key, value)] = sink.sent
    assert topic == "pulse.activity"
    assert key == b"mariatta"
    event = json.loads(value)
    parse_activity(event, now=NOW, max_future_skew=0)
    assert answer == {"accepted": 1, "event_ids": [event["event_id"]]}
    assert 'pulse_ingest_events_total{platform="github",type="github.issue_opened"} 1.0' in metrics


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"X-Hub-Signature-256": ""}, 401),
        ({"X-Hub-Signature-256": sign(b"something else")}, 401),
        ({"X-Hub-Signature-256": sign(github_body(), "wrong secret")}, 401),
        ({"X-GitHub-Event": ""}, 400),
    ],
)
def test_bad_signatures_and_headers_are_refused_and_nothing_is_published(
    change: dict[str, str], status: int
) -> None:
    sink = FakeSink()
    body = github_body()
    headers = {k: v for k, v in {**github_headers(body), **change}.items() if v}
    got, answer, _ = post(sink, "/ingest/github", body, headers)
    assert got == status
    assert answer["status"] == status
    assert sink.sent == []


def test_oversized_bad_json_and_unusable_payloads() -> None:
    sink = FakeSink()
    big = b'{"padding": "' + b"x" * 5000 + b'"}'
    assert post(sink, "/ingest/github", big, github_headers(big))[0] == 413
    bad = b'{"action": "opened",'
    assert post(sink, "/ingest/github", bad, github_headers(bad))[0] == 400
    shapeless = b'{"action": "opened", "repository": 7}'
    status, answer, _ = post(sink, "/ingest/github", shapeless, github_headers(shapeless))
    assert (status, answer["reason"]) == (422, "no_repository")
    assert sink.sent == []


def test_irrelevant_deliveries_are_answered_200_with_the_reason() -> None:
    sink = FakeSink()
    body = github_body("github_pull_request_closed_unmerged.json")
    status, answer, metrics = post(
        sink, "/ingest/github", body, github_headers(body, "pull_request")
    )
    assert (status, answer["skipped"]) == (200, "pr_closed_unmerged")
    assert 'pulse_ingest_skipped_total{platform="github",reason="pr_closed_unmerged"}' in metrics
    ping = github_body("github_ping.json")
    assert post(sink, "/ingest/github", ping, github_headers(ping, "ping"))[0] == 200
    assert sink.sent == []


def test_kafka_failure_is_503_so_the_sender_redelivers() -> None:
    body = github_body()
    assert post(FakeSink(fail=True), "/ingest/github", body, github_headers(body))[0] == 503


class HangingSink:
    """A broker that never acknowledges."""

    async def publish(self, topic: str, messages: Sequence[tuple[bytes, bytes]]) -> None:
        await asyncio.sleep(3600)


def test_a_kafka_that_never_acknowledges_is_503_after_the_publish_timeout() -> None:
    body = github_body()
    app = create_app(
        settings(), HangingSink(), IngestMetrics(CollectorRegistry()), lambda: NOW, 0.05
    )

    async def run() -> tuple[int, dict[str, Any]]:
        async with TestClient(TestServer(app)) as client:
            response = await client.post("/ingest/github", data=body, headers=github_headers(body))
            return response.status, await response.json()

    status, answer = asyncio.run(asyncio.wait_for(run(), 10))
    assert status == 503
    assert "redeliver" in answer["error"]


def test_future_dated_event_is_422() -> None:
    sink = FakeSink()
    body = github_body().replace(b"2025-11-24T11:02:31Z", b"2099-01-01T00:00:00Z")
    status, answer, _ = post(sink, "/ingest/github", body, github_headers(body))
    assert (status, answer["reason"]) == (422, "in_future")
    assert sink.sent == []


def test_discourse_webhook_and_its_own_signature_header() -> None:
    sink = FakeSink()
    body = (FIXTURES / "discourse_post_created_reply.json").read_bytes()
    headers = {
        "X-Discourse-Event": "post_created",
        "X-Discourse-Event-Type": "post",
        "X-Discourse-Instance": "https://discuss.python.org",
        "X-Discourse-Event-Signature": sign(body),
    }
    assert post(sink, "/ingest/discourse", body, headers)[0] == 202
    assert json.loads(sink.sent[0][2])["type"] == "forum.reply"
    headers["X-Discourse-Event-Signature"] = sign(body, "nope")
    assert post(sink, "/ingest/discourse", body, headers)[0] == 401
    github_style = {**headers, "X-Hub-Signature-256": sign(body)}
    del github_style["X-Discourse-Event-Signature"]
    assert post(sink, "/ingest/discourse", body, github_style)[0] == 401
    assert len(sink.sent) == 1


def test_a_platform_without_a_secret_is_off() -> None:
    body = github_body()
    config = settings(PULSE_GITHUB_WEBHOOK_SECRET="")
    status, answer, _ = post(FakeSink(), "/ingest/github", body, github_headers(body), config)
    assert status == 404
    assert "PULSE_GITHUB_WEBHOOK_SECRET" in answer["error"]


def test_ingest_server_refuses_to_start_without_any_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("PULSE_GITHUB_WEBHOOK_SECRET", "PULSE_DISCOURSE_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    assert main(["ingest-server"]) == 2
    assert "unsigned webhooks are never accepted" in capsys.readouterr().err


# --- pulse ingest / import, dry run -----------------------------------------------------


def run_dry(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[dict[str, Any]], str]:
    code = main([*argv, "--dry-run"])
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines()]
    return code, events, captured.err


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_GITHUB_COMMUNITIES", "pycon=pycon-us")


def test_ingest_github_file_of_deliveries(
    env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        {"event": "issues", "delivery": "d-1", "payload": json.loads(github_body())},
        {
            "event": "pull_request",
            "delivery": "d-2",
            "payload": json.loads(github_body("github_pull_request_closed_unmerged.json")),
        },
        json.loads(github_body("github_pull_request_closed_merged.json")),  # bare payload
        {"event": "push", "delivery": "d-3", "payload": {}},
    ]
    path = tmp_path / "deliveries.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    code, events, err = run_dry(["ingest", "github", str(path)], capsys)
    assert code == 0
    assert [e["type"] for e in events] == ["github.issue_opened", "github.pr_merged"]
    assert events[0]["event_id"] == "gh-d-1-opened"
    assert "2 events" in err
    assert "pr_closed_unmerged=1" in err
    assert "unsupported_event=1" in err


def test_ingest_refuses_a_file_with_broken_records_unless_told(
    env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(github_body().replace(b"\n", b"") + b"\n{broken\n")
    code, events, err = run_dry(["ingest", "github", str(path)], capsys)
    assert (code, events) == (3, [])
    assert f"{path}:2: invalid_json" in err
    code, events, _ = run_dry(["ingest", "github", str(path), "--skip-invalid"], capsys)
    assert code == 0
    assert len(events) == 1


def test_ingest_discord_array_and_pypi(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames = [
        json.loads((FIXTURES / name).read_text())
        for name in ("discord_message_create.json", "discord_bot_message.json")
    ]
    path = tmp_path / "discord.json"
    path.write_text(json.dumps(frames))
    code, events, err = run_dry(
        ["ingest", "discord", str(path), "--community", "python-discord"], capsys
    )
    assert code == 0
    assert [e["community"] for e in events] == ["python-discord"]
    assert "bot=1" in err
    pypi = str(FIXTURES / "pypi_project.json")
    code, events, _ = run_dry(["ingest", "pypi", pypi, "--community", "pycon-us"], capsys)
    assert [e["attributes"]["version"] for e in events] == ["24.1.0", "24.2.0"]
    assert main(["ingest", "pypi", pypi, "--dry-run"]) == 2  # --community is required


def test_import_checkins_and_feedback(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--community", "pycon-us", "--event", "pycon-us-2026"]
    args += ["--timezone", "America/New_York", "--skip-invalid"]
    code, events, err = run_dry(
        ["import", "checkins", str(FIXTURES / "checkins.csv"), *args], capsys
    )
    assert code == 0
    assert len(events) == 5
    assert events[0]["occurred_at"] == "2025-05-15T08:12:04-04:00"  # EDT in May
    assert "checkins.csv:7: no_attendee" in err
    code, events, err = run_dry(
        ["import", "feedback", str(FIXTURES / "feedback.csv"), *args], capsys
    )
    assert [e["attributes"]["rating"] for e in events] == [5, 4]
    assert {e["source"] for e in events} == {"survey"}
    assert main(["import", "volunteers", "missing.csv", "--dry-run"]) == 2
    assert main(["import", "checkins", "x.csv", "--timezone", "Mars/Olympus", "--dry-run"]) == 2
