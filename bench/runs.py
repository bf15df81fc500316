"""S1, S2 and S3: one implementation over the pre-loaded topic, from first to last event.

Each run gets a fresh consumer group and Redis key prefix, so it reads the topic from
the beginning. Throughput counts from the first effect visible in Redis to the last
one (polled every 50 ms): the ``counts`` hashes for community-pulse, a per-run counter
written in the same transaction as the leaderboards for the peers. Every run is then
checked against the generated input; a wrong total stops the benchmark.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.request import urlopen

from bench import procs
from bench.peers.job import done_key
from bench.stack import (
    Names,
    Stack,
    command_delta,
    command_stats,
    commands_per_event,
    counter,
    counts_total,
    delete_prefix,
    redis_cpu,
    verify,
)
from bench.workload import Expected


@dataclass
class Context:
    stack: Stack
    names: Names
    log_dir: Path
    batch_size: int
    worker_env: dict[str, str] = field(default_factory=dict)
    timeout: float = 900.0


def _metric_sums(text: str, name: str) -> tuple[float, float]:
    """(sum, count) of a histogram in Prometheus text."""
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_sum"):
            total += float(line.rpartition(" ")[2])
        elif line.startswith(f"{name}_count"):
            count += float(line.rpartition(" ")[2])
    return total, count


def scrape(port: int) -> str:
    try:
        with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:  # noqa: S310
            return str(response.read().decode())
    except OSError:
        return ""


def _batch_stats(texts: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, key in (
        ("pulse_batch_size", "mean_batch_records"),
        ("pulse_batch_duration_seconds", "mean_batch_ms"),
    ):
        total = count = 0.0
        for text in texts:
            s, c = _metric_sums(text, name)
            total, count = total + s, count + c
        if count:
            value = total / count
            out[key] = round(value * 1000, 2) if key.endswith("_ms") else round(value, 1)
    return out


# What the meters of _shared_meters() report, in their order.
SHARED_CORES = ("redis_cpu_cores", "kafka_cpu_cores", "machine_busy_cores", "machine_steal_cores")


def _shared_meters(redis: Any) -> list[Callable[[], float]]:
    """The meters read beside a job's own processes: Redis, the broker, the machine."""
    return [
        lambda: redis_cpu(redis),
        procs.kafka_broker_cpu,
        procs.machine_busy_seconds,
        procs.machine_steal_seconds,
    ]


def per_event(
    result: dict[str, Any], rate: float | None = None, cores: list[float] | None = None
) -> dict[str, Any]:
    """CPU µs per event of the worker(s), Redis and the broker, and their sum, from the
    cores each used over the measured span: cores x 1e6 / events per second. The
    machine's busy time (everything on it, the benchmark's own polling included) is
    given beside them, outside the sum.

    ``cores``: the unrounded readings, ordered as the result's (workers, then
    ``SHARED_CORES``); without it, the result's rounded cores are used."""
    rate = float(rate or result["events_per_s"])
    if cores is not None:
        workers = len(cores) - len(SHARED_CORES)
        exact = dict(zip(SHARED_CORES, cores[workers:], strict=True))
        result = {**result, "worker_cpu_cores": cores[:workers], **exact}
    parts = {
        "worker": sum(result.get("worker_cpu_cores") or [float("nan")]),
        "redis": result.get("redis_cpu_cores", float("nan")),
        "broker": result.get("kafka_cpu_cores", float("nan")),
    }
    out: dict[str, Any] = {
        k: (round(v * 1e6 / rate, 1) if math.isfinite(v) else None) for k, v in parts.items()
    }
    known = [v for v in out.values() if v is not None]
    out["total"] = round(sum(known), 1) if len(known) == len(parts) else None
    busy = result.get("machine_busy_cores")
    out["machine"] = round(busy * 1e6 / rate, 1) if busy is not None else None
    return out


def _redis_per_event(
    progress: procs.Progress, result: dict[str, Any], own: tuple[str, ...]
) -> None:
    """Redis commands (a script's own included) and Redis CPU per event, over the span
    the rate counts. ``own``: the benchmark's own commands (its meters and polls)."""
    if progress.snap_first and progress.snap_done:
        before, after = progress.snap_first[0], progress.snap_done[0]
        events = progress.measured_events
        result["redis_commands_per_event"] = commands_per_event(before, after, events, own)
        delta = command_delta(before, after, events)
        result["redis_commands"] = {k: v for k, v in delta.items() if k not in own}
    cpu = result["cpu_us_per_event"]["redis"]
    result["redis_cpu_us_per_event"] = cpu


# The benchmark's own Redis commands during a run: its meters (INFO) and its polls of
# progress (HVALS of the counts hashes; GET of a peer's done counter).
OURS_POLL = ("info", "hvals")
PEER_POLL = ("info", "get")


