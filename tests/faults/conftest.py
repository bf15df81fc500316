"""Fault-test fixtures: a private Kafka broker and Redis per test module, real workers.

The fault tier kills and restarts workers, Redis and the broker. It never touches the
shared development stack: every module starts its own broker and Redis on free loopback
ports with temporary data directories (``fault_stack``) and stops them by PID. Needs
the Kafka jars (``bash deploy/local/stack.sh install``), Java and ``redis-server``.

Inside a module each test gets a :class:`Lab`: its own topics, consumer group, key
prefix and workers. ``tests/faults/guarantees.py`` checks the outcome.
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

import orjson
import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from streams.simulation import generate
from tests.conftest import INVALID_MESSAGES as INVALID
from tests.faults.servers import AclUser, KafkaBroker, RedisServer, Sasl, ServerError, free_port

ROOT = Path(__file__).parents[2]

# Faust reads these from the environment. A SIGKILLed worker stays in the consumer
# group until its session times out (Faust's default: 60 s); 10 s keeps restarts
# quick. Commits every second give the "no offset past unapplied effects" checks
# many chances to fail. The PULSE_FAUST_ spellings are for a shell that only passes
# prefixed variables to Faust.
FAUST_ENV = {
    "BROKER_SESSION_TIMEOUT": "10",
    "BROKER_HEARTBEAT_INTERVAL": "1",
    "BROKER_COMMIT_INTERVAL": "1",
}
FAUST_ENV |= {f"PULSE_FAUST_{k}": v for k, v in FAUST_ENV.items()}


# kafka-python leaves the sockets of refused connection attempts to the garbage
# collector, and these tests refuse many (a broker that is down).
LEAKED_SOCKETS = "ignore:unclosed <socket.socket:ResourceWarning"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The `faults` marker (select with -m faults) once pyproject.toml declares it.
    declared = any(line.startswith("faults:") for line in config.getini("markers"))
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.filterwarnings(LEAKED_SOCKETS))
            if declared:
                item.add_marker(pytest.mark.faults)


def _collect_leaked_sockets() -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "unclosed <socket.socket", ResourceWarning)
        gc.collect()


@pytest.fixture(autouse=True)
def _leaked_sockets() -> Iterator[None]:
    # Collected here, under the filter, rather than in some later test.
    yield
    _collect_leaked_sockets()


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    # ... or by pytest's own collection at exit (its warnings are errors).
    _collect_leaked_sockets()


def wait_for(check: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, label_text = series.partition("{")
        if metric == name and all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


@dataclass
class FaultStack:
    """The module's private broker and Redis."""

    broker: KafkaBroker
    redis: RedisServer
    root: Path

    def admin(self) -> KafkaAdminClient:
        return KafkaAdminClient(**self.broker.client_options(), request_timeout_ms=15000)

    def ensure_up(self) -> None:
        """Bring back whatever a test left stopped."""
        self.broker.start()
        self.redis.start()


@contextmanager
def running_stack(
    root: Path, sasl: Sasl | None = None, users: tuple[AclUser, ...] = ()
) -> Iterator[FaultStack]:
    """A broker and a Redis of their own under ``root``, stopped again on exit."""
    try:
        broker = KafkaBroker(root / "kafka", sasl)
        broker.start()
    except ServerError as exc:
        pytest.fail(str(exc))
    server = RedisServer(root / "redis", password=f"redis-{uuid.uuid4().hex}", users=users)
    try:
        server.start()
        yield FaultStack(broker, server, root)
    finally:
        server.stop()
        broker.stop()


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    with running_stack(tmp_path_factory.mktemp("faults")) as stack:
        yield stack


class WorkerProcess:
    """A real ``pulse worker`` with its own web port and data directory."""

    def __init__(self, lab: Lab, index: int, extra_env: dict[str, str]) -> None:
        self.lab = lab
        self.index = index
        self.web_port = free_port()
        self.log_path = lab.root / f"worker-{index}.log"
        env = lab.env()
        env.update(
            {
                "PULSE_WEB_PORT": str(self.web_port),
                "PULSE_DATA_DIR": str(lab.root / f"worker-{index}-data"),
            }
        )
        env.update(extra_env)
        self._log = self.log_path.open("ab")
        self.started = time.monotonic()
        self.process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "agents", "worker"],
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float = 90) -> WorkerProcess:
        def ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"worker exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            text = self.log()
            return "Worker ready" in text or "[^Worker]: Ready" in text

        wait_for(ready, timeout, f"worker {self.index} to be ready")
        return self

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.web_port}/metrics"
        try:
            with urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
                return str(response.read().decode())
        except URLError as exc:
            state = "running" if self.alive() else f"exited with {self.process.returncode}"
            pytest.fail(f"worker {self.index} ({state}): {url}: {exc}\n{self.log()[-6000:]}")

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye to the group."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self._log.close()

    def terminate(self, timeout: float = 60) -> tuple[int | None, float]:
        """SIGTERM and wait; returns (exit code or None if still running, seconds)."""
        started = time.monotonic()
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        return code, time.monotonic() - started

    def close(self) -> None:
        if self.alive():
            code, _ = self.terminate(30)
            if code is None:
                self.kill()
        self._log.close()


