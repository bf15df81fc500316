"""The worker's input: Kafka records taken in batches, applied in order, committed once applied.

Faust's agents hand a stream its records one at a time, through the conductor, a channel
queue and the stream iterator. In the worker that path cost more than decoding and
planning the batch (see docs/performance.md). So the worker reads its input topics with
its own aiokafka consumer, in batches, inside the Faust app: Faust still runs the
producer, the web server, the timers and the worker's lifecycle.

Guarantees, the same as with the Faust agent before:

- A batch's offsets are committed only after :meth:`ActivityProcessor.apply` returned,
  i.e. once Redis, the dead-letter topic and the output topics hold all its effects.
  Nothing else commits: auto-commit is off.
- Batches are recorded in Redis (one fenced write per community) one at a time, in
  order. Batch N+1's write runs while batch N publishes its outputs and commits, and
  while batch N+2 is evaluated. It starts once batch N+2 is decoded and its member
  load sent (or nothing more was fetched): Redis runs one call at a time, and a load
  queued behind a batch's write would wait for all of it, with the worker idle.
  Commits are made in batch order.
- The worker owns the member state of its partitions. Partitions are assigned with
  Kafka's range assignor, so partition ``p`` of every input topic goes to the same
  worker: a member's events (keyed by ``member_id``) all reach one owner, provided the
  input topics have the same number of partitions.
- Before partitions are taken away in a rebalance, the batches in flight are applied
  and committed; then the state is dropped. A batch evaluated before the rebalance but
  not written yet is dropped (its records are read again from the committed offsets).
  On assignment the worker takes a new owner epoch per partition: a write of an older
  owner (a zombie paused across the rebalance) is refused by Redis, and the zombie
  drops its state and reads again from its committed offsets.
- On shutdown the batch in flight is finished and committed when
  ``PULSE_SHUTDOWN_WAIT_FOR_BATCHES`` is true; otherwise it is abandoned uncommitted and
  redelivered to the next worker. Either way the consumer stops within
  ``STOP_BATCHES_SECONDS`` + ``STOP_CONSUMER_SECONDS`` (20 s), whatever state Kafka and
  Redis are in: a batch still not applied by then is abandoned, uncommitted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import IllegalStateError, KafkaError
from kafka.partitioner.default import murmur2
from mode import Service

from agents.dependencies import DependencyHealth
from agents.metrics import PulseMetrics
from agents.processor import ActivityProcessor, PreparedBatch, StaleBatch
from agents.settings import Settings
from agents.writer import Fenced

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_RETRY_DELAY = 30.0
FETCH_MIN_BYTES = 16 * 1024
FETCH_MAX_WAIT_MS = 20
# How long a batch waits for the fetch its own take from the buffer sent (see _fresher).
FRESH_WAIT_MS = 5
# Shutdown grace: the batches in flight, then the consumer's leave-group.
STOP_BATCHES_SECONDS = 15.0
STOP_CONSUMER_SECONDS = 5.0


def consumer_options(settings: Settings, ssl_context: Any) -> dict[str, Any]:
    """aiokafka options of the worker's consumer: the group, no auto-commit, security."""
    options: dict[str, Any] = {
        "bootstrap_servers": list(settings.kafka_bootstrap_servers),
        "client_id": f"{settings.app_id}-worker",
        "group_id": settings.app_id,
        "enable_auto_commit": False,
        # Partition p of every input topic to the same worker: the owner of a member.
        "partition_assignment_strategy": (RangePartitionAssignor,),
        "auto_offset_reset": "earliest",
        "max_poll_records": settings.batch_size,
        # A fetch returns once 16 KB are there or after 20 ms: with the default (any
        # byte), a steady producer with a 5 ms linger makes one fetch per produce, and
        # the broker spent 0.14 cores answering them at 5,000 events/s (0.03 so).
        "fetch_min_bytes": FETCH_MIN_BYTES,
        "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
        # A worker stalled on a Redis outage stops polling; it keeps its partitions
        # (and the unapplied batch stays uncommitted) for this long before the group
        # moves them on.
        "max_poll_interval_ms": 1_000_000,
        # A SIGKILLed worker keeps its partitions until its session times out: 6 s (the
        # broker's default minimum) lets the group move them on within 10 s.
        "session_timeout_ms": 6_000,
        "heartbeat_interval_ms": 1_000,
        "security_protocol": settings.kafka_security_protocol,
    }
    if ssl_context is not None:
        options["ssl_context"] = ssl_context
    if settings.kafka_security_protocol.startswith("SASL_"):
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password.reveal(),
        )
    return options


