"""The benchmark's private slice of the shared local stack, and how it is cleaned up.

Every name a run creates carries ``bench-<run id>``: topics ``bench-<id>.<what>``,
consumer groups and Redis key prefixes ``bench-<id>-<what>``. At the end the run deletes
exactly those topics, groups and keys (never anything else; never FLUSHALL).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bench.workload import Expected
from streams.keys import KeyLayout

PARTITIONS = 12


class BenchError(Exception):
    """The benchmark cannot go on, or a result is wrong. Printed loudly, exit code 1."""


@dataclass(frozen=True, slots=True)
class Stack:
    bootstrap: str
    redis_url: str

    @classmethod
    def from_env(cls) -> Stack:
        bootstrap = os.environ.get("PULSE_KAFKA_BOOTSTRAP_SERVERS")
        url = os.environ.get("PULSE_REDIS_URL")
        if not bootstrap or not url:
            raise BenchError(
                "PULSE_KAFKA_BOOTSTRAP_SERVERS / PULSE_REDIS_URL are not set: run through "
                "`bash bench/run.sh`, which reads them from deploy/local/stack.sh env"
            )
        return cls(bootstrap, url)

    def redis(self, decode: bool = True) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, decode_responses=decode, socket_timeout=60)

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap})


@dataclass(frozen=True, slots=True)
class Names:
    """Names of one benchmark run."""

    run_id: str

    @classmethod
    def new(cls) -> Names:
        return cls(secrets.token_hex(3))

    @property
    def base(self) -> str:
        return f"bench-{self.run_id}"

    def topic(self, what: str) -> str:
        return f"{self.base}.{what}"

    def group(self, what: str) -> str:
        return f"{self.base}-{what}"

    def prefix(self, what: str) -> str:
        prefix = f"{self.base}-{what}"
        if len(prefix) > 32:
            raise BenchError(f"key prefix {prefix!r} is longer than 32 characters")
        return prefix


# --- Kafka ----------------------------------------------------------------------------


def create_topic(stack: Stack, name: str, partitions: int = PARTITIONS) -> None:
    admin = stack.admin()
    futures = admin.create_topics([NewTopic(name, partitions, 1)], request_timeout=30)
    for future in futures.values():
        future.result(timeout=60)
    # Wait until the metadata shows every partition with a leader.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        meta = admin.list_topics(name, timeout=10).topics.get(name)
        ready = meta is not None and meta.error is None and len(meta.partitions) == partitions
        if ready and all(p.leader >= 0 for p in meta.partitions.values()):
            return
        time.sleep(0.2)
    raise BenchError(f"topic {name} did not get leaders for {partitions} partitions")


def preload(stack: Stack, topic: str, messages: Iterable[tuple[bytes, bytes]]) -> float:
    """Produce every message (acks=all) and return the seconds it took."""
    producer = Producer(
        {
            "bootstrap.servers": stack.bootstrap,
            "acks": "all",
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "enable.idempotence": True,
        }
    )
    errors: list[str] = []

    def report(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    started = time.monotonic()
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(120) != 0:
        raise BenchError(f"preloading {topic}: messages still unsent after 120 s")
    if errors:
        raise BenchError(f"preloading {topic}: {len(errors)} failed, e.g. {errors[0]}")
    return time.monotonic() - started


def delete_run_topics_and_groups(stack: Stack, names: Names) -> tuple[list[str], list[str]]:
    """Delete every topic and consumer group whose name carries this run's id."""
    admin = stack.admin()
    topics = [t for t in admin.list_topics(timeout=15).topics if names.base in t]
    if topics:
        for future in admin.delete_topics(topics, request_timeout=30).values():
            with contextlib.suppress(KafkaException):  # already gone
                future.result(timeout=60)
    groups: list[str] = []
    try:
        listed = admin.list_consumer_groups(request_timeout=15).result(timeout=30)
        groups = [g.group_id for g in listed.valid if names.base in g.group_id]
        if groups:
            for future in admin.delete_consumer_groups(groups, request_timeout=30).values():
                # Fails when the group still has members or is gone already.
                with contextlib.suppress(KafkaException):
                    future.result(timeout=60)
    except KafkaException:
        pass
    return topics, groups