def run_ours(
    ctx: Context,
    scenario: str,
    topic: str,
    expected: Expected,
    workers: int = 1,
    extra_env: Mapping[str, str] | None = None,
    profile_out: Path | None = None,
    keep_keys: bool = False,
) -> dict[str, Any]:
    """community-pulse workers (one Faust worker process each) on ``topic``."""
    prefix = ctx.names.prefix(scenario)
    redis = ctx.stack.redis()
    env_extra = {**ctx.worker_env, **(extra_env or {})}
    reference_ms = procs.reference_loop_ms()
    started: list[procs.Proc] = []
    ports: list[int] = []
    try:
        for i in range(workers):
            port = procs.free_port()
            ports.append(port)
            env = procs.worker_env(ctx.stack, ctx.names, scenario, topic, port, env_extra)
            argv = ["-m", "agents", "worker"]
            wrapper: list[str] = []
            if profile_out is not None:
                spy = pyspy()
                if spy:
                    wrapper = [spy, "record", "--rate", "200", "--function", "--full-filenames"]
                    wrapper += ["--format", "raw", "-o", str(profile_out), "--"]
                else:
                    argv = ["-m", "bench.profile_worker", str(profile_out)]
            name = f"{scenario}-w{i}"
            started.append(procs.start(name, argv, env, ctx.log_dir, wrapper))
        communities = list(expected.points)
        progress = procs.wait_progress(
            lambda: counts_total(redis, prefix, communities),
            expected.events,
            started,
            ctx.timeout,
            scenario,
            launched=started[0].started,
            meters=[
                *(p.cpu_seconds for p in started),
                *_shared_meters(redis),
            ],
            snapshots=[lambda: command_stats(redis)],
        )
        texts = [scrape(port) for port in ports]
        memory = [p.status() for p in started]
    finally:
        for proc in started:
            # Under py-spy: stop the worker (its child); py-spy then writes the profile.
            children = proc.children() if profile_out is not None else []
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGTERM)
            if children:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(60)
            proc.stop(grace=60)
            # A worker that ignored SIGTERM must not outlive the profiler that wrapped it.
            for child in children:
                with contextlib.suppress(OSError):
                    # Only if that pid is still our worker (not a recycled pid).
                    if b"agents" in Path(f"/proc/{child}/cmdline").read_bytes():
                        os.kill(child, signal.SIGKILL)
    result = progress.summary()
    busy = progress.busy()
    result["worker_cpu_cores"] = busy[:workers]
    result.update(zip(SHARED_CORES, busy[workers:], strict=True))
    result["reference_loop_ms"] = reference_ms
    result["workers"] = workers
    result["worker_rss_mb"] = [round(m.get("VmRSS", 0) / 2**20, 1) for m in memory]
    result["worker_peak_rss_mb"] = [round(m.get("VmHWM", 0) / 2**20, 1) for m in memory]
    result["cpu_us_per_event"] = per_event(result, cores=progress.busy(digits=None))
    _redis_per_event(progress, result, OURS_POLL)
    result.update(_batch_stats(texts))
    result["verified"] = verify(redis, prefix, expected, scenario)
    if not keep_keys:
        delete_prefix(redis, prefix)
    return result


def run_peer(ctx: Context, peer: str, topic: str, expected: Expected, tag: str) -> dict[str, Any]:
    """A peer job (``quix`` or ``faust_naive``) on ``topic``."""
    scenario = f"{peer.split('_')[0][:5]}{tag}"
    prefix = ctx.names.prefix(scenario)
    state_dir = Path("/tmp") / f"{ctx.names.base}-{scenario}-state"  # noqa: S108
    redis = ctx.stack.redis()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}
    env.update(
        {
            "BENCH_BOOTSTRAP": ctx.stack.bootstrap,
            "BENCH_REDIS_URL": ctx.stack.redis_url,
            "BENCH_TOPIC": topic,
            "BENCH_GROUP": ctx.names.group(scenario),
            "BENCH_PREFIX": prefix,
            "BENCH_STATE_DIR": str(state_dir),
            "BENCH_COMMIT_INTERVAL": "1.0",
        }
    )
    module = {"quix": "bench.peers.quix_job", "faust_naive": "bench.peers.faust_naive"}[peer]
    reference_ms = procs.reference_loop_ms()
    proc = procs.start(scenario, ["-m", module], env, ctx.log_dir)
    try:
        progress = procs.wait_progress(
            lambda: counter(redis, done_key(prefix)),
            expected.events,
            [proc],
            ctx.timeout,
            scenario,
            launched=proc.started,
            meters=[
                proc.cpu_seconds,
                *_shared_meters(redis),
            ],
            snapshots=[lambda: command_stats(redis)],
        )
        memory = proc.status()
    finally:
        proc.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
    result = progress.summary()
    busy = progress.busy()
    result["worker_cpu_cores"] = busy[:1]
    result.update(zip(SHARED_CORES, busy[1:], strict=True))
    result["reference_loop_ms"] = reference_ms
    result["worker_peak_rss_mb"] = [round(memory.get("VmHWM", 0) / 2**20, 1)]
    result["cpu_us_per_event"] = per_event(result, cores=progress.busy(digits=None))
    _redis_per_event(progress, result, PEER_POLL)
    result["verified"] = verify(redis, prefix, expected, peer, counts=False)
    delete_prefix(redis, prefix)
    return result


def pyspy() -> str | None:
    """The py-spy executable next to this interpreter, if it can trace a child here."""
    path = Path(sys.executable).with_name("py-spy")
    if not path.exists():
        return None
    check = subprocess.run(  # noqa: S603
        [
            str(path),
            "record",
            "-d",
            "1",
            "-o",
            os.devnull,
            "-f",
            "raw",
            "--",
            sys.executable,
            "-c",
            "import time; time.sleep(1.5)",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return str(path) if check.returncode == 0 else None
