"""`pulse announce` on the real Kafka and Redis, against a local HTTP server that answers
like Discord, Slack, Discourse and a webhook receiver (429s, 5xx, slow answers, a
dropped connection), and a SIGKILL in the middle of a burst."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from kafka.admin import KafkaAdminClient

from tests.integration.conftest import Sandbox, wait_for

SCHEMA = json.loads(
    (Path(__file__).parents[2] / "schemas" / "announce-dead-letter.v1.json").read_text()
)
SECRET = "hook-secret"


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up (a timeout test) is expected


class Receiver:
    """Records every request; misbehaves on purpose, once per (path, delivery)."""

    def __init__(self, delay: float = 0.0, misbehave: bool = True) -> None:
        self.lock = threading.Lock()
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.first: set[tuple[str, str]] = set()
        self.delay = delay
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k: v for k, v in self.headers.items()}
                tag = headers.get("X-Pulse-Delivery") or hashlib.sha256(body).hexdigest()
                with receiver.lock:
                    once = (self.path, tag) not in receiver.first
                    receiver.first.add((self.path, tag))
                if receiver.delay:
                    time.sleep(receiver.delay)
                once = once and misbehave
                if self.path == "/discord" and once:
                    return self.answer(429, b'{"message": "rate limited", "retry_after": 0.2}')
                if self.path == "/hook" and once:
                    return self.answer(503, b"")
                if self.path == "/drop" and once:
                    self.close_connection = True
                    self.connection.close()  # no answer at all
                    return None
                if self.path == "/gone":
                    return self.answer(404, b'{"message": "Unknown Webhook"}')
                if self.path == "/slack" and once:
                    self.send_response(429)
                    self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                with receiver.lock:
                    receiver.received.append((self.path, headers, body))
                return self.answer(200 if self.path != "/discord" else 204, b"")

            def answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def at(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return [(h, b) for p, h, b in self.received if p == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()
    server.server.server_close()


def award(index: int, community: str = "pycon-us") -> dict[str, Any]:
    return {
        "schema_version": 1,
        "award_id": f"{index:032x}",
        "community": community,
        "member_id": f"member-{index}",
        "badge": "helper",
        "tier": "bronze",
        "awarded_at": "2026-12-01T10:00:00.000Z",
        "evidence": [f"e-{index}"],
        "badge_name": "Helper",
        "description": "Answered questions",
    }


CHANGE = {
    "schema_version": 1,
    "community": "pycon-us",
    "member_id": "member-1",
    "from": "beginner",
    "to": "intermediate",
    "changed_at": "2026-12-01T10:00:00.000Z",
    "score_30d": 25,
}


def publish(sandbox: Sandbox, topic: str, values: list[bytes]) -> None:
    producer = sandbox.producer()
    for value in values:
        producer.send(topic, key=b"k", value=value)
    producer.flush(timeout=30)
    producer.close()


def write_config(sandbox: Sandbox, tmp_path: Path, url: str, destinations: str) -> str:
    sandbox.extra_env["ANNOUNCE_BASE"] = url
    for name in ("discord", "slack", "hook", "drop", "gone"):
        sandbox.extra_env[f"ANNOUNCE_{name.upper()}_URL"] = f"{url}/{name}"
    sandbox.extra_env["ANNOUNCE_HOOK_SECRET"] = SECRET
    sandbox.extra_env["ANNOUNCE_FORUM_KEY"] = "forum-key"
    path = tmp_path / "announce.toml"
    path.write_text(f"max_attempts = 4\ntimeout_seconds = 2\n{destinations}")
    return str(path)


def announce(sandbox: Sandbox, config: str, *more: str) -> list[str]:
    return [
        sys.executable, "-m", "agents", "announce", "--config", config,
        "--metrics-port", "0", *more,
    ]  # fmt: skip


def run_until_idle(sandbox: Sandbox, config: str) -> subprocess.CompletedProcess[str]:
    env = {**sandbox.env, "PULSE_LOG_LEVEL": "WARNING"}
    return subprocess.run(
        announce(sandbox, config, "--exit-when-idle"),
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def dlq(sandbox: Sandbox) -> str:
    return sandbox.awards_topic.rsplit(".", 2)[0] + ".announce.dlq"


@pytest.fixture
def cleanup_dlq(sandbox: Sandbox) -> Iterator[None]:
    yield
    admin = KafkaAdminClient(bootstrap_servers=sandbox.stack.bootstrap)
    try:
        admin.delete_topics([dlq(sandbox)])
    except Exception:  # noqa: BLE001, S110 - not created when the test failed early
        pass
    finally:
        admin.close()


DESTINATIONS = """
[[destination]]
name = "discord"
kind = "discord"
communities = ["pycon-us"]
events = ["awards"]
url_env = "ANNOUNCE_DISCORD_URL"

[[destination]]
name = "slack"
kind = "slack"
events = ["segments"]
url_env = "ANNOUNCE_SLACK_URL"

[[destination]]
name = "forum"
kind = "discourse"
url = "{base}/forum"
topic_id = 7
api_username = "pulse-bot"
api_key_env = "ANNOUNCE_FORUM_KEY"
events = ["segments"]

[[destination]]
name = "roles"
kind = "webhook"
url_env = "ANNOUNCE_HOOK_URL"
secret_env = "ANNOUNCE_HOOK_SECRET"

