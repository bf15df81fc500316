"""``pulse rebuild``: recompute Redis state from the input topics.

Two modes, both reading the input topics with a private consumer that joins no consumer
group (the workers' committed offsets are never touched) up to the end offsets taken at
the start, and applying every record through the worker's own pipeline
(:class:`~agents.processor.ActivityProcessor` and :class:`~agents.writer.StateWriter`),
in large batches:

* ``--from-beginning`` (full rebuild): delete the chosen communities' keys, then replay
  every record the topics still hold. For Redis data loss and for a scoring change. The
  workers must be stopped first (a worker writing while keys are deleted could leave an
  event half-counted); the command refuses while the consumer group has members.
* without it (repair): keep the state and replay only the records appended in the last
  ``--since`` hours. Records Redis still has are skipped: each community records the
  last applied offset per input partition with its writes. The ones it lost (Redis
  restarted from an older AOF or snapshot, after the workers had committed past them)
  are applied. It writes as the partitions' current owners, so it can run alongside
  idle workers; their in-memory state already holds the lost events.

A rebuild never publishes a dead letter again (they are in the DLQ already), nor a
moderation flag or segment change (history, not news). An award it records is
published only when its ``award_id`` is not on the awards topic yet: one a worker
announced before Redis lost it is not announced twice, one that only the rebuild
finds (the events that complete it straddle the data loss, or a new catalog) is.
Everything a rebuild records leaves the outboxes, so a worker does not announce it
either.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
import redis
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError as AIOKafkaError
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaTopicPartition
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from agents.consumer import consumer_options
from agents.kafka_io import KafkaError, client_options, ensure_topics, make_producer, ssl_context
from agents.metrics import PulseMetrics
from agents.processor import (
    OUTBOXES,
    ActivityProcessor,
    DeadLetter,
    KafkaUnavailable,
    MessageSink,
    Record,
)
from agents.progress import Progress
from agents.settings import CACHE_BATCHES, Settings
from agents.store import connect, connect_async
from agents.writer import StateWriter
from streams import queries

log = logging.getLogger(__name__)

DEFAULT_BATCH: Final = 5000
DEFAULT_SINCE_HOURS: Final = 24.0
# Records appended this close to the dedupe horizon are left out of a repair: their
# seen markers may expire while the repair runs.
HORIZON_MARGIN: Final = 3600.0
DELETE_CHUNK: Final = 1000


class RebuildError(Exception):
    """The rebuild cannot run (workers active, bad window, unknown topic)."""


@dataclass(slots=True)
class RebuildReport:
    mode: str
    communities: list[str] | None
    deleted_keys: int = 0
    partitions: int = 0
    records_read: int = 0
    records_selected: int = 0
    applied: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    late: dict[str, int] = field(default_factory=dict)
    invalid: dict[str, int] = field(default_factory=dict)
    awards_published: int = 0
    awards_already_published: int = 0
    seconds: float = 0.0

    def public(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "communities": self.communities if self.communities is not None else "all",
            "deleted_keys": self.deleted_keys,
            "partitions": self.partitions,
            "records_read": self.records_read,
            "records_selected": self.records_selected,
            "applied": dict(sorted(self.applied.items())),
            "duplicates": dict(sorted(self.duplicates.items())),
            "late": dict(sorted(self.late.items())),
            "invalid": dict(sorted(self.invalid.items())),
            "awards_published": self.awards_published,
            "awards_already_published": self.awards_already_published,
            "seconds": round(self.seconds, 3),
            "records_per_second": round(self.records_read / self.seconds) if self.seconds else 0,
        }


class CountedDeadLetters:
    """Dead letters of a replay are already in the DLQ: count them, publish nothing."""

    def __init__(self) -> None:
        self.reasons: Counter[str] = Counter()

    async def publish(self, letters: Sequence[DeadLetter]) -> None:
        self.reasons.update(letter.reason for letter in letters)


class Unannounced:
    """Outputs recorded by a replay are not announced again."""

    def __init__(self) -> None:
        self.count = 0

    async def publish(self, messages: Sequence[dict[str, Any]]) -> None:
        self.count += len(messages)


def published_awards(settings: Settings) -> set[str]:
    """The ``award_id`` of every award the awards topic holds."""
    options = client_options(settings)
    options["client_id"] = f"{settings.app_id}-rebuild"
    # kafka-python checks record CRCs in pure Python: half of this scan's time (30,000
    # awards: 1.9 s, 0.9 s without). The broker checked them when the awards were
    # produced; a record damaged since would fail to decode below and its award be
    # announced again, which is harmless.
    consumer = KafkaConsumer(**options, group_id=None, enable_auto_commit=False, check_crcs=False)
    try:
        found = consumer.partitions_for_topic(settings.awards_topic) or set()
        tps = [KafkaTopicPartition(settings.awards_topic, p) for p in sorted(found)]
        if not tps:
            return set()
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        ids: set[str] = set()
        while any(consumer.position(tp) < end[tp] for tp in tps):
            for records in consumer.poll(timeout_ms=1000).values():
                for record in records:
                    try:
                        ids.add(str(orjson.loads(record.value)["award_id"]))
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        continue
        return ids
    finally:
        consumer.close()


class NewAwardsOnly:
    """Publishes the awards whose ``award_id`` is not on the awards topic yet."""

    def __init__(self, settings: Settings, already: set[str]) -> None:
        self._settings = settings
        self._already = already
        self._producer: KafkaProducer | None = None
        self.published = 0
        self.skipped = 0

    def _send(self, messages: Sequence[dict[str, Any]]) -> None:
        if self._producer is None:
            self._producer = make_producer(self._settings)
        futures = [
            self._producer.send(
                self._settings.awards_topic, key=m["member_id"].encode(), value=orjson.dumps(m)
            )
            for m in messages
        ]
        self._producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=30)

    async def publish(self, messages: Sequence[dict[str, Any]]) -> None:
        fresh = [m for m in messages if m["award_id"] not in self._already]
        self.skipped += len(messages) - len(fresh)
        if fresh:
            try:
                await asyncio.to_thread(self._send, fresh)
            except KafkaError as exc:
                raise KafkaUnavailable(str(exc)) from exc
            self._already.update(m["award_id"] for m in fresh)
            self.published += len(fresh)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()


def active_workers(settings: Settings) -> int:
    """Members of the workers' consumer group right now."""
    admin = KafkaAdminClient(**client_options(settings), request_timeout_ms=15000)
    try:
        groups = admin.describe_groups([settings.app_id])
    finally:
        admin.close()
    return len(groups.get(settings.app_id, {}).get("members") or [])