class _FinishBeforeRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: ActivityConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._owner.settle()
        self._owner.processor.reset()

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        partitions = sorted((tp.topic, tp.partition) for tp in assigned)
        await self._owner.processor.assign(partitions)
        log.info("assigned %d input partition(s)", len(partitions))


class ActivityConsumer(Service):
    """Consumes the input topics in batches and applies them through the processor."""

    def __init__(
        self,
        settings: Settings,
        processor: ActivityProcessor,
        metrics: PulseMetrics,
        options: dict[str, Any],
        health: DependencyHealth | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._health = health
        self._settings = settings
        self._processor = processor
        self._metrics = metrics
        self._options = options
        self._consumer: AIOKafkaConsumer | None = None
        self._runner: asyncio.Future[None] | None = None
        # The newest batch task; it finishes after every batch before it.
        self._in_flight: asyncio.Future[None] | None = None
        self._batches: set[asyncio.Future[None]] = set()
        self._stopping = False
        # Set when a batch was dropped unwritten (fenced or stale): read again from the
        # committed offsets once the batches in flight are done.
        self._refetch = False
        self._next_sweep = 0.0
        # The newest batch's permission to write: given once the next batch's member
        # load is on its way to Redis, or when there is no next batch yet (see _run).
        self._gate: asyncio.Event | None = None

    @property
    def processor(self) -> ActivityProcessor:
        return self._processor

    async def on_start(self) -> None:
        consumer = AIOKafkaConsumer(**self._options)
        await consumer.start()
        consumer.subscribe(
            topics=list(self._settings.activity_topics), listener=_FinishBeforeRevoke(self)
        )
        self._consumer = consumer

    async def on_started(self) -> None:
        self._runner = asyncio.ensure_future(self._run())

    async def on_stop(self) -> None:
        self._stopping = True
        runner = self._runner
        if runner is not None:
            finished = False
            if self._settings.shutdown_wait:
                # The loop sees _stopping within one poll and finishes its batches,
                # unless Kafka or Redis is down: then they are abandoned below.
                done, _ = await asyncio.wait([runner], timeout=STOP_BATCHES_SECONDS)
                finished = bool(done)
                if not finished:
                    log.warning(
                        "batches not applied after %.0fs; abandoned uncommitted",
                        STOP_BATCHES_SECONDS,
                    )
            if not finished:
                # Abandoned, not committed: the next worker gets these records again.
                abandoned = [runner, *self._batches]
                for future in abandoned:
                    future.cancel()
                await asyncio.gather(*abandoned, return_exceptions=True)
        if self._consumer is not None:
            try:
                # stop() leaves the group, which waits for a coordinator that may be gone.
                await asyncio.wait_for(self._consumer.stop(), STOP_CONSUMER_SECONDS)
            except TimeoutError:
                log.warning(
                    "Kafka did not answer the consumer's stop within %.0fs", STOP_CONSUMER_SECONDS
                )

    def _release(self) -> None:
        """Let the newest batch write."""
        if self._gate is not None:
            self._gate.set()

    async def settle(self) -> None:
        """Wait until the batches in flight are applied and committed (or abandoned by a
        shutdown that does not wait)."""
        self._release()
        if self._in_flight is not None:
            # wait(), not await: a cancelled batch must not fail the rebalance listener.
            await asyncio.wait([self._in_flight])

    @property
    def _started_consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the input consumer has not started")
        return self._consumer

    async def _run(self) -> None:
        consumer = self._started_consumer
        processor = self._processor
        recovered = await processor.drain_outboxes()
        if recovered:
            log.info("published %d message(s) left in outboxes by a previous run", recovered)
        timeout_ms = max(1, round(self._settings.batch_within * 1000))
        size = self._settings.batch_size
        recorded: asyncio.Future[None] | None = None
        # The batch task before the newest one.
        older: asyncio.Future[None] | None = None
        try:
            while not self._stopping:
                if self._refetch:
                    await self._read_again()
                    continue
                if asyncio.get_running_loop().time() >= self._next_sweep:
                    await self._sweep()
                # The batch before waits to write until this batch's load is sent (a
                # load queued behind a write waits for all of it in Redis); with
                # nothing fetched yet, it writes now rather than after the wait.
                fetched = await consumer.getmany(timeout_ms=0, max_records=size)
                if not fetched:
                    self._release()
                    fetched = await consumer.getmany(timeout_ms=timeout_ms, max_records=size)
                if not fetched:
                    continue
                fetched = await self._fresher(consumer, fetched, size)
                if self._health is not None:
                    self._health.fetched()
                records = [record for batch in fetched.values() for record in batch]
                offsets = {tp: batch[-1].offset + 1 for tp, batch in fetched.items()}
                # Evaluated while Redis applies the batch before it.
                try:
                    prepared = await processor.prepare_cooperatively(records, self._release)
                except StaleBatch:
                    self._release()
                    self._refetch = True
                    continue
                # At most two batches in flight: the one before this one recorded (its write
                # call done), and the one before that done (published and committed).
                if recorded is not None:
                    await asyncio.shield(recorded)
                if older is not None:
                    await asyncio.shield(older)
                older = self._in_flight
                recorded = asyncio.get_running_loop().create_future()
                gate = self._gate = asyncio.Event()
                task = asyncio.ensure_future(
                    self._apply_then_commit(prepared, offsets, recorded, self._in_flight, gate)
                )
                self._batches.add(task)
                task.add_done_callback(self._batches.discard)
                self._in_flight = task
            await self.settle()
        except Exception as exc:
            # Nothing is committed past what was applied, so the safe end is to stop the
            # worker (mode marks the app crashed) and let the group hand the partitions
            # to a healthy one.
            log.exception("the input consumer failed; stopping the worker")
            self._release()
            self._stopping = True
            await self.crash(exc)

    @staticmethod
    async def _fresher(
        consumer: AIOKafkaConsumer, fetched: dict[TopicPartition, list[Any]], size: int
    ) -> dict[TopicPartition, list[Any]]:
        """Add what the broker received while the batch before was processed.

        aiokafka does not fetch a partition while records of it are buffered, so the
        buffer holds what the fetch sent after the previous batch's take brought: the
        records that arrived during that batch are still at the broker. Emptying the
        buffer lets the consumer fetch them; under load the broker answers at once
        (``FETCH_MIN_BYTES`` are there), and this batch takes them now instead of the
        next batch. S4 at 7,000 events/s: the newest record of a batch was 42 ms old
        when taken (median), 6 ms with this. At a trickle the wait adds
        ``FRESH_WAIT_MS`` to a batch.
        """
        room = size - sum(len(batch) for batch in fetched.values())
        if room <= 0:
            return fetched
        more = await consumer.getmany(timeout_ms=FRESH_WAIT_MS, max_records=room)
        for tp, batch in more.items():
            fetched[tp] = fetched[tp] + batch if tp in fetched else batch
        return fetched

    async def _apply_then_commit(
        self,
        batch: PreparedBatch,
        offsets: dict[TopicPartition, int],
        recorded: asyncio.Future[None],
        before: asyncio.Future[None] | None,
        gate: asyncio.Event | None = None,
    ) -> None:
        """Record the batch in Redis, then (after the batch before it is done) publish
        its outputs and commit its offsets.

        Two batches overlap at most: this one's write runs while the one before
        publishes its outputs and commits.
        """
        try:
            if gate is not None:
                await gate.wait()
            if self._refetch:
                raise StaleBatch("a batch before this one was dropped")
            result = await self._retrying(batch, lambda: self._processor.record(batch))
        except (Fenced, StaleBatch) as exc:
            # Not written, not committed: read again from the committed offsets.
            if isinstance(exc, Fenced):
                log.warning("batch refused, %s; reading again from the committed offsets", exc)
            self._refetch = True
            return
        finally:
            if not recorded.done():
                recorded.set_result(None)
        if before is not None:
            await asyncio.shield(before)
        outcome = await self._retrying(batch, lambda: self._processor.publish(result))
        await self._commit(offsets)
        if self._health is not None:
            self._health.applied()
        log.debug("batch of %d: %s", batch.size, outcome)

    async def _read_again(self) -> None:
        """After a dropped batch: once nothing is in flight, forget the engine state and
        go back to the committed offsets (the beginning where nothing is committed)."""
        await self.settle()
        consumer = self._started_consumer
        self._processor.reset()
        assigned = consumer.assignment()
        try:
            if assigned:
                committed = await consumer.seek_to_committed(*assigned)
                fresh = [tp for tp, offset in committed.items() if not offset]
                if fresh:
                    await consumer.seek_to_beginning(*fresh)
        except IllegalStateError:
            # The group rebalanced meanwhile: the new assignment starts from the
            # committed offsets anyway.
            log.info("partitions reassigned while going back to the committed offsets")
        self._refetch = False
        await asyncio.sleep(0.1)

    def partition_of(self, member_id: str) -> int:
        """The input partition number of a member (the producers' default partitioner,
        murmur2 of the key, as kafka-python and aiokafka use)."""
        consumer = self._started_consumer
        partitions = consumer.partitions_for_topic(self._settings.activity_topics[0]) or {0}
        return int(murmur2(member_id.encode()) & 0x7FFFFFFF) % len(partitions)

    async def _sweep(self) -> None:
        """Segment downgrades due by stream time, between batches."""
        loop = asyncio.get_running_loop()
        self._next_sweep = loop.time() + self._settings.segment_sweep_seconds
        await self.settle()
        if self._refetch:
            return
        try:
            changed = await self._processor.sweep_segments(self.partition_of)
        except Fenced as exc:
            log.warning("segment sweep refused, %s", exc)
            self._refetch = True
            return
        except Exception:
            log.exception(
                "segment sweep failed; trying again in %.0fs", self._settings.segment_sweep_seconds
            )
            return
        if changed:
            log.info("segment sweep: %d downgrade(s) published", changed)

    @staticmethod
    async def _retrying(batch: PreparedBatch, attempt: Callable[[], Awaitable[T]]) -> T:
        delay = 0.5
        while True:
            try:
                return await attempt()
            except (Fenced, StaleBatch):
                raise
            except Exception:
                # Redis and broker outages are retried inside the processor; anything
                # else (a bug, an unexpected error) must not skip the batch either: keep
                # it, say so loudly, and try again.
                log.exception("batch of %d failed; retrying in %.1fs", batch.size, delay)
                await asyncio.sleep(delay)
                delay = min(MAX_RETRY_DELAY, delay * 2)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        consumer = self._started_consumer
        owned = consumer.assignment()
        mine = {tp: offset for tp, offset in offsets.items() if tp in owned}
        if not mine:
            return
        try:
            await consumer.commit(mine)
        except KafkaError as exc:
            # Not committing is always safe: the records are redelivered and their
            # effects are idempotent. A later batch commits past them.
            self._metrics.commit_errors.inc()
            log.warning(
                "could not commit offsets (%s: %s); the records will be redelivered",
                type(exc).__name__,
                exc,
            )

    async def kafka_reachable(self) -> bool:
        """Whether a metadata request to Kafka succeeds (bounded by the caller)."""
        consumer = self._consumer
        if consumer is None:
            return False
        await consumer._client.fetch_all_metadata()
        return True

    async def lag(self) -> dict[str, int]:
        """Messages behind the high watermark, per input topic, over this worker's partitions.

        A partition whose high watermark or position is not known yet (just assigned, or
        the broker is restarting) is left out until it is.
        """
        lag = dict.fromkeys(self._settings.activity_topics, 0)
        consumer = self._consumer
        if consumer is None:
            return lag
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            try:
                position = await asyncio.wait_for(consumer.position(tp), 1.0)
            except (TimeoutError, KafkaError):
                continue
            if highwater is not None and tp.topic in lag:
                lag[tp.topic] += max(0, highwater - position)
        return lag