@dataclass(frozen=True)
class Message:
    """One message of a generated stream, and what the worker must make of it."""

    key: bytes | None
    value: bytes
    event: dict[str, Any] | None  # the event, when the message is valid
    reason: str | None  # the DLQ reason, when it is not


@dataclass
class Sent:
    message: Message
    partition: int
    offset: int


def make_stream(
    count: int,
    *,
    seed: int,
    now: float,
    invalid_every: int = 40,
    repeat_every: int = 25,
    span_seconds: int = 2 * 86400,
) -> list[Message]:
    """``count`` simulated events, with an invalid message every ``invalid_every`` and a
    redelivered copy of an earlier event every ``repeat_every`` messages."""
    rng = random.Random(seed)
    events = list(
        generate(
            count,
            now=now,
            seed=seed,
            span_seconds=span_seconds,
            members=60,
            id_prefix=f"f{seed}",
        )
    )
    out: list[Message] = []
    for n, event in enumerate(events):
        out.append(Message(event["member_id"].encode(), orjson.dumps(event), event, None))
        if n % invalid_every == invalid_every - 1:
            value, reason = INVALID[rng.randrange(len(INVALID))]
            out.append(Message(b"bad", value, None, reason))
        if n % repeat_every == repeat_every - 1:
            copy = events[rng.randrange(n + 1)]
            out.append(Message(copy["member_id"].encode(), orjson.dumps(copy), copy, None))
    return out


