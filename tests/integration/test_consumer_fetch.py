"""The worker's batch takes what the broker received while the batch before was
processed (``ActivityConsumer._fresher``), against the real broker: in offset order,
nothing twice, never more than a batch."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.consumer import ActivityConsumer
from tests.integration.conftest import Sandbox


def offsets(fetched: dict[TopicPartition, list[Any]]) -> dict[int, list[int]]:
    return {tp.partition: [r.offset for r in batch] for tp, batch in fetched.items()}


def test_a_batch_adds_the_next_records_in_order_up_to_its_size(sandbox: Sandbox) -> None:
    producer = sandbox.producer()
    for i in range(60):
        producer.send(sandbox.activity_topic, value=b"%d" % i, partition=i % 2)
    producer.flush(timeout=60)
    producer.close()
    parts = [TopicPartition(sandbox.activity_topic, p) for p in (0, 1)]

    async def run() -> list[dict[int, list[int]]]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=sandbox.stack.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            seen = []
            first = await consumer.getmany(timeout_ms=10_000, max_records=8)
            seen.append(offsets(first))
            # Room for 12 more: the buffer still holds the fetched rest.
            seen.append(offsets(await ActivityConsumer._fresher(consumer, first, 20)))
            full = await consumer.getmany(timeout_ms=10_000, max_records=5)
            # No room: the batch is left as it is.
            seen.append(offsets(await ActivityConsumer._fresher(consumer, full, 5)))
            rest = await consumer.getmany(timeout_ms=10_000, max_records=1)
            seen.append(offsets(rest))
            return seen
        finally:
            await consumer.stop()

    first, grown, full, after = asyncio.run(run())
    assert sum(map(len, first.values())) == 8
    assert sum(map(len, grown.values())) == 20
    for partition, taken in grown.items():
        # The records the first take had, then the next ones, each once, in order.
        assert taken[: len(first.get(partition, []))] == first.get(partition, [])
        assert taken == list(range(taken[0], taken[0] + len(taken)))
    assert sum(map(len, full.values())) == 5
    # Nothing was taken past the full batch: the next record follows what was taken.
    ((partition, (next_offset,)),) = after.items()
    taken = grown.get(partition, []) + full.get(partition, [])
    assert next_offset == (max(taken) + 1 if taken else 0)
