"""The naive Faust agent (S3 peer): one Redis round trip per event.

What a first version of a stream job often looks like: iterate the stream one event at
a time, and for each event await one Redis pipeline with its ``ZINCRBY`` s.

Run by the harness: ``python -m bench.peers.faust_naive`` with ``BENCH_*`` variables.
"""

from __future__ import annotations

from typing import Any

import faust
import orjson
import redis.asyncio as aioredis

from bench.peers.job import done_key, env, leaderboard_moves


def main() -> None:
    prefix = env("BENCH_PREFIX")
    app = faust.App(
        env("BENCH_GROUP"),
        broker=f"kafka://{env('BENCH_BOOTSTRAP')}",
        store="memory://",
        datadir=env("BENCH_STATE_DIR"),
        autodiscover=False,
        web_enabled=False,
        topic_partitions=12,
        consumer_auto_offset_reset="earliest",
        loghandlers=[],
    )
    topic = app.topic(env("BENCH_TOPIC"), key_serializer="raw", value_serializer="raw")
    url = env("BENCH_REDIS_URL")
    done = done_key(prefix)

    @app.agent(topic, name="naive")
    async def naive(stream: Any) -> None:
        client = aioredis.Redis.from_url(url)
        async for value in stream:
            event = orjson.loads(value)
            async with client.pipeline(transaction=True) as pipe:
                for key, earned in leaderboard_moves(prefix, event):
                    pipe.zincrby(key, -earned, event["member_id"])
                pipe.incr(done)
                await pipe.execute()

    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
