"""The scoring + leaderboard job written with Quix Streams (S3 peer).

Idiomatic Quix: a ``StreamingDataFrame`` over the input topic, a stateful ``apply``
that keeps each member's running totals per leaderboard in Quix's RocksDB state (with
its changelog topic, the Quix default), and a batching Redis sink built on Quix's own
``RedisSink`` (client setup, one transactional pipeline per batch at each checkpoint),
writing ``ZADD`` of the absolute totals instead of ``SET``.

Run by the harness: ``python -m bench.peers.quix_job`` with ``BENCH_*`` variables.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from quixstreams import Application, State
from quixstreams.sinks import SinkBatch
from quixstreams.sinks.community.redis import RedisSink

from bench.peers.job import done_key, env, leaderboard_moves


class LeaderboardSink(RedisSink):
    """Quix's Redis sink, writing sorted-set scores (negated totals) per batch."""

    def __init__(self, url: str, prefix: str) -> None:
        parts = urlsplit(url)
        super().__init__(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            db=int((parts.path or "/0").lstrip("/") or 0),
            password=parts.password,
        )
        self._done = done_key(prefix)

    def write(self, batch: SinkBatch) -> None:
        latest: dict[str, dict[str, int]] = {}
        events = 0
        for item in batch:
            events += 1
            member = item.value["member"]
            for key, total in item.value["totals"]:
                latest.setdefault(key, {})[member] = -total
        with self._client.pipeline(transaction=True) as pipe:  # type: ignore[union-attr]
            for key, scores in latest.items():
                pipe.zadd(key, scores)
            pipe.incrby(self._done, events)
            pipe.execute(raise_on_error=True)


def main() -> None:
    prefix = env("BENCH_PREFIX")

    def score(event: dict[str, Any], state: State[Any, Any]) -> dict[str, Any]:
        # State is scoped to the message key (member_id), so keys are per member.
        totals = []
        for key, earned in leaderboard_moves(prefix, event):
            total = state.get(key, 0) + earned
            state.set(key, total)
            totals.append((key, total))
        return {"member": event["member_id"], "totals": totals}

    app = Application(
        broker_address=env("BENCH_BOOTSTRAP"),
        consumer_group=env("BENCH_GROUP"),
        auto_offset_reset="earliest",
        commit_interval=float(env("BENCH_COMMIT_INTERVAL")),
        state_dir=env("BENCH_STATE_DIR"),
        loglevel=logging.WARNING,
    )
    topic = app.topic(env("BENCH_TOPIC"), key_deserializer="str", value_deserializer="json")
    sdf = app.dataframe(topic)
    sdf = sdf.apply(score, stateful=True)
    sdf.sink(LeaderboardSink(env("BENCH_REDIS_URL"), prefix))
    app.run()


if __name__ == "__main__":
    main()
