"""Private Kafka brokers and Redis servers that fault tests may stop, kill and restart.

Each one listens on free loopback ports with its own data directory, and is stopped by
its own PID only, so the shared development stack (Kafka 19092, Redis 16379) is never
touched. The broker is configured like ``deploy/local/stack.sh`` (single-node KRaft),
with optional SASL (PLAIN for the broker itself, SCRAM-SHA-256 users created at format
time); Redis optionally with ACL users.
"""

from __future__ import annotations

import base64
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import redis

ROOT = Path(__file__).parents[2]
KAFKA_LIBS = ROOT / ".local" / "kafka" / "libs"
# Small heap, serial GC and C1 only: a test broker starts faster and leaves CPU for the
# workers on a 2-core machine.
JAVA_OPTS = (
    "-Xms128m",
    "-Xmx384m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0


_HANDED_OUT: set[int] = set()


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports, none handed out before by this process.

    The sockets are held open together while the ports are picked: one at a time, the
    kernel may hand the same ephemeral port out twice (a broker's two listeners then
    clash).
    """
    sockets: list[socket.socket] = []
    try:
        ports: list[int] = []
        while len(ports) < count:
            sock = socket.socket()
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if port not in _HANDED_OUT:
                ports.append(port)
        _HANDED_OUT.update(ports)
        return ports
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class ServerError(RuntimeError):
    """A private server did not start or stop as expected."""


def _terminate(process: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@dataclass(frozen=True)
class Sasl:
    """SASL on the broker's client listener: who may connect, with what."""

    mechanism: str = "SCRAM-SHA-256"
    username: str = "pulse"
    password: str = field(default_factory=lambda: f"kafka-{uuid.uuid4().hex}")
    admin_password: str = field(default_factory=lambda: f"admin-{uuid.uuid4().hex}")

    def client_options(self) -> dict[str, Any]:
        return {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": self.mechanism,
            "sasl_plain_username": self.username,
            "sasl_plain_password": self.password,
        }


class ServerProcess:
    """A server this test session starts, stops and kills by its own PID.

    ``stop`` is a controlled shutdown (SIGTERM; Redis then flushes its AOF), SIGKILL if
    it takes longer than ``STOP_TIMEOUT``; ``kill`` is SIGKILL.
    """

    root: Path
    process: subprocess.Popen[bytes] | None = None
    _out: IO[bytes] | None = None

    def _launch(self, argv: list[str], stdout_name: str) -> None:
        self._out = (self.root / stdout_name).open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - fixed argv
            argv,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of pytest must not reach the server first
        )

    def stop(self) -> None:
        if self.process is not None:
            _terminate(self.process, signal.SIGTERM, STOP_TIMEOUT)
        self._close()

    def kill(self) -> None:
        if self.process is not None:
            _terminate(self.process, signal.SIGKILL, STOP_TIMEOUT)
        self._close()

    def _close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


