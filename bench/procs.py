"""Processes the benchmark starts (workers, peers) and what /proc says about them.

Every process is started here, tracked by pid and stopped by pid (SIGTERM, then SIGKILL
after a grace period); nothing is ever killed by name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.stack import BenchError, Names, Stack

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_ticks() -> list[int]:
    """The machine-wide line of /proc/stat: user nice system idle iowait irq softirq steal."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (fields + [0] * 8)[:8]


def machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine spent running something (from /proc/stat),
    any process; neither idle, iowait nor steal."""
    user, nice, system, _idle, _iowait, irq, softirq, _steal = _cpu_ticks()
    return (user + nice + system + irq + softirq) / CLK_TCK


def machine_steal_seconds() -> float:
    """CPU seconds the hypervisor gave to other guests while this machine wanted to run
    (``steal`` in /proc/stat). Throughput falls when it rises, whatever the code does."""
    return _cpu_ticks()[7] / CLK_TCK


def reference_loop_ms(rounds: int = 5) -> float:
    """Milliseconds one core takes for a fixed piece of pure Python, best of ``rounds``.

    Taken just before a scenario: on a shared virtual machine the speed of a core moves
    by tens of percent between minutes, and this shows by how much.
    """
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        table: dict[int, str] = {}
        for i in range(100_000):
            table[i & 1023] = f"k{i}"
        best = min(best, time.perf_counter() - start)
    return round(best * 1000, 1)


def pid_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of any process (read only; used for the Kafka broker)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def kafka_broker_cpu() -> float:
    """CPU seconds of the local stack's Kafka broker (pid from .local/run/kafka.pid)."""
    try:
        pid = int((ROOT / ".local" / "run" / "kafka.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")
    return pid_cpu_seconds(pid)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def topic_variables() -> list[str]:
    """Every ``PULSE_TOPIC_*`` output-topic variable the worker reads (from its settings)."""
    try:
        from agents.settings import ENV
    except Exception:  # noqa: BLE001 - a half-edited settings module must not stop the bench
        return [f"PULSE_TOPIC_{name}" for name in ("DLQ", "AWARDS", "SEGMENTS", "MODERATION")]
    inputs = ("PULSE_TOPIC_ACTIVITY", "PULSE_TOPIC_PARTITIONS")
    return [var for var in ENV.values() if var.startswith("PULSE_TOPIC_") and var not in inputs]


def worker_env(
    stack: Stack,
    names: Names,
    scenario: str,
    topic: str,
    web_port: int,
    extra: Mapping[str, str],
) -> dict[str, str]:
    """Environment of a ``pulse worker`` confined to this run's topics, group and keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(
        {
            "PULSE_KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
            "PULSE_REDIS_URL": stack.redis_url,
            "PULSE_APP_ID": names.group(scenario),
            "PULSE_TOPIC_ACTIVITY": topic,
            "PULSE_TOPIC_PARTITIONS": "12",
            "PULSE_REDIS_KEY_PREFIX": names.prefix(scenario),
            "PULSE_WEB_PORT": str(web_port),
            "PULSE_DATA_DIR": str(Path("/tmp") / f"{names.base}-{scenario}-{web_port}"),  # noqa: S108
            "PULSE_LOG_LEVEL": "WARNING",
        }
    )
    # Output topics (DLQ, awards, segments, moderation): private to the run as well.
    for var in topic_variables():
        suffix = var.removeprefix("PULSE_TOPIC_").lower()
        env[var] = names.topic(f"{scenario}.{suffix}")
    env.update(extra)
    return env


@dataclass
class Proc:
    """One started process, its log, and its resource use."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise BenchError(
                f"{self.name} exited with {self.popen.returncode}; last log lines:\n" + self.tail()
            )

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def status(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak) in bytes."""
        out: dict[str, int] = {}
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0]) * 1024
        except OSError:
            pass
        return out

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the process (its threads included)."""
        return pid_cpu_seconds(self.pid)

    def children(self) -> list[int]:
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]

    def stop(self, grace: float = 20.0) -> int | None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode


def start(
    name: str,
    argv: Sequence[str],
    env: Mapping[str, str],
    log_dir: Path,
    wrapper: Sequence[str] = (),
) -> Proc:
    """Start ``python argv`` (under ``wrapper``, e.g. a profiler, when given)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = log_path.open("wb")
    popen = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
        [*wrapper, sys.executable, *argv],
        env=dict(env),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Proc(name, popen, log_path)


@dataclass(slots=True)
class Progress:
    """From the first effect seen to the last: the throughput the benchmark reports."""

    target: int
    launched: float
    first_at: float = 0.0
    first_count: int = 0
    done_at: float = 0.0
    samples: list[tuple[float, int]] = field(default_factory=list)
    # Readings of the meters (CPU seconds of each process, of Redis) at first and last.
    at_first: list[float] = field(default_factory=list)
    at_done: list[float] = field(default_factory=list)
    # Readings of the snapshots (e.g. Redis INFO commandstats) at first and last.
    snap_first: list[Any] = field(default_factory=list)
    snap_done: list[Any] = field(default_factory=list)

    @property
    def measured_events(self) -> int:
        """Events applied from the first reading to the last (what the rate counts)."""
        return self.target - self.first_count

    def busy(self, digits: int | None = 2) -> list[float]:
        """Per meter, CPU cores used on average from the first event to the last."""
        span = self.done_at - self.first_at
        cores = [(b - a) / span for a, b in zip(self.at_first, self.at_done, strict=True)]
        return cores if digits is None else [round(c, digits) for c in cores]

    @property
    def rate(self) -> float:
        span = self.done_at - self.first_at
        if span <= 0:
            raise BenchError("the run finished within one poll; use more events")
        return (self.target - self.first_count) / span

    def timeline(self) -> list[int]:
        """Events applied at each whole second after launch (shows stalls, e.g. rebalances)."""
        out: list[int] = []
        for at, n in self.samples:
            while len(out) <= int(at):
                out.append(out[-1] if out else 0)
            out[int(at)] = n
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "events": self.target,
            "events_per_s": round(self.rate, 1),
            "first_to_last_s": round(self.done_at - self.first_at, 3),
            "launch_to_first_s": round(self.first_at - self.launched, 3),
            "launch_to_last_s": round(self.done_at - self.launched, 3),
            "applied_by_second": self.timeline(),
        }


def wait_progress(
    progress: Callable[[], int],
    target: int,
    procs: Sequence[Proc],
    timeout: float,
    what: str,
    launched: float | None = None,
    interval: float = 0.05,
    meters: Sequence[Callable[[], float]] = (),
    snapshots: Sequence[Callable[[], Any]] = (),
) -> Progress:
    """Poll ``progress()`` until it reaches ``target``; fail if a process dies or on timeout.

    ``meters`` (numbers, e.g. CPU seconds) and ``snapshots`` (anything) are read when the
    first effect shows and when the last one does."""
    result = Progress(target, launched if launched is not None else time.monotonic())
    deadline = time.monotonic() + timeout
    last = -1
    while True:
        n = progress()
        now = time.monotonic()
        if n != last:
            result.samples.append((now - result.launched, n))
            last = n
        if n > 0 and not result.first_at:
            result.first_at, result.first_count = now, n
            result.at_first = [meter() for meter in meters]
            result.snap_first = [snap() for snap in snapshots]
        if n >= target:
            result.done_at = now
            result.at_done = [meter() for meter in meters]
            result.snap_done = [snap() for snap in snapshots]
            if n > target:
                raise BenchError(f"{what}: {n} events applied, more than the {target} sent")
            return result
        for proc in procs:
            proc.check()
        if now > deadline:
            raise BenchError(f"{what}: timed out after {timeout:.0f}s at {n}/{target} events")
        time.sleep(interval)