[[destination]]
name = "flaky"
kind = "webhook"
events = ["awards"]
communities = ["django"]
url_env = "ANNOUNCE_DROP_URL"
secret_env = "ANNOUNCE_HOOK_SECRET"

[[destination]]
name = "gone"
kind = "slack"
events = ["flags"]
url_env = "ANNOUNCE_GONE_URL"
"""


@pytest.mark.usefixtures("cleanup_dlq")
def test_each_message_reaches_each_destination_once_through_429s_5xx_and_drops(
    sandbox: Sandbox, receiver: Receiver, tmp_path: Path
) -> None:
    config = write_config(
        sandbox, tmp_path, receiver.url, DESTINATIONS.replace("{base}", receiver.url)
    )
    awards = [award(i) for i in range(10)] + [award(100, "django")]
    flag = {
        "schema_version": 1, "flag_id": "f" * 32, "community": "pycon-us",
        "member_id": "member-2", "channel": "general", "rule": "flood",
        "window_start": "2026-12-01T10:00:00.000Z", "window_end": "2026-12-01T10:01:00.000Z",
        "event_ids": ["e-1"], "flagged_at": "2026-12-01T10:00:30.000Z",
    }  # fmt: skip
    publish(sandbox, sandbox.awards_topic, [orjson.dumps(a) for a in awards] + [b"{not json"])
    publish(sandbox, sandbox.segments_topic, [orjson.dumps(CHANGE)])
    publish(sandbox, sandbox.moderation_topic, [orjson.dumps(flag)])
    done = run_until_idle(sandbox, config)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    # Discord: every pycon-us award once, after one 429 each; never the django one.
    discord = [json.loads(b)["content"] for _, b in receiver.at("/discord")]
    assert sorted(discord) == sorted(
        f"member-{i} earned Helper (bronze) in pycon-us" for i in range(10)
    )
    # The signed webhook: every message once (after a 503 each), verifiable signature.
    hooks = receiver.at("/hook")
    ids = Counter(h["X-Pulse-Delivery"] for h, _ in hooks)
    assert len(ids) == 13
    assert set(ids.values()) == {1}
    for headers, body in hooks:
        expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Pulse-Signature-256"] == f"sha256={expected}"
    # A dropped connection is retried.
    assert [json.loads(b)["delivery"] for _, b in receiver.at("/drop")] == [award(100)["award_id"]]
    # Slack (a 429 with Retry-After: 0) and Discourse got the segment change.
    assert [json.loads(b)["text"] for _, b in receiver.at("/slack")] == [
        "member-1 is now intermediate in pycon-us (was beginner)"
    ]
    (forum,) = receiver.at("/forum/posts.json")
    assert forum[0]["Api-Key"] == "forum-key"
    assert json.loads(forum[1])["topic_id"] == 7
    # Dead letters: the 404 for good, and the message that is not JSON.
    letters = [orjson.loads(r.value) for r in sandbox.read_topic(dlq(sandbox), 2)]
    for letter in letters:
        jsonschema.validate(letter, SCHEMA)
    assert sorted((x["destination"], x["reason"].split(":")[0]) for x in letters) == [
        ("-", "invalid_message"),
        ("gone", "http_404"),
    ]
    # Again: everything is remembered, nothing is posted twice.
    before = len(receiver.received)
    publish(sandbox, sandbox.awards_topic, [orjson.dumps(awards[0])])  # a redelivery
    again = run_until_idle(sandbox, config)
    assert again.returncode == 0, again.stderr
    assert len(receiver.received) == before


@pytest.mark.usefixtures("cleanup_dlq")
def test_a_sigkill_in_a_burst_loses_nothing_and_copies_at_most_one(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    slow = Receiver(delay=0.02, misbehave=False)
    try:
        config = write_config(
            sandbox, tmp_path, slow.url,
            '[[destination]]\nname = "roles"\nkind = "webhook"\n'
            'url_env = "ANNOUNCE_HOOK_URL"\nsecret_env = "ANNOUNCE_HOOK_SECRET"\n',
        )  # fmt: skip
        burst = [award(i) for i in range(300)]
        publish(sandbox, sandbox.awards_topic, [orjson.dumps(a) for a in burst])
        env = {**sandbox.env, "PULSE_LOG_LEVEL": "WARNING"}
        process = subprocess.Popen(
            announce(sandbox, config), env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for(lambda: len(slow.at("/hook")) >= 100, 60, "a third of the burst")
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        at_kill = len(slow.at("/hook"))
        assert at_kill < 300
        done = run_until_idle(sandbox, config)
        assert done.returncode == 0, done.stderr
        got = Counter(h["X-Pulse-Delivery"] for h, _ in slow.at("/hook"))
        assert set(got) == {a["award_id"] for a in burst}  # nothing lost
        copies = sum(n - 1 for n in got.values())
        assert copies <= 1  # one kill: at most the one in flight
    finally:
        slow.server.shutdown()
        slow.server.server_close()


def test_an_answer_slower_than_the_timeout_is_retried_as_a_timeout() -> None:
    from agents.announce.deliver import post
    from agents.announce.render import Request

    slow = Receiver(delay=1.5, misbehave=False)
    try:
        started = time.monotonic()
        answer = post(Request(f"{slow.url}/hook", b"{}", {}), timeout=0.3, attempt=2)
        assert time.monotonic() - started < 1.2
        assert (answer.done, answer.reason, answer.wait) == (False, "timeout", 1.0)
    finally:
        slow.server.shutdown()
        slow.server.server_close()
