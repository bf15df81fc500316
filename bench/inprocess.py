"""The worker's batch pipeline driven in-process, without Kafka and without Faust.

The same :class:`~agents.processor.ActivityProcessor` and
:class:`~agents.store.BatchWriter` the worker and ``pulse rebuild`` use, fed with
batches of the generated records straight from memory, with the writer timed. That
splits the cost of an event into "Python in the worker" (decode, validate, plan,
metrics, outboxes) and "apply" (redis-py encoding, the round trip, the Lua call), and,
with ``--profile``, gives a pyinstrument profile free of Faust's machinery.

Outputs that a worker would publish (dead letters, awards, flags, segment changes) are
counted instead, like ``pulse rebuild`` does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.stack import Stack, command_delta, command_stats, redis_cpu
from bench.workload import Workload


class TimedWriter:
    """Delegates to the real writer and adds up the seconds spent in ``apply``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.seconds = 0.0
        self.calls = 0

    def encode(self, plan: Any) -> Any:
        return self._inner.encode(plan)

    async def apply(self, plans: Sequence[Any], encoded: Sequence[Any] | None = None) -> Any:
        started = time.perf_counter()
        try:
            return await self._inner.apply(plans, encoded)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def _run(
    stack: Stack, workload: Workload, prefix: str, batch: int | None, profile: Path | None
) -> dict[str, Any]:
    from aiokafka.structs import ConsumerRecord
    from prometheus_client import CollectorRegistry

    from agents.metrics import PulseMetrics
    from agents.processor import OUTBOXES, ActivityProcessor
    from agents.rebuild import CountedDeadLetters, Unannounced
    from agents.settings import Settings
    from agents.store import BatchWriter, connect_async

    settings = Settings.from_env(
        {
            "PULSE_REDIS_URL": stack.redis_url,
            "PULSE_REDIS_KEY_PREFIX": prefix,
            "PULSE_KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
        }
    )
    batch = batch or settings.batch_size
    client = connect_async(stack.redis_url)
    writer = TimedWriter(BatchWriter(client, prefix))
    quiet = Unannounced()
    letters = CountedDeadLetters()
    processor = ActivityProcessor(
        settings,
        writer,
        letters,
        PulseMetrics(CollectorRegistry()),
        {kind.name: quiet for kind in OUTBOXES},
    )
    stamp = round(time.time() * 1000)
    records = [
        ConsumerRecord("bench", i % 12, i, stamp, 0, key, value, None, 0, len(value), ())
        for i, (key, value) in enumerate(workload.messages)
    ]
    profiler = None
    if profile is not None:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.002, async_mode="disabled")
    sync = stack.redis()
    cpu0 = redis_cpu(sync)
    stats0 = command_stats(sync)
    if profiler is not None:
        profiler.start()
    started = time.perf_counter()
    applied = 0
    try:
        for start in range(0, len(records), batch):
            outcome = await processor.process(records[start : start + batch])
            applied += outcome.applied
    finally:
        elapsed = time.perf_counter() - started
        if profiler is not None:
            profiler.stop()
        await client.aclose()
    cpu = redis_cpu(sync) - cpu0
    n = len(records)
    # Redis counts the commands a script runs too, so this splits the Lua call's cost.
    commands = command_delta(stats0, command_stats(sync), n)
    result: dict[str, Any] = {
        "events": n,
        "applied": applied,
        "batch": batch,
        "events_per_s": round(n / elapsed, 1),
        "us_per_event_total": round(elapsed / n * 1e6, 1),
        "us_per_event_python": round((elapsed - writer.seconds) / n * 1e6, 1),
        "us_per_event_apply": round(writer.seconds / n * 1e6, 1),
        "redis_cpu_us_per_event": round(cpu / n * 1e6, 1),
        "outputs_counted": quiet.count,
        "invalid": dict(letters.reasons),
        "redis_commands": commands,
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
