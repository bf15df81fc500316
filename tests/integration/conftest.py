"""Integration fixtures: the real local stack (Kafka, Redis), isolated per test.

Each test gets its own topics, consumer group, Redis key prefix and web port, so tests
never see each other's data. Workers are real ``pulse worker`` processes.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import orjson
import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

ROOT = Path(__file__).parents[2]
STACK_HINT = (
    "the integration tests need the local stack: run `bash deploy/local/test.sh`, "
    'or `bash deploy/local/stack.sh start && eval "$(bash deploy/local/stack.sh env)"`'
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.integration)


@dataclass(frozen=True)
class Stack:
    bootstrap: str
    redis_url: str


@pytest.fixture(scope="session")
def stack() -> Stack:
    bootstrap = os.environ.get("PULSE_KAFKA_BOOTSTRAP_SERVERS")
    redis_url = os.environ.get("PULSE_REDIS_URL")
    if not bootstrap or not redis_url:
        pytest.fail(f"PULSE_KAFKA_BOOTSTRAP_SERVERS and PULSE_REDIS_URL are not set; {STACK_HINT}")
    try:
        redis.Redis.from_url(redis_url).ping()
        KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000).close()
    except Exception as exc:  # noqa: BLE001 - any failure means "stack not there"
        pytest.fail(f"cannot reach the stack ({type(exc).__name__}: {exc}); {STACK_HINT}")
    return Stack(bootstrap, redis_url)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Sandbox:
    """One test's private slice of the stack."""

    stack: Stack
    name: str
    web_port: int = field(default_factory=free_port)
    activity_topic: str = ""
    dlq_topic: str = ""
    awards_topic: str = ""
    segments_topic: str = ""
    moderation_topic: str = ""
    prefix: str = ""
    # More PULSE_* settings for this test's workers and CLI calls.
    extra_env: dict[str, str] = field(default_factory=dict)

    data_dir: str = ""

    def __post_init__(self) -> None:
        self.data_dir = os.path.join(tempfile.gettempdir(), f"pulse-it-{self.name}")
        self.activity_topic = f"it.{self.name}.activity"
        self.dlq_topic = f"it.{self.name}.activity.dlq"
        self.awards_topic = f"it.{self.name}.badges.awarded"
        self.segments_topic = f"it.{self.name}.members.segment-changed"
        self.moderation_topic = f"it.{self.name}.moderation.flagged"
        self.prefix = f"it-{self.name}"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
        env.update(
            {
                "PULSE_KAFKA_BOOTSTRAP_SERVERS": self.stack.bootstrap,
                "PULSE_REDIS_URL": self.stack.redis_url,
                "PULSE_APP_ID": f"it-{self.name}",
                "PULSE_TOPIC_ACTIVITY": self.activity_topic,
                "PULSE_TOPIC_DLQ": self.dlq_topic,
                "PULSE_TOPIC_AWARDS": self.awards_topic,
                "PULSE_TOPIC_SEGMENTS": self.segments_topic,
                "PULSE_TOPIC_MODERATION": self.moderation_topic,
                "PULSE_TOPIC_PARTITIONS": "4",
                "PULSE_REDIS_KEY_PREFIX": self.prefix,
                "PULSE_WEB_PORT": str(self.web_port),
                "PULSE_LOG_LEVEL": "INFO",
                "PULSE_DATA_DIR": self.data_dir,
                "PULSE_BATCH_WITHIN_SECONDS": "0.05",
                **self.extra_env,
            }
        )
        return env

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.stack.redis_url, decode_responses=True)

    def producer(self) -> KafkaProducer:
        return KafkaProducer(bootstrap_servers=self.stack.bootstrap, acks="all", linger_ms=5)

    def send(self, messages: list[tuple[bytes | None, bytes]]) -> None:
        producer = self.producer()
        for key, value in messages:
            producer.send(self.activity_topic, key=key, value=value)
        producer.flush(timeout=60)
        producer.close()

    def send_events(self, events: list[dict[str, Any]]) -> None:
        self.send([(e["member_id"].encode(), orjson.dumps(e)) for e in events])

    def read_topic(self, topic: str, expected: int, timeout: float = 30) -> list[Any]:
        consumer = KafkaConsumer(
            bootstrap_servers=self.stack.bootstrap,
            enable_auto_commit=False,
            consumer_timeout_ms=1000,
        )
        partitions = [
            TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or set()
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        # One more short poll, so that extra (unexpected) records show up too.
        for batch in consumer.poll(timeout_ms=1000).values():
            records.extend(batch)
        consumer.close()
        return records

    def metrics(self) -> str:
        with urlopen(f"{self.base_url}/metrics", timeout=10) as response:  # noqa: S310
            return str(response.read().decode())

    def pulse(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agents", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, label_text = series.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


class Worker:
    """A real ``pulse worker`` process."""

    def __init__(self, sandbox: Sandbox, log_path: Path) -> None:
        self.sandbox = sandbox
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "agents", "worker"],
            env=sandbox.env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"worker exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            return "Worker ready" in self.log() or "[^Worker]: Ready" in self.log()

        wait_for(ready, timeout, "the worker to be ready")

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        return self.process.returncode


@pytest.fixture
def sandbox(stack: Stack) -> Iterator[Sandbox]:
    box = Sandbox(stack, uuid.uuid4().hex[:10])
    admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap)
    topics = (
        box.activity_topic,
        box.dlq_topic,
        box.awards_topic,
        box.segments_topic,
        box.moderation_topic,
    )
    admin.create_topics([NewTopic(topic, 4, 1) for topic in topics])
    yield box
    try:
        admin.delete_topics(list(topics))
    finally:
        admin.close()
    shutil.rmtree(box.data_dir, ignore_errors=True)
    client = box.redis()
    keys = list(client.scan_iter(match=f"{box.prefix}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


@pytest.fixture
def start_worker(sandbox: Sandbox, tmp_path: Path) -> Iterator[Callable[[], Worker]]:
    workers: list[Worker] = []

    def start() -> Worker:
        worker = Worker(sandbox, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop()