@dataclass
class Lab:
    """One test's private topics, group and key prefix on the module's stack."""

    stack: FaultStack
    root: Path
    partitions: int = 6
    name: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    workers: list[WorkerProcess] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def activity_topic(self) -> str:
        return f"ft.{self.name}.activity"

    @property
    def dlq_topic(self) -> str:
        return f"ft.{self.name}.dlq"

    @property
    def awards_topic(self) -> str:
        return f"ft.{self.name}.awards"

    @property
    def prefix(self) -> str:
        return f"ft-{self.name}"

    @property
    def group(self) -> str:
        return f"ft-{self.name}"

    def env(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
        env.update(FAUST_ENV)
        env.update(
            {
                "PULSE_KAFKA_BOOTSTRAP_SERVERS": self.stack.broker.bootstrap,
                "PULSE_REDIS_URL": self.stack.redis.url(),
                "PULSE_APP_ID": self.group,
                "PULSE_TOPIC_ACTIVITY": self.activity_topic,
                "PULSE_TOPIC_DLQ": self.dlq_topic,
                "PULSE_TOPIC_AWARDS": self.awards_topic,
                "PULSE_TOPIC_SEGMENTS": f"ft.{self.name}.segments",
                "PULSE_TOPIC_MODERATION": f"ft.{self.name}.moderation",
                "PULSE_TOPIC_PARTITIONS": str(self.partitions),
                "PULSE_REDIS_KEY_PREFIX": self.prefix,
                "PULSE_LOG_LEVEL": "INFO",
                "PULSE_DATA_DIR": str(self.root / "data"),
                "PULSE_BATCH_SIZE": "200",
                "PULSE_BATCH_WITHIN_SECONDS": "0.05",
            }
        )
        sasl = self.stack.broker.sasl
        if sasl is not None:
            env.update(
                {
                    "PULSE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                    "PULSE_KAFKA_SASL_MECHANISM": sasl.mechanism,
                    "PULSE_KAFKA_SASL_USERNAME": sasl.username,
                    "PULSE_KAFKA_SASL_PASSWORD": sasl.password,
                }
            )
        if self.stack.redis.users:
            user = self.stack.redis.users[0]
            env["PULSE_REDIS_URL"] = self.stack.redis.url(user.name, user.password)
        env.update(self.extra_env)
        env.update(overrides)
        return env

    def create_topics(self) -> None:
        admin = self.stack.admin()
        try:
            admin.create_topics(
                [
                    NewTopic(self.activity_topic, self.partitions, 1),
                    NewTopic(self.dlq_topic, self.partitions, 1),
                ]
            )
        finally:
            admin.close()

    def start_worker(self, ready: bool = True, **env: str) -> WorkerProcess:
        worker = WorkerProcess(self, len(self.workers), env)
        self.workers.append(worker)
        return worker.wait_ready() if ready else worker

    def redis(self) -> redis.Redis:
        return self.stack.redis.client()

    def pulse(
        self, *args: str, timeout: float = 120, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agents", *args],
            env=self.env(**env),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    # -- Kafka -------------------------------------------------------------------------

    def producer(self) -> KafkaProducer:
        """Idempotent, retrying until delivered: a broker restart neither loses nor
        duplicates a message, so every message has exactly one offset."""
        return KafkaProducer(
            **self.stack.broker.client_options(),
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            retries=2**31 - 1,
            max_in_flight_requests_per_connection=1,
            request_timeout_ms=10000,
            delivery_timeout_ms=120000,
        )

    def send(
        self, messages: Sequence[Message], producer: KafkaProducer | None = None
    ) -> list[Sent]:
        own = producer is None
        client = self.producer() if producer is None else producer
        try:
            futures = [
                (m, client.send(self.activity_topic, key=m.key, value=m.value)) for m in messages
            ]
            client.flush(timeout=120)
            sent = []
            for message, future in futures:
                meta = future.get(timeout=60)
                sent.append(Sent(message, meta.partition, meta.offset))
        finally:
            if own:
                client.close()
        self.sent.extend(sent)
        return sent

    def feed(self, messages: Sequence[Message], seconds: float) -> Feed:
        """Send ``messages`` spread over about ``seconds`` from a background thread."""
        return Feed(self, messages, seconds)

    def partitions_of(self, topic: str) -> list[TopicPartition]:
        return [TopicPartition(topic, p) for p in range(self.partitions)]

    def end_offsets(self, topic: str | None = None) -> dict[TopicPartition, int]:
        consumer = KafkaConsumer(**self.stack.broker.client_options())
        try:
            return dict(consumer.end_offsets(self.partitions_of(topic or self.activity_topic)))
        finally:
            consumer.close()

    def committed(self) -> dict[TopicPartition, int]:
        """The worker group's committed offsets on the input topic (0 where none)."""
        admin = self.stack.admin()
        try:
            offsets = admin.list_group_offsets(self.group).get(self.group, {})
        finally:
            admin.close()
        committed = dict.fromkeys(self.partitions_of(self.activity_topic), 0)
        for tp, meta in offsets.items():
            if tp.topic == self.activity_topic and meta.offset >= 0:
                committed[tp] = meta.offset
        return committed

    def caught_up(self) -> bool:
        return self.committed() == self.end_offsets()

    def wait_caught_up(self, timeout: float = 120) -> None:
        wait_for(self.caught_up, timeout, "the workers to commit every input offset", 0.5)

    def read_topic(self, topic: str, timeout: float = 30) -> list[Any]:
        """Every record of ``topic`` up to its end offsets now."""
        consumer = KafkaConsumer(**self.stack.broker.client_options(), enable_auto_commit=False)
        try:
            found = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(found)]
            if not tps:
                return []
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            end = consumer.end_offsets(tps)
            records: list[Any] = []
            deadline = time.monotonic() + timeout
            while any(consumer.position(tp) < end[tp] for tp in tps):
                if time.monotonic() > deadline:
                    pytest.fail(f"could not read {topic} to its end in {timeout:.0f}s")
                for batch in consumer.poll(timeout_ms=500).values():
                    records.extend(batch)
            return records
        finally:
            consumer.close()

    def close(self) -> None:
        for worker in self.workers:
            worker.close()


class Feed:
    """Messages sent at a steady pace by a background thread, with their offsets."""

    def __init__(self, lab: Lab, messages: Sequence[Message], seconds: float) -> None:
        self._lab = lab
        self._messages = list(messages)
        self._seconds = seconds
        self.error: BaseException | None = None
        self.sent: list[Sent] = []
        self._thread = threading.Thread(target=self._run, name="feed", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            # One producer for the whole feed: it rides out a broker restart, where a
            # new one could not even bootstrap.
            producer = self._lab.producer()
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = exc
            return
        try:
            chunks = max(1, int(self._seconds / 0.25))
            size = max(1, -(-len(self._messages) // chunks))
            started = time.monotonic()
            for n, start in enumerate(range(0, len(self._messages), size)):
                self.sent += self._lab.send(self._messages[start : start + size], producer)
                pause = started + (n + 1) * self._seconds / chunks - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = exc
        finally:
            producer.close()

    @property
    def progress(self) -> float:
        return len(self.sent) / len(self._messages)

    def join(self, timeout: float = 180) -> list[Sent]:
        self._thread.join(timeout)
        if self._thread.is_alive():
            pytest.fail(f"the feed did not finish in {timeout:.0f}s")
        if self.error is not None:
            raise self.error
        return self.sent


@pytest.fixture
def lab(fault_stack: FaultStack, tmp_path: Path) -> Iterator[Lab]:
    fault_stack.ensure_up()
    box = Lab(fault_stack, tmp_path)
    box.create_topics()
    yield box
    box.close()
    shutil.rmtree(tmp_path / "data", ignore_errors=True)