# --- Redis ----------------------------------------------------------------------------


def scan_keys(client: redis.Redis, prefix: str) -> Iterable[str]:
    """Every key of ``prefix`` (the prefix has no glob characters: see KeyLayout)."""
    yield from client.scan_iter(match=f"{prefix}:*", count=5000)


def delete_prefix(client: redis.Redis, prefix: str) -> int:
    deleted = 0
    batch: list[str] = []
    for key in scan_keys(client, prefix):
        batch.append(key)
        if len(batch) >= 5000:
            deleted += int(client.unlink(*batch))
            batch.clear()
    if batch:
        deleted += int(client.unlink(*batch))
    return deleted


def counts_total(client: redis.Redis, prefix: str, communities: Iterable[str]) -> int:
    """Events applied so far, from the documented per-community ``counts`` hashes."""
    pipe = client.pipeline(transaction=False)
    for community in communities:
        pipe.hvals(KeyLayout(prefix, community).counts())
    return sum(int(v) for values in pipe.execute() for v in values)


def counter(client: redis.Redis, key: str) -> int:
    value = client.get(key)
    return int(value) if value is not None else 0


def all_time_board(client: redis.Redis, prefix: str, community: str) -> dict[str, int]:
    key = KeyLayout(prefix, community).leaderboard("all", "all")
    rows: Any = client.zrange(key, 0, -1, withscores=True)
    return {str(m): -int(s) for m, s in rows}


def verify(
    client: redis.Redis,
    prefix: str,
    expected: Expected,
    what: str,
    counts: bool = True,
) -> dict[str, Any]:
    """Compare all-time per-community totals per member (and event counts) with the input.

    Raises :class:`BenchError` naming the first differences.
    """
    problems: list[str] = []
    checked = 0
    for community, board in expected.points.items():
        got = all_time_board(client, prefix, community)
        want = {m: p for m, p in board.items() if p != 0}
        checked += len(want)
        if got != want:
            diff = [m for m in sorted(set(got) | set(want)) if got.get(m) != want.get(m)]
            problems.append(
                f"{community}: {len(diff)} members differ, e.g. "
                + ", ".join(f"{m} got {got.get(m)} want {want.get(m)}" for m in diff[:3])
            )
        if counts:
            raw = client.hgetall(KeyLayout(prefix, community).counts())
            got_counts = {k: int(v) for k, v in raw.items()}
            if got_counts != dict(expected.counts[community]):
                problems.append(
                    f"{community}: counts {got_counts} != {dict(expected.counts[community])}"
                )
    if problems:
        raise BenchError(f"{what}: WRONG RESULTS ({prefix}): " + "; ".join(problems))
    return {"ok": True, "members_checked": checked}


# Kinds of keys in the S5 memory breakdown. A member's profile hash also holds the
# member's engine state (the ``state`` field: dedupe digests, badge counters and days,
# the 30-day score, moderation windows); ``memory_by_category`` reports that field as a
# kind of its own, "member state", and the rest of the hash as "member profile".
MEMBER_STATE = "member state"
MEMBER_PROFILE = "member profile"
STATE_FIELD = "state"


def _category(key: str) -> str:
    """The kind of a key, from the documented layout ``prefix:{community}:<kind>:...``."""
    _, tag, rest = key.partition("}:")
    if not tag:
        # prefix:epoch:<topic>:<partition> (the owner epochs of the input partitions)
        # and prefix:communities (the communities seen, for draining outboxes).
        if ":epoch:" in key or key.endswith(":communities"):
            return "engine (offsets, epochs)"
        return "other"
    parts = rest.split(":")
    kind = parts[0]
    if kind == "member":
        sub = parts[2] if len(parts) > 2 else ""
        if sub in ("", "days"):
            return MEMBER_PROFILE
        if sub == "badges":
            return "badges"
        return f"member:{sub}"
    if kind == "members":
        return MEMBER_PROFILE  # the first/last-seen indexes
    if kind in ("lb", "win"):
        return {"lb": "leaderboards", "win": "windows"}[kind]
    if kind in ("counts", "events", "feedback"):
        return "counters"
    if kind in ("thread", "ttfr"):
        return "threads"
    if kind == "offsets":
        return "engine (offsets, epochs)"
    if kind.startswith(("award", "badge")):
        return "badges"
    if kind.startswith("seg"):
        return "segments"
    if kind.startswith(("mod", "flag")):
        return "moderation"
    return kind


