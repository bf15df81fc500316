"""Redis faults: stopped mid-stream, out of memory, restarted empty or from an older
snapshot, and a worker asked to stop while Redis is away.

The module's Redis runs with an append-only file (``appendfsync always``), like the
local stack's (which fsyncs every second): a restart keeps every acknowledged write.
"""

from __future__ import annotations

import re
import time

import orjson
from kafka import TopicPartition

from tests.faults.conftest import Lab, WorkerProcess, make_stream, metric_value, wait_for
from tests.faults.guarantees import check_guarantees, reference_state, snapshot


def test_redis_outage_is_retried_with_backoff_and_commits_nothing_past_it(lab: Lab) -> None:
    worker = lab.start_worker()
    now = time.time()
    lab.send(make_stream(1000, seed=11, now=now))
    lab.wait_caught_up()
    before = lab.committed()
    lab.stack.redis.stop()
    feed = lab.feed(make_stream(2000, seed=12, now=now), seconds=4)
    wait_for(
        lambda: metric_value(worker.metrics(), "pulse_redis_errors_total") >= 6,
        60,
        "failed attempts to show in the metrics",
    )
    feed.join()
    time.sleep(3)  # several commit intervals (1 s in this tier)
    assert lab.committed() == before, "offsets moved while Redis was down"
    assert sum(lab.end_offsets().values()) > sum(before.values())
    # Backoff: the delays grow (0.1 s doubling) up to the 5 s cap.
    retry = r"could not apply a batch to Redis .*?retrying in ([\d.]+)s"
    delays = [float(d) for d in re.findall(retry, worker.log())]
    assert delays[:6] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2], delays
    assert max(delays) <= 5.0
    lab.stack.redis.start()
    verdict = check_guarantees(lab)
    print(verdict)
    assert worker.alive()


def hold_a_batch_while_redis_is_down(
    lab: Lab, seeds: tuple[int, int], **env: str
) -> tuple[WorkerProcess, dict[TopicPartition, int]]:
    """A worker that has committed one stream and holds a batch of the next one, which it
    cannot apply because Redis is stopped; returns it and the offsets committed before."""
    worker = lab.start_worker(**env)
    now = time.time()
    lab.send(make_stream(500, seed=seeds[0], now=now))
    lab.wait_caught_up()
    before = lab.committed()
    lab.stack.redis.stop()
    lab.send(make_stream(500, seed=seeds[1], now=now))
    wait_for(lambda: "could not apply a batch to Redis" in worker.log(), 30, "a failed attempt")
    return worker, before


def test_sigterm_while_redis_is_down_waits_then_flushes_and_commits(lab: Lab) -> None:
    worker, before = hold_a_batch_while_redis_is_down(lab, seeds=(21, 22))
    code, _ = worker.terminate(timeout=6)
    assert code is None, "the worker exited with an unapplied batch"
    assert lab.committed() == before
    lab.stack.redis.start()
    code, seconds = worker.terminate(timeout=60)
    assert code == 0, worker.log()[-3000:]
    print(f"exited {seconds:.1f}s after Redis came back")
    # It applied the batch it held, and committed everything it applied.
    assert lab.caught_up() or lab.committed() != before
    lab.start_worker()
    check_guarantees(lab)


def test_a_shutdown_that_does_not_wait_never_commits_an_unapplied_batch(lab: Lab) -> None:
    """Faust's take_events acks a batch in a ``finally`` even when the agent is cancelled;
    with PULSE_SHUTDOWN_WAIT_FOR_BATCHES=false (Faust's stream_wait_empty) a SIGTERM
    cancels the agent mid-retry. Before the fix the consumer then committed the
    unapplied batch and it was lost."""
    worker, before = hold_a_batch_while_redis_is_down(
        lab, seeds=(31, 32), PULSE_SHUTDOWN_WAIT_FOR_BATCHES="false"
    )
    code, seconds = worker.terminate(timeout=30)
    assert code == 0, worker.log()[-3000:]
    assert lab.committed() == before, "the unapplied batch was committed"
    lab.stack.redis.start()
    lab.start_worker()
    check_guarantees(lab)


def test_redis_out_of_memory_is_retried_not_skipped(lab: Lab) -> None:
    """Redis refusing writes (OOM; also READONLY, MISCONF) used to crash the agent, and
    Faust then committed the batch it had not applied."""
    worker = lab.start_worker()
    now = time.time()
    lab.send(make_stream(500, seed=41, now=now))
    lab.wait_caught_up()
    before = lab.committed()
    client = lab.redis()
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", str(client.info("memory")["used_memory"]))
    try:
        lab.send(make_stream(500, seed=42, now=now))
        wait_for(lambda: "OutOfMemoryError" in worker.log(), 30, "the OOM error")
        time.sleep(3)
        assert lab.committed() == before
    finally:
        client.config_set("maxmemory", "0")
    check_guarantees(lab)
    assert "Crashed reason" not in worker.log()


def test_redis_restarted_empty_is_recovered_by_a_full_rebuild(lab: Lab) -> None:
    worker = lab.start_worker()
    now = time.time()
    lab.send(make_stream(1500, seed=51, now=now))
    lab.wait_caught_up()
    server = lab.stack.redis
    server.kill()
    server.wipe()
    server.start()
    # The worker carries on with new events only: Redis lost everything before.
    lab.send(make_stream(300, seed=52, now=now))
    lab.wait_caught_up()
    assert snapshot(lab.redis(), lab.prefix) != reference_state(lab)

    refused = lab.pulse("rebuild", "--all", "--from-beginning")
    assert refused.returncode == 1
    assert "stop them before a full rebuild" in refused.stderr
    assert worker.terminate()[0] == 0
    done = lab.pulse("rebuild", "--all", "--from-beginning", "--json")
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert sum(report["applied"].values()) == 1800
    assert report["invalid"], report
    lab.start_worker()
    lab.send(make_stream(200, seed=53, now=now))
    verdict = check_guarantees(lab)
    print(verdict, report)


def test_redis_restored_from_an_older_snapshot_is_repaired_while_workers_run(lab: Lab) -> None:
    server = lab.stack.redis
    server.stop()
    server.start(appendonly=False)  # RDB snapshots only, taken by hand below
    try:
        worker = lab.start_worker()
        now = time.time()
        lab.send(make_stream(800, seed=61, now=now))
        lab.wait_caught_up()
        lab.redis().save()
        lab.send(make_stream(800, seed=62, now=now))
        lab.wait_caught_up()
        server.kill()  # everything after the SAVE is gone
        server.start(appendonly=False)
        assert lab.caught_up()  # the worker had committed past what Redis lost
        assert snapshot(lab.redis(), lab.prefix) != reference_state(lab)
        repaired = lab.pulse("rebuild", "--all", "--json")
        assert repaired.returncode == 0, repaired.stderr
        report = orjson.loads(repaired.stdout)
        assert report["mode"] == "repair"
        assert sum(report["applied"].values()) == 800  # only what Redis had lost
        assert worker.alive()
        check_guarantees(lab)
    finally:
        server.stop()
        server.wipe()
        server.start()