class KafkaBroker(ServerProcess):
    """A single-node KRaft broker (broker and controller in one JVM) in ``root``."""

    def __init__(self, root: Path, sasl: Sasl | None = None) -> None:
        if not (KAFKA_LIBS / ".complete").exists():
            raise ServerError(
                f"no Kafka jars in {KAFKA_LIBS}; run `bash deploy/local/stack.sh install`"
            )
        self.root = root
        self.sasl = sasl
        self.port, self.controller_port = free_ports(2)
        self.data = root / "data"
        self.props = root / "server.properties"
        self.log4j = root / "log4j.properties"
        self.log_file = root / "kafka.log"
        self._write_config()
        self._format()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client_options(self) -> dict[str, Any]:
        """kafka-python options to reach this broker as the application user."""
        options: dict[str, Any] = {"bootstrap_servers": self.bootstrap}
        if self.sasl is not None:
            options.update(self.sasl.client_options())
        return options

    def _java(self, *args: str) -> list[str]:
        return [
            "java",
            *JAVA_OPTS,
            f"-Dlog4j.configuration=file:{self.log4j}",
            "-cp",
            f"{KAFKA_LIBS}/*",
            *args,
        ]

    def _write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.log4j.write_text(
            "log4j.rootLogger=INFO, file\n"
            "log4j.appender.file=org.apache.log4j.FileAppender\n"
            f"log4j.appender.file.File={self.log_file}\n"
            "log4j.appender.file.Append=true\n"
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            "log4j.logger.kafka.request.logger=WARN\n"
            "log4j.logger.state.change.logger=WARN\n"
            "log4j.logger.kafka.log=WARN\n"
            "log4j.logger.org.apache.kafka.storage=WARN\n"
        )
        host = "127.0.0.1"
        if self.sasl is None:
            client, protocol_map, inter_broker = "PLAINTEXT", "PLAINTEXT:PLAINTEXT", ""
        else:
            client = "SASL_PLAINTEXT"
            protocol_map = "SASL_PLAINTEXT:SASL_PLAINTEXT"
            admin = self.sasl.admin_password
            inter_broker = (
                "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512\n"
                "sasl.mechanism.inter.broker.protocol=PLAIN\n"
                "listener.name.sasl_plaintext.plain.sasl.jaas.config="
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="admin" password="{admin}" user_admin="{admin}"'
                + (
                    f' user_{self.sasl.username}="{self.sasl.password}";\n'
                    if self.sasl.mechanism == "PLAIN"
                    else ";\n"
                )
                + "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;\n"
                "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;\n"
            )
        self.props.write_text(
            "process.roles=broker,controller\n"
            "node.id=1\n"
            f"controller.quorum.voters=1@{host}:{self.controller_port}\n"
            f"listeners={client}://{host}:{self.port},CONTROLLER://{host}:{self.controller_port}\n"
            f"advertised.listeners={client}://{host}:{self.port}\n"
            "controller.listener.names=CONTROLLER\n"
            f"inter.broker.listener.name={client}\n"
            f"listener.security.protocol.map={protocol_map},CONTROLLER:PLAINTEXT\n"
            f"{inter_broker}"
            f"log.dirs={self.data}\n"
            "offsets.topic.replication.factor=1\n"
            "offsets.topic.num.partitions=4\n"
            "transaction.state.log.replication.factor=1\n"
            "transaction.state.log.min.isr=1\n"
            "default.replication.factor=1\n"
            "min.insync.replicas=1\n"
            "group.initial.rebalance.delay.ms=0\n"
            "num.partitions=4\n"
            "auto.create.topics.enable=false\n"
            "delete.topic.enable=true\n"
        )

    def _format(self) -> None:
        raw = b"-"
        while raw.startswith(b"-"):  # Kafka refuses ids that look like options
            raw = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=")
        args = ["kafka.tools.StorageTool", "format", "-t", raw.decode(), "-c", str(self.props)]
        if self.sasl is not None and self.sasl.mechanism.startswith("SCRAM"):
            args += [
                "--add-scram",
                f"{self.sasl.mechanism}=[name={self.sasl.username},password={self.sasl.password}]",
            ]
        done = subprocess.run(
            self._java(*args), capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise ServerError(f"formatting {self.data} failed:\n{done.stdout}\n{done.stderr}")

    def start(self, timeout: float = START_TIMEOUT) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        position = self.log_file.stat().st_size if self.log_file.exists() else 0
        self._launch(self._java("kafka.Kafka", str(self.props)), "kafka.stdout.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"Kafka exited with {self.process.returncode}: {self.tail()}")
            with self.log_file.open("rb") as log:
                log.seek(position)
                if b"Kafka Server started" in log.read() and port_open(self.port):
                    return
            time.sleep(0.2)
        raise ServerError(f"Kafka not ready after {timeout:.0f}s: {self.tail()}")

    def tail(self, n: int = 4000) -> str:
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return text[-n:]


@dataclass(frozen=True)
class AclUser:
    name: str
    password: str


class RedisServer(ServerProcess):
    """A redis-server in ``root``; persistence is chosen at each start."""

    def __init__(
        self, root: Path, password: str | None = None, users: tuple[AclUser, ...] = ()
    ) -> None:
        self.root = root
        self.port = free_port()
        self.password = password
        self.users = users
        self.data = root / "data"
        self.conf = root / "redis.conf"

    def url(self, user: str | None = None, password: str | None = None) -> str:
        password = self.password if password is None and user is None else password
        if user is not None:
            return f"redis://{user}:{password}@127.0.0.1:{self.port}/0"
        if password:
            return f"redis://:{password}@127.0.0.1:{self.port}/0"
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url(), decode_responses=True, socket_timeout=10)

    def start(self, appendonly: bool = True, save: str = "", timeout: float = 30.0) -> None:
        """Start on the same port and data directory as before.

        ``appendonly`` is the AOF (``appendfsync always``: a SIGKILL loses nothing that
        was acknowledged); ``save`` the RDB snapshot points (``""``: none).
        """
        if self.process is not None and self.process.poll() is None:
            return
        self.data.mkdir(parents=True, exist_ok=True)
        lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            "protected-mode yes",
            "daemonize no",
            f'dir "{self.data}"',
            f'logfile "{self.root / "redis.log"}"',
            f"appendonly {'yes' if appendonly else 'no'}",
            "appendfsync always",
            f'save "{save}"',
        ]
        if self.password:
            lines.append(f'requirepass "{self.password}"')
        for user in self.users:
            lines.append(f"user {user.name} on >{user.password} ~* &* +@all")
        self.conf.write_text("\n".join(lines) + "\n")
        self.conf.chmod(0o600)
        self._launch(["redis-server", str(self.conf)], "redis.stdout.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"redis-server exited with {self.process.returncode}")
            try:
                if self.client().ping():
                    return
            except redis.exceptions.BusyLoadingError:
                pass
            except redis.exceptions.ConnectionError:
                pass
            time.sleep(0.1)
        raise ServerError(f"Redis not ready after {timeout:.0f}s")

    def wipe(self) -> None:
        """Remove the data directory: the next start is an empty Redis."""
        if self.process is not None and self.process.poll() is None:
            raise ServerError("stop Redis before wiping its data")
        for path in sorted(self.data.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
