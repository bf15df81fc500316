"""Worker faults: SIGKILL at random points, scaling out and in, graceful SIGTERM.

Each test streams generated activity (with invalid messages and redelivered copies)
while workers die, join and leave, then checks the guarantees (tests/faults/guarantees.py).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest

from tests.faults.conftest import Lab, WorkerProcess, make_stream, metric_value, wait_for
from tests.faults.guarantees import check_guarantees, remembered


def test_sigkill_at_random_points_loses_and_doubles_nothing(lab: Lab) -> None:
    seed = random.randrange(1_000_000)
    print(f"kill schedule seed {seed}")
    rng = random.Random(seed)
    worker = lab.start_worker()
    feed = lab.feed(make_stream(6000, seed=seed, now=time.time()), seconds=20)
    kills = 0
    while kills < 4:
        # Somewhere in the first seconds of a worker's life: while it starts consuming,
        # mid-batch, or while it catches up after the previous kill.
        time.sleep(rng.uniform(0.5, 3.0))
        worker.kill()
        kills += 1
        worker = lab.start_worker()
    feed.join()
    verdict = check_guarantees(lab)
    print(verdict)
    assert verdict.events > 5000
    assert verdict.awards > 0, "no award was at stake: check_awards proved nothing"


def test_scaling_from_one_to_three_workers_and_back_equals_one_clean_pass(lab: Lab) -> None:
    first = lab.start_worker()
    feed = lab.feed(make_stream(6000, seed=7, now=time.time()), seconds=24)
    wait_for(lambda: feed.progress > 0.15, 30, "the feed to start")
    second = lab.start_worker()
    wait_for(lambda: feed.progress > 0.35, 30, "more events")
    third = lab.start_worker()
    wait_for(lambda: feed.progress > 0.6, 30, "more events")
    # Each worker had partitions and applied events: the group really rebalanced.
    for worker in (first, second, third):
        wait_for(
            lambda w=worker: metric_value(w.metrics(), "pulse_community_events_total") > 0,
            30,
            f"worker {worker.index} to apply events",
        )
    code, seconds = third.terminate()
    assert code == 0, third.log()[-3000:]
    wait_for(lambda: feed.progress > 0.8, 30, "more events")
    code, seconds = second.terminate()
    assert code == 0, second.log()[-3000:]
    feed.join()
    verdict = check_guarantees(lab)  # equal to a single clean pass over the same input
    print(verdict)
    assert verdict.awards > 0, "no award was at stake: check_awards proved nothing"
    assert first.alive()


def test_sigterm_flushes_the_batch_in_flight_and_commits_what_it_applied(lab: Lab) -> None:
    worker = lab.start_worker()
    feed = lab.feed(make_stream(4000, seed=3, now=time.time()), seconds=10)
    wait_for(lambda: feed.progress > 0.5, 30, "the worker to be busy")
    code, seconds = worker.terminate()
    assert code == 0, worker.log()[-3000:]
    assert seconds < 15
    feed.join()
    # Every first copy of an event below the committed offset is applied, and none at
    # or above it is: in-flight work was finished and committed, none was abandoned.
    committed = lab.committed()
    client = lab.redis()
    first_copies: dict[tuple[str, str, str], tuple[int, int]] = {}
    for sent in lab.sent:
        event = sent.message.event
        if event is not None:
            first_copies.setdefault(
                (event["community"], event["member_id"], event["event_id"]),
                (sent.partition, sent.offset),
            )
    # Applied: the member's engine state remembers the event id.
    found = remembered(client, lab.prefix, list(first_copies))
    applied = {identity: i in found for i, identity in enumerate(first_copies)}
    below = above = 0
    for identity, (partition, offset) in first_copies.items():
        tp = next(tp for tp in committed if tp.partition == partition)
        if offset < committed[tp]:
            below += 1
            assert applied[identity], f"{identity} is below the committed offset, not applied"
        else:
            above += 1
            assert not applied[identity], f"{identity} was applied but not committed"
    print(f"at SIGTERM: {below} events applied and committed, {above} left for later")
    assert below > 0
    lab.start_worker()
    check_guarantees(lab)


def wait_until(check: Callable[[], bool], timeout: float, every: float = 0.2) -> bool:
    """Whether ``check`` held within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return False


@pytest.mark.timeout(900)
def test_a_zombie_paused_across_a_rebalance_writes_nothing_when_it_wakes(lab: Lab) -> None:
    """SIGSTOP a busy worker until the group has given its partitions to another one,
    then SIGCONT it: its late writes carry an old owner epoch and are refused."""
    import signal

    zombie = lab.start_worker()
    owner: WorkerProcess | None = None
    # A pause that shows nothing is tried again, the worker busy with a new backlog, up
    # to five times. Two races make one: the paused worker had nothing left to write
    # (its batch written, the next one dropped as stale by the rebalance, which the
    # heartbeat that wakes with it may learn of before the write goes out), or it had
    # applied its whole share before the pause, so the owner has nothing more to apply.
    for attempt in range(5):
        # A backlog, so that the worker is paused in the middle of its batches (an idle one
        # would rejoin the group before it writes anything). It is sent while the worker
        # is paused (for less than the session timeout): the producer is not faster than
        # the worker, which would otherwise apply the events as they arrive and have
        # nothing left when it is paused.
        before = metric_value(zombie.metrics(), "pulse_community_events_total")
        zombie.process.send_signal(signal.SIGSTOP)
        try:
            lab.send(make_stream(20000, seed=11 + attempt, now=time.time()))
        finally:
            zombie.process.send_signal(signal.SIGCONT)
        wait_for(
            lambda b=before: (
                metric_value(zombie.metrics(), "pulse_community_events_total") > b + 300
            ),
            60,
            "the first worker to apply events",
        )
        zombie.process.send_signal(signal.SIGSTOP)
        try:
            if owner is None:
                owner = lab.start_worker()
            taken = metric_value(owner.metrics(), "pulse_community_events_total")
            # The paused worker misses its heartbeats; after the session timeout the group
            # hands every partition to the owner, which applies events.
            took_over = wait_until(
                lambda t=taken, o=owner: (
                    metric_value(o.metrics(), "pulse_community_events_total") > t + 300
                ),
                60,
            )
        finally:
            zombie.process.send_signal(signal.SIGCONT)
        if not took_over:
            print(f"attempt {attempt + 1}: the owner applied nothing more; pausing again")
            continue
        refused = wait_until(
            lambda: (
                metric_value(zombie.metrics(), "pulse_fenced_batches_total") > 0
                or "batch refused" in zombie.log()
            ),
            30,
        )
        if refused:
            break
    assert "batch refused" in zombie.log(), "the woken worker never had a write refused"
    lab.wait_caught_up()
    verdict = check_guarantees(lab)  # equal to a single clean pass over the same input
    print(verdict)
    assert zombie.alive()
    assert owner is not None
    assert owner.alive()
