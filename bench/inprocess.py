"""The worker's batch pipeline driven in-process, without Kafka and without Faust.

The same :class:`~agents.processor.ActivityProcessor` and
:class:`~agents.writer.StateWriter` the worker uses, fed with batches of the generated
records straight from memory. The processor owns the 12 partitions of a made-up input
topic (``assign``, as a worker after a rebalance); each member's records go to one
partition (a stable hash of the key, the member id), with increasing offsets, so each
member's state is evaluated in one place, as in the worker.

The writer is timed: ``load`` (member states and partition claims, one round trip per
batch with new members) and ``write`` (the fenced ``EVALSHA`` per community). That
splits the cost of an event into "Python in the worker" (decode, validate, evaluate,
encode, metrics, outboxes), load and write; with ``--profile``, it gives a pyinstrument
profile free of Faust's machinery. Redis's ``INFO commandstats`` and CPU deltas over
the run give Redis commands and Redis CPU per event.

Outputs that a worker would publish (dead letters, awards, flags, segment changes) are
counted instead, like ``pulse rebuild`` does.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.stack import (
    PARTITIONS,
    Stack,
    command_delta,
    command_stats,
    commands_per_event,
    redis_cpu,
)
from bench.workload import Workload

TOPIC = "bench.inprocess"


class TimedWriter:
    """Delegates to the real writer and adds up the seconds spent in ``load`` and ``write``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.load_seconds = 0.0
        self.loads = 0
        self.write_seconds = 0.0
        self.writes = 0
        self.payload_bytes = 0

    async def load(
        self,
        claims: Mapping[Any, Sequence[tuple[str, int]]],
        members: Sequence[Any],
        *args: Any,
    ) -> Any:
        started = time.perf_counter()
        try:
            return await self._inner.load(claims, members, *args)
        finally:
            self.load_seconds += time.perf_counter() - started
            self.loads += 1

    async def write(self, batches: Sequence[tuple[str, str, Sequence[bytes]]]) -> list[Any]:
        self.payload_bytes += sum(len(arg) for _, _, argv in batches for arg in argv)
        started = time.perf_counter()
        try:
            replies: list[Any] = await self._inner.write(batches)
            return replies
        finally:
            self.write_seconds += time.perf_counter() - started
            self.writes += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def partition_of(key: bytes | None) -> int:
    """A member's partition: a stable hash of the record key (the member id)."""
    return zlib.crc32(key or b"") % PARTITIONS


def records(workload: Workload, stamp: int) -> list[Any]:
    """The workload as consumer records of ``TOPIC``: per partition, offsets 0, 1, ..."""
    from aiokafka.structs import ConsumerRecord

    offsets = [0] * PARTITIONS
    out = []
    for key, value in workload.messages:
        p = partition_of(key)
        out.append(
            ConsumerRecord(TOPIC, p, offsets[p], stamp, 0, key, value, None, 0, len(value), ())
        )
        offsets[p] += 1
    return out


async def _run(
    stack: Stack, workload: Workload, prefix: str, batch: int | None, profile: Path | None
) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry

    from agents.metrics import PulseMetrics
    from agents.processor import OUTBOXES, ActivityProcessor
    from agents.rebuild import CountedDeadLetters, Unannounced
    from agents.settings import Settings
    from agents.store import connect_async
    from agents.writer import StateWriter

    settings = Settings.from_env(
        {
            "PULSE_REDIS_URL": stack.redis_url,
            "PULSE_REDIS_KEY_PREFIX": prefix,
            "PULSE_KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
        }
    )
    batch = batch or settings.batch_size
    client = connect_async(stack.redis_url)
    writer = TimedWriter(StateWriter(client, prefix))
    quiet = Unannounced()
    letters = CountedDeadLetters()
    processor = ActivityProcessor(
        settings,
        writer,
        letters,
        PulseMetrics(CollectorRegistry()),
        {kind.name: quiet for kind in OUTBOXES},
    )
    items = records(workload, round(time.time() * 1000))
    profiler = None
    if profile is not None:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.002, async_mode="disabled")
    sync = stack.redis()
    applied = 0
    try:
        # As a worker after a rebalance: a new owner epoch per partition.
        await processor.assign([(TOPIC, p) for p in range(PARTITIONS)])
        cpu0 = redis_cpu(sync)
        stats0 = command_stats(sync)
        if profiler is not None:
            profiler.start()
        own0 = time.process_time()
        started = time.perf_counter()
        try:
            for start in range(0, len(items), batch):
                outcome = await processor.process(items[start : start + batch])
                applied += outcome.applied
        finally:
            elapsed = time.perf_counter() - started
            own = time.process_time() - own0
            if profiler is not None:
                profiler.stop()
    finally:
        await client.aclose()
    stats1 = command_stats(sync)
    cpu = redis_cpu(sync) - cpu0
    n = len(items)
    python = elapsed - writer.write_seconds - writer.load_seconds

    def per_event(seconds: float) -> float:
        return round(seconds / n * 1e6, 1)

    result: dict[str, Any] = {
        "events": n,
        "applied": applied,
        "batch": batch,
        "state_cache_members": settings.state_cache_members,
        "events_per_s": round(n / elapsed, 1),
        "us_per_event_total": per_event(elapsed),
        "us_per_event_python": per_event(python),
        "us_per_event_load": per_event(writer.load_seconds),
        "us_per_event_write": per_event(writer.write_seconds),
        "loads": writer.loads,
        "writes": writer.writes,
        "payload_bytes_per_event": round(writer.payload_bytes / n, 1),
        "redis_cpu_us_per_event": per_event(cpu),
        # This process (the worker's part) and Redis; there is no broker here.
        "cpu_us_per_event": {
            "worker": per_event(own),
            "redis": per_event(cpu),
            "total": per_event(own + cpu),
        },
        # Redis counts the commands a script runs too: what the EVALSHA executes.
        "redis_commands_per_event": commands_per_event(stats0, stats1, n),
        "redis_commands": {
            k: v for k, v in command_delta(stats0, stats1, n).items() if k != "info"
        },
        "outputs_counted": quiet.count,
        "invalid": dict(letters.reasons),
    }
    if profiler is not None and profile is not None:
        from bench.profiling import summarize

        profile.parent.mkdir(parents=True, exist_ok=True)
        profile.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
        result["profile"] = str(profile)
        result["profile_top"] = summarize(profiler.last_session)
    return result


def run(
    stack: Stack,
    workload: Workload,
    prefix: str,
    batch: int | None = None,
    profile: Path | None = None,
) -> dict[str, Any]:
    """Replay the workload through the processor; ``batch`` defaults to the worker's."""
    return asyncio.run(_run(stack, workload, prefix, batch, profile))
