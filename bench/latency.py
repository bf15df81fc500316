"""S4: latency at a steady load, produce time to Redis-visible and to award published.

A worker runs on a fresh topic. A producer thread sends the generated events at a fixed
rate; about ``probes_per_s`` of them are probes: a ``github.pr_merged`` from a member
never seen before, which must (a) appear on the community's all-time leaderboard and
(b) earn the ``first-merge`` badge. A watcher thread asks Redis every few milliseconds
for the outstanding probes (one ``ZMSCORE`` per community, pipelined); a consumer thread
reads the awards topic. Latency is from just before ``produce()`` to the moment the
watcher sees the effect, so it includes the producer's linger (``PRODUCER_LINGER_MS``), the
poll interval (reported) and the round trip of the check.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Producer

from bench import procs
from bench.runs import Context, per_event, scrape
from bench.stack import (
    BenchError,
    compact_aof,
    counts_total,
    create_topic,
    delete_prefix,
    redis_cpu,
    redis_forks,
)
from bench.workload import Workload
from streams.keys import KeyLayout
from streams.periods import format_instant

POLL_INTERVAL = 0.005
# The load generator's linger. It shares the machine's two cores with the system under
# test: at 6,000 events/s over 12 partitions its produce requests alone cost the broker
# 0.28 - 0.32 cores with a 5 ms linger and 0.14 with 20 ms (docs/performance.md). A
# probe waits up to this long in the producer, and that wait counts in its latency.
PRODUCER_LINGER_MS = 20


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def worker_histogram(text: str, name: str = "pulse_processing_latency_seconds") -> dict[str, Any]:
    """The worker's own view (Kafka record timestamp to applied): mean and bucket bounds."""
    buckets: list[tuple[float, float]] = []
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(le), float(line.rpartition(" ")[2])))
        elif line.startswith(f"{name}_sum"):
            total = float(line.rpartition(" ")[2])
        elif line.startswith(f"{name}_count"):
            count = float(line.rpartition(" ")[2])
    if not count:
        return {}

    def bound(q: float) -> float:
        return next(le for le, c in sorted(buckets) if c >= q * count)

    return {
        "events": int(count),
        "mean_ms": round(total / count * 1000, 1),
        "p50_le_s": bound(0.5),
        "p99_le_s": bound(0.99),
    }


def _stats(values: list[float]) -> dict[str, Any]:
    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 1)

    return {
        "samples": len(values),
        "p50_ms": ms(percentile(values, 50)),
        "p99_ms": ms(percentile(values, 99)),
        "p99_9_ms": ms(percentile(values, 99.9)),
        "max_ms": ms(max(values) if values else None),
    }


def run(
    ctx: Context,
    scenario: str,
    workload: Workload,
    rate: float,
    duration: float,
    probes_per_s: float = 100.0,
    warmup: float = 3.0,
) -> dict[str, Any]:
    names, stack = ctx.names, ctx.stack
    topic = names.topic(f"{scenario}.activity")
    create_topic(stack, topic)
    prefix = names.prefix(scenario)
    redis = stack.redis()
    port = procs.free_port()
    env = procs.worker_env(stack, names, scenario, topic, port, ctx.worker_env)
    awards_topic = env.get("PULSE_TOPIC_AWARDS")
    communities = sorted({orjson.loads(v)["community"] for _, v in workload.messages[:1000]})
    worker = procs.start(f"{scenario}-w0", ["-m", "agents", "worker"], env, ctx.log_dir)
    producer = Producer(
        {
            "bootstrap.servers": stack.bootstrap,
            "acks": "all",
            "linger.ms": PRODUCER_LINGER_MS,
            "enable.idempotence": True,
        }
    )
    try:
        # Warm up: the worker has joined and applies events.
        for key, value in workload.messages[:500]:
            producer.produce(topic, value, key)
        producer.flush(30)
        procs.wait_progress(
            lambda: counts_total(redis, prefix, communities),
            500,
            [worker],
            120,
            f"{scenario} warm-up",
        )
        # A fork (AOF rewrite) inside the 10 - 60 s window adds a few hundred ms to the
        # p99 on two cores: start each run on a freshly rewritten AOF, and report the
        # forks that still fell inside it.
        compacted = compact_aof(redis)
        result = _measure(
            ctx,
            scenario,
            workload,
            rate,
            duration,
            probes_per_s,
            warmup,
            topic,
            prefix,
            communities,
            worker,
            producer,
            awards_topic,
        )
        result["aof_rewrite_before_s"] = compacted
        result["worker_histogram"] = worker_histogram(scrape(port))
        return result
    finally:
        worker.stop()
        delete_prefix(redis, prefix)