def _is_member_hash(key: str) -> bool:
    _, tag, rest = key.partition("}:")
    parts = rest.split(":")
    return bool(tag) and len(parts) == 2 and parts[0] == "member"


def memory_by_category(
    client: redis.Redis, prefix: str, max_exact: int = 400_000
) -> dict[str, Any]:
    """Bytes (MEMORY USAGE) of the prefix's keys, by kind of key.

    A member hash is split: the length of its ``state`` field (``HSTRLEN``) counts as
    "member state", the rest of the hash as "member profile". Beyond ``max_exact``
    keys, one key in ``n`` is measured and the sums are scaled by the exact key counts
    of each kind.
    """
    keys = list(scan_keys(client, prefix))
    step = max(1, -(-len(keys) // max_exact))
    count: Counter[str] = Counter()
    sampled: Counter[str] = Counter()
    measured: dict[str, int] = defaultdict(int)
    largest_state = 0
    for key in keys:
        kind = _category(key)
        count[kind] += 1
        if _is_member_hash(key):
            count[MEMBER_STATE] += 1
    sample = keys[::step]
    for start in range(0, len(sample), 5000):
        chunk = sample[start : start + 5000]
        pipe = client.pipeline(transaction=False)
        for key in chunk:
            if _is_member_hash(key):
                # Every field: with one large field among small ones, 5 samples mislead.
                pipe.memory_usage(key, samples=0)
                pipe.hstrlen(key, STATE_FIELD)
            else:
                pipe.memory_usage(key, samples=5)
        replies = iter(pipe.execute())
        for key in chunk:
            used = int(next(replies) or 0)
            kind = _category(key)
            sampled[kind] += 1
            if _is_member_hash(key):
                state = min(used, int(next(replies) or 0))
                largest_state = max(largest_state, state)
                sampled[MEMBER_STATE] += 1
                measured[MEMBER_STATE] += state
                used -= state
            measured[kind] += used
    result: dict[str, Any] = {"keys": len(keys), "sampled_one_in": step, "by_kind": {}}
    total = 0
    for kind in sorted(count):
        scaled = int(measured[kind] * count[kind] / max(1, sampled[kind]))
        total += scaled
        # The state is a field of the member hashes, not keys of its own.
        keys_of_kind = 0 if kind == MEMBER_STATE else count[kind]
        result["by_kind"][kind] = {"keys": keys_of_kind, "bytes": scaled}
    result["bytes"] = total
    result["member_states"] = count[MEMBER_STATE]
    result["largest_member_state_bytes"] = largest_state
    return result


# The parts of a member's state record (streams.state.to_record), by what they serve.
STATE_SECTIONS = {
    "seen": "dedupe (event id digests)",
    "received": "dedupe (event id digests)",
    "counters": "badges",
    "days": "badges",
    "badges": "badges",
    "score": "30-day score",
    "flood": "moderation windows",
    "crosspost": "moderation windows",
    "bursts": "moderation windows",
}


def state_sections(client: redis.Redis, prefix: str, sample: int = 1000) -> dict[str, Any]:
    """What the ``state`` field of member hashes is made of: per part of the state, the
    JSON bytes it adds to the record (the record with that part at its default value is
    that much shorter), over up to ``sample`` member hashes spread over the keyspace."""
    import dataclasses

    import orjson

    from agents.writer import encode_state
    from streams.state import MemberState, from_record

    fields = [f.name for f in dataclasses.fields(MemberState)]
    empty = MemberState()
    members = [key for key in scan_keys(client, prefix) if _is_member_hash(key)]
    picked = members[:: max(1, len(members) // sample)][:sample]
    pipe = client.pipeline(transaction=False)
    for key in picked:
        pipe.hget(key, STATE_FIELD)
    by_part: Counter[str] = Counter()
    sizes: list[int] = []
    for raw in pipe.execute():
        if raw is None:
            continue
        try:
            state = from_record(orjson.loads(raw))
        except ValueError as exc:  # a record of another layout version
            return {"skipped": str(exc)}
        full = len(encode_state(state))
        sizes.append(len(raw))
        rest = full
        for name in fields:
            stripped = dataclasses.replace(state, **{name: getattr(empty, name)})
            part = full - len(encode_state(stripped))
            by_part[STATE_SECTIONS.get(name, "profile copy")] += part
            rest -= part
        by_part["record framing"] += rest
    if not sizes:
        return {}
    total = sum(by_part.values())
    sizes.sort()
    return {
        "sampled": len(sizes),
        "mean_bytes": round(sum(sizes) / len(sizes)),
        "median_bytes": sizes[len(sizes) // 2],
        "max_bytes": sizes[-1],
        "share_pct": {k: round(100 * v / max(1, total), 1) for k, v in by_part.most_common()},
    }


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def command_stats(client: redis.Redis) -> dict[str, tuple[int, int]]:
    """Per command: (calls, microseconds) since the server started (scripts' calls included)."""
    stats = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
        for name, v in stats.items()
    }


def command_delta(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], events: int
) -> dict[str, dict[str, float]]:
    """Calls and microseconds per event of each command between two snapshots."""
    out: dict[str, dict[str, float]] = {}
    for name, (calls, usec) in after.items():
        c0, u0 = before.get(name, (0, 0))
        if calls - c0 > 0:
            out[name] = {
                "calls_per_event": round((calls - c0) / events, 2),
                "us_per_event": round((usec - u0) / events, 2),
            }
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["us_per_event"]))


def commands_per_event(
    before: dict[str, tuple[int, int]],
    after: dict[str, tuple[int, int]],
    events: int,
    exclude: Iterable[str] = ("info",),
) -> float:
    """All Redis commands per event between two snapshots (a script's own commands
    included), leaving out ``exclude``: the benchmark's own meters and polls."""
    skip = set(exclude)
    calls = sum(
        c - before.get(name, (0, 0))[0] for name, (c, _) in after.items() if name not in skip
    )
    return round(calls / max(1, events), 2)


def redis_forks(client: redis.Redis) -> int:
    """AOF rewrites and RDB snapshots Redis has made: each forks the server, and the
    child's work (the whole data set, serialized) takes a core from the machine."""
    info: Mapping[str, Any] = client.info("persistence")
    return int(info["aof_rewrites"]) + int(info["rdb_saves"])


def compact_aof(client: redis.Redis, timeout: float = 180.0) -> float:
    """Rewrite the AOF now and wait for it: a latency run then starts as far from the
    next rewrite as it can (the local stack rewrites after 1 GB of growth). Seconds it
    took."""
    started = time.monotonic()
    while client.info("persistence")["aof_rewrite_in_progress"]:
        _wait_rewrite(started, timeout)
    client.bgrewriteaof()
    while True:
        info: Mapping[str, Any] = client.info("persistence")
        if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
            return round(time.monotonic() - started, 1)
        _wait_rewrite(started, timeout)


def _wait_rewrite(started: float, timeout: float) -> None:
    if time.monotonic() - started > timeout:
        raise BenchError(f"Redis did not finish rewriting its AOF within {timeout:.0f}s")
    time.sleep(0.2)


def redis_cpu(client: redis.Redis) -> float:
    """Seconds of CPU the Redis server has used (all of it: the stack is shared)."""
    info: Mapping[str, Any] = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