def wipe(client: redis.Redis, prefix: str, communities: Sequence[str] | None) -> int:
    """Delete every key of ``communities`` (all keys under ``prefix`` for ``None``)."""
    patterns = (
        [f"{prefix}:*"] if communities is None else [f"{prefix}:{{{c}}}:*" for c in communities]
    )
    deleted = 0
    for pattern in patterns:
        chunk: list[str] = []
        for key in client.scan_iter(match=pattern, count=DELETE_CHUNK):
            chunk.append(key)
            if len(chunk) >= DELETE_CHUNK:
                deleted += int(client.unlink(*chunk))
                chunk.clear()
        if chunk:
            deleted += int(client.unlink(*chunk))
    return deleted


def _community_of(value: bytes | None) -> str | None:
    try:
        obj = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    community = obj.get("community") if isinstance(obj, dict) else None
    return community if isinstance(community, str) else None


class TopicReader:
    """Reads assigned partitions from given offsets up to end offsets fixed at the start.

    On aiokafka, as the worker reads: its record batches are decoded in C (kafka-python's
    consumer, decoding in Python in a thread that shares the interpreter lock, took
    about half of a rebuild's time).
    """

    def __init__(self, settings: Settings, batch_size: int) -> None:
        self._settings = settings
        self.batch_size = batch_size
        self._consumer: AIOKafkaConsumer | None = None
        self.partitions: list[TopicPartition] = []
        self._end: dict[TopicPartition, int] = {}
        self._open: set[TopicPartition] = set()
        # Records between the start and the end offsets (set by start()).
        self.total = 0

    async def open(self) -> None:
        """Connect and assign every partition of the input topics (RebuildError when
        one does not exist)."""
        settings = self._settings
        options = consumer_options(settings, ssl_context(settings))
        for group_only in ("group_id", "partition_assignment_strategy", "max_poll_interval_ms"):
            options.pop(group_only, None)
        options.update(
            client_id=f"{settings.app_id}-rebuild",
            group_id=None,
            max_poll_records=self.batch_size,
        )
        consumer = self._consumer = AIOKafkaConsumer(**options)
        try:
            await consumer.start()
            # The consumer's own metadata holds only the topics it reads already.
            cluster = await consumer._client.fetch_all_metadata()
        except AIOKafkaError as exc:
            raise RebuildError(
                f"Kafka at {','.join(settings.kafka_bootstrap_servers)}: {exc}"
            ) from None
        for topic in settings.activity_topics:
            found = cluster.partitions_for_topic(topic)
            if not found:
                raise RebuildError(f"input topic {topic!r} does not exist")
            self.partitions += [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(self.partitions)

    @property
    def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the topic reader is not open")
        return self._consumer

    async def start(self, since: float | None) -> None:
        """Fix the end offsets now; start at the beginning, or at records newer than
        ``since`` (epoch seconds)."""
        consumer = self._started
        self._end = dict(await consumer.end_offsets(self.partitions))
        starts: dict[TopicPartition, int]
        if since is None:
            starts = dict(await consumer.beginning_offsets(self.partitions))
        else:
            found = await consumer.offsets_for_times(
                {tp: int(since * 1000) for tp in self.partitions}
            )
            starts = {
                tp: (self._end[tp] if hit is None else hit.offset) for tp, hit in found.items()
            }
        for tp in self.partitions:
            consumer.seek(tp, min(starts[tp], self._end[tp]))
        self._open = {tp for tp in self.partitions if starts[tp] < self._end[tp]}
        consumer.pause(*(set(self.partitions) - self._open))
        self.total = sum(
            max(0, self._end[tp] - min(starts[tp], self._end[tp])) for tp in self.partitions
        )

    @property
    def done(self) -> bool:
        return not self._open

    async def poll(self) -> list[Record]:
        """The next records before the end offsets."""
        consumer = self._started
        out: list[Record] = []
        fetched = await consumer.getmany(timeout_ms=1000, max_records=self.batch_size)
        for tp, records in fetched.items():
            end = self._end[tp]
            out.extend(r for r in records if r.offset < end)
        for tp in list(self._open):
            if await consumer.position(tp) >= self._end[tp]:
                self._open.discard(tp)
                consumer.pause(tp)
        return out

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()


async def _replay(
    settings: Settings,
    reader: TopicReader,
    selected: Callable[[Record], bool],
    report: RebuildReport,
    clock: Callable[[], float],
    awards: NewAwardsOnly | None,
) -> PulseMetrics:
    metrics = PulseMetrics(CollectorRegistry())
    letters = CountedDeadLetters()
    quiet = Unannounced()
    sinks: dict[str, MessageSink] = {kind.name: quiet for kind in OUTBOXES}
    if awards is not None:
        sinks["awards"] = awards
    client = connect_async(settings.redis_url.reveal())
    processor = ActivityProcessor(
        settings,
        StateWriter(client, settings.redis_key_prefix),
        letters,
        metrics,
        sinks,
        clock=clock,
    )
    # After a full rebuild's wipe, Redis holds no state of the chosen communities.
    processor.adopt(
        [(tp.topic, tp.partition) for tp in reader.partitions], blank=report.mode == "full"
    )
    progress = Progress("rebuild", reader.total, unit="records")
    # Evaluating a batch while Redis applies the one before needs the states of both in
    # the cache (an evicted member is reloaded from Redis, which must hold its writes).
    overlap = settings.state_cache_members >= CACHE_BATCHES * reader.batch_size
    applying: asyncio.Task[Any] | None = None
    try:
        # The consumer fetches ahead in the background; a batch is evaluated while
        # Redis applies the one before.
        while True:
            records = await reader.poll()
            finished = reader.done
            report.records_read += len(records)
            chosen = [r for r in records if selected(r)]
            report.records_selected += len(chosen)
            if chosen:
                prepared = await processor.prepare_cooperatively(chosen)
                if applying is not None:
                    await applying
                applying = asyncio.create_task(processor.apply(prepared))
                if not overlap:
                    await applying
            progress.advance(len(records))
            if finished:
                break
        if applying is not None:
            await applying
    finally:
        if applying is not None and not applying.done():
            applying.cancel()
        progress.close()
        await client.aclose()
    report.invalid = dict(letters.reasons)
    return metrics


def _per_community(counter: MetricWrapperBase) -> dict[str, int]:
    """A per-community counter's totals by community."""
    totals: Counter[str] = Counter()
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                totals[sample.labels["community"]] += int(sample.value)
    return dict(totals)


def rebuild(
    settings: Settings,
    communities: Sequence[str] | None,
    *,
    from_beginning: bool,
    since_hours: float = DEFAULT_SINCE_HOURS,
    batch_size: int = DEFAULT_BATCH,
    announce: bool = True,
    clock: Callable[[], float] = time.time,
) -> RebuildReport:
    """Rebuild ``communities`` (``None``: all); see the module docstring for the modes.

    ``announce=False`` publishes no award at all (a dry computation into another key
    prefix, as the fault tests' reference does).
    """
    started = time.monotonic()
    chosen = None if communities is None else sorted({queries.community(c) for c in communities})
    report = RebuildReport("full" if from_beginning else "repair", chosen)
    since: float | None = None
    if not from_beginning:
        horizon = settings.retention.dedupe_seconds - HORIZON_MARGIN
        if not 0 < since_hours * 3600 <= horizon:
            raise queries.BadQuery(
                f"--since must be more than 0 and at most {horizon / 3600:g} hours "
                "(the dedupe memory, PULSE_DEDUPE_TTL_DAYS, minus an hour); "
                "use --from-beginning to rebuild everything"
            )
        since = clock() - since_hours * 3600
    client = connect(settings.redis_url.reveal())
    client.ping()  # fail now, with the CLI's Redis message, rather than retry forever
    if from_beginning and (members := active_workers(settings)):
        raise RebuildError(
            f"{members} worker(s) are consuming in group {settings.app_id!r}; stop them "
            "before a full rebuild (a repair, without --from-beginning, can run beside "
            "idle workers)"
        )
    reader = TopicReader(settings, batch_size)
    awards: NewAwardsOnly | None = None
    wanted = None if chosen is None else frozenset(chosen)

    def selected(record: Record) -> bool:
        return wanted is None or _community_of(record.value) in wanted

    async def replay() -> PulseMetrics:
        nonlocal awards
        try:
            await reader.open()  # refuses a missing input topic, before anything is wiped
            if announce:
                # A producer waits for the metadata of a missing topic, a minute per
                # message; create the outputs as a worker would (never the input: an
                # empty one made here would rebuild nothing after the wipe).
                ensure_topics(settings, inputs=False)
                awards = NewAwardsOnly(settings, published_awards(settings))
            report.partitions = len(reader.partitions)
            if from_beginning:
                report.deleted_keys = wipe(client, settings.redis_key_prefix, chosen)
            # End offsets are fixed after the wipe: everything written before it is
            # replayed.
            await reader.start(since)
            return await _replay(settings, reader, selected, report, clock, awards)
        finally:
            await reader.close()

    try:
        metrics = asyncio.run(replay())
    finally:
        client.close()
        if awards is not None:
            awards.close()
    if awards is not None:
        report.awards_published = awards.published
        report.awards_already_published = awards.skipped
    report.applied = _per_community(metrics.events_processed)
    report.duplicates = _per_community(metrics.events_duplicate)
    report.late = _per_community(metrics.events_late)
    report.seconds = time.monotonic() - started
    return report


def _print_report(report: RebuildReport) -> None:
    body = report.public()
    print(
        f"rebuild ({body['mode']}) of {body['communities']}: read {body['records_read']} "
        f"records from {body['partitions']} partitions in {body['seconds']}s "
        f"({body['records_per_second']}/s), deleted {body['deleted_keys']} keys first"
    )

    def line(label: str, values: Mapping[str, int]) -> None:
        text = ", ".join(f"{k}={v}" for k, v in sorted(values.items())) or "none"
        print(f"  {label:<11}{text}")

    line("applied", report.applied)
    line("duplicates", report.duplicates)
    line("late", report.late)
    line("invalid", report.invalid)
    print(
        f"  awards     {report.awards_published} published, "
        f"{report.awards_already_published} already published before"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """The ``pulse rebuild`` command."""
    from agents.cli import EXIT_OK, EXIT_SERVICE, EXIT_USAGE, CliError

    # kafka-python logs its whole configuration, SASL password included, at DEBUG.
    # Never below what main() chose (CRITICAL: the command reports failures itself).
    kafka_logger = logging.getLogger("kafka")
    kafka_logger.setLevel(max(logging.INFO, logging.getLogger().level, kafka_logger.level))
    communities: Iterable[str] | None = None if args.all else args.community
    try:
        since = float(args.since)
    except ValueError:
        raise CliError(
            f"--since must be a number of hours, got {args.since!r}", EXIT_USAGE
        ) from None
    if not 1 <= args.batch_size <= 100_000:
        raise CliError("--batch-size must be between 1 and 100000", EXIT_USAGE)
    try:
        report = rebuild(
            settings,
            None if communities is None else list(communities),
            from_beginning=args.from_beginning,
            since_hours=since,
            batch_size=args.batch_size,
        )
    except RebuildError as exc:
        raise CliError(str(exc), EXIT_SERVICE) from None
    except KafkaError as exc:
        raise CliError(
            f"Kafka at {','.join(settings.kafka_bootstrap_servers)}: {exc}", EXIT_SERVICE
        ) from None
    if args.json:
        import sys

        sys.stdout.buffer.write(orjson.dumps(report.public(), option=orjson.OPT_INDENT_2) + b"\n")
    else:
        _print_report(report)
    return EXIT_OK