def _measure(
    ctx: Context,
    scenario: str,
    workload: Workload,
    rate: float,
    duration: float,
    probes_per_s: float,
    warmup: float,
    topic: str,
    prefix: str,
    communities: list[str],
    worker: procs.Proc,
    producer: Producer,
    awards_topic: str | None,
) -> dict[str, Any]:
    redis = ctx.stack.redis()
    total = int(rate * (duration + warmup))
    source = workload.messages[500:]
    if len(source) < total:
        raise BenchError(f"{scenario}: the workload has {len(source)} events, {total} needed")
    probe_every = max(1, int(rate / probes_per_s))
    sent: dict[str, tuple[str, float]] = {}  # probe member -> (community, sent at)
    # Probes sent and not yet seen, per community: the watcher asks about these only, so
    # its work does not grow with the probes of the whole run (at 100 probes/s and a
    # poll every 5 ms, scanning every probe sent took the machine's CPU from the system
    # under test as a run went on).
    waiting: dict[str, set[str]] = defaultdict(set)
    visible: dict[str, float] = {}
    awarded: dict[str, float] = {}
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[str] = []

    def watch() -> None:
        layouts = {c: KeyLayout(prefix, c).leaderboard("all", "all") for c in communities}
        while not stop.is_set() or len(visible) < len(sent):
            with lock:
                order = [(c, list(members)) for c, members in waiting.items() if members]
            if order:
                pipe = redis.pipeline(transaction=False)
                for community, members in order:
                    pipe.zmscore(layouts[community], members)
                replies = pipe.execute()
                seen_at = time.monotonic()
                for (community, members), scores in zip(order, replies, strict=True):
                    seen = [m for m, s in zip(members, scores, strict=True) if s is not None]
                    for member in seen:
                        visible[member] = seen_at
                    with lock:
                        waiting[community].difference_update(seen)
            if stop.is_set() and time.monotonic() > stop_deadline[0]:
                return
            time.sleep(POLL_INTERVAL)

    def awards() -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": ctx.stack.bootstrap,
                "group.id": ctx.names.group(f"{scenario}-awards"),
                "auto.offset.reset": "earliest",
                # librdkafka's default fetch wait (500 ms): the broker answers a fetch
                # as soon as an award is appended, so a shorter wait only adds empty
                # fetches. At 5 ms they cost the broker 0.08 cores, taken from the
                # system under test (measured on an empty topic).
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([awards_topic])
        try:
            while not (stop.is_set() and time.monotonic() > stop_deadline[0]):
                msg = consumer.poll(0.05)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                        errors.append(str(msg.error()))
                    continue
                got = time.monotonic()
                try:
                    member = orjson.loads(msg.value())["member_id"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    continue
                if member.startswith("probe-"):
                    awarded.setdefault(member, got)
                if stop.is_set() and len(awarded) >= len(sent):
                    return
        finally:
            consumer.close()

    stop_deadline = [float("inf")]
    threads = [threading.Thread(target=watch, daemon=True)]
    if awards_topic:
        threads.append(threading.Thread(target=awards, daemon=True))
    for thread in threads:
        thread.start()
    reference_ms = procs.reference_loop_ms()
    cpu0 = worker.cpu_seconds()
    redis0 = redis_cpu(redis)
    broker0 = procs.kafka_broker_cpu()
    steal0 = procs.machine_steal_seconds()
    forks0 = redis_forks(redis)
    t0 = time.monotonic()
    i = 0
    probe_n = 0
    warm_until = t0 + warmup
    measured_probes: set[str] = set()
    while i < total:
        due = min(total, int((time.monotonic() - t0) * rate) + 1)
        while i < due:
            key, value = source[i]
            if i % probe_every == 0:
                community = communities[probe_n % len(communities)]
                member = f"probe-{probe_n:06d}"
                probe_n += 1
                value = orjson.dumps(
                    {
                        "event_id": f"{member}-merge",
                        "type": "github.pr_merged",
                        "member_id": member,
                        "community": community,
                        "source": "github",
                        "channel": "core",
                        "occurred_at": format_instant(time.time()),
                    }
                )
                now = time.monotonic()
                with lock:
                    sent[member] = (community, now)
                    waiting[community].add(member)
                if now >= warm_until:
                    measured_probes.add(member)
                producer.produce(topic, value, member.encode())
            else:
                producer.produce(topic, value, key)
            i += 1
        producer.poll(0)
        time.sleep(0.001)
    elapsed = time.monotonic() - t0
    producer.flush(30)
    cpu = worker.cpu_seconds() - cpu0
    redis_cores = (redis_cpu(redis) - redis0) / elapsed
    broker_cores = (procs.kafka_broker_cpu() - broker0) / elapsed
    steal = procs.machine_steal_seconds() - steal0
    forks = redis_forks(redis) - forks0
    stop_deadline[0] = time.monotonic() + 30
    stop.set()
    for thread in threads:
        thread.join(40)
    worker.check()
    lat = [visible[m] - sent[m][1] for m in measured_probes if m in visible]
    award_lat = [awarded[m] - sent[m][1] for m in measured_probes if m in awarded]
    # p50 per second of send time: shows a transient or a backlog building up.
    per_second: dict[int, list[float]] = defaultdict(list)
    for member in measured_probes:
        if member in visible:
            per_second[int(sent[member][1] - t0)].append(visible[member] - sent[member][1])
    result: dict[str, Any] = {
        "p50_ms_by_second": [
            round((percentile(v, 50) or 0) * 1000) for _, v in sorted(per_second.items())
        ],
        "target_rate": round(rate, 1),
        "achieved_rate": round(total / elapsed, 1),
        "seconds": round(elapsed, 1),
        "poll_interval_ms": POLL_INTERVAL * 1000,
        "worker_cpu_cores": [round(cpu / elapsed, 2)],
        "redis_cpu_cores": round(redis_cores, 2),
        "kafka_cpu_cores": round(broker_cores, 2),
        "machine_steal_cores": round(steal / elapsed, 2),
        "redis_forks": forks,
        "reference_loop_ms": reference_ms,
        "visible": _stats(lat),
        "missing_visible": len(measured_probes) - len(lat),
    }
    # Over the sending time (the producer's own CPU, the benchmark's, left out).
    result["cpu_us_per_event"] = per_event(result, result["achieved_rate"])
    if awards_topic:
        result["award"] = _stats(award_lat)
        result["missing_awards"] = len(measured_probes) - len(award_lat)
        if errors:
            result["award_errors"] = errors[:3]
    else:
        result["award"] = "TODO: the worker has no awards topic setting yet"
    if result["missing_visible"]:
        raise BenchError(f"{scenario}: {result['missing_visible']} probes never became visible")
    return result
