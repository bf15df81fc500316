"""Kafka broker faults: the module's broker restarted (SIGTERM, then SIGKILL) while
events flow; the worker reconnects and catches up."""

from __future__ import annotations

import time

from tests.faults.conftest import Lab, make_stream, metric_value, wait_for
from tests.faults.guarantees import check_guarantees


def test_broker_restarts_mid_stream_the_worker_reconnects_and_catches_up(lab: Lab) -> None:
    worker = lab.start_worker()
    broker = lab.stack.broker
    for seed, stop in ((71, broker.stop), (72, broker.kill)):
        before = metric_value(worker.metrics(), "pulse_community_events_total")
        feed = lab.feed(make_stream(2500, seed=seed, now=time.time()), seconds=8)
        wait_for(
            lambda b=before: (
                metric_value(worker.metrics(), "pulse_community_events_total") > b + 50
            ),
            30,
            "the worker to apply events",
        )
        stop()
        time.sleep(4)  # the worker and the producer meet a dead broker for a while
        broker.start()
        feed.join()
        lab.wait_caught_up()  # every offset of the feed applied and committed
    verdict = check_guarantees(lab)
    print(verdict)
    assert verdict.awards > 0, "no award was at stake: check_awards proved nothing"
    assert worker.alive(), "the worker gave up instead of reconnecting"
