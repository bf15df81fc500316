"""The dependency log limit: one line per second per dependency, with a count."""

from __future__ import annotations

import logging

import pytest

from agents.log_limit import DependencyLogLimit, dependency_of


@pytest.mark.parametrize(
    ("name", "dependency"),
    [
        ("aiokafka.conn", "kafka"),
        ("kafka.client", "kafka"),
        ("faust.transport.drivers.aiokafka", "kafka"),
        ("redis.asyncio.connection", "redis"),
        ("agents.consumer", None),
        ("kafkaesque", None),
    ],
)
def test_dependency_of_a_logger(name: str, dependency: str | None) -> None:
    assert dependency_of(name) == dependency


def record(name: str, message: str = "connect to %s failed", *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, message, args or ("b1",), None)


def test_one_line_per_second_per_dependency_and_the_next_says_how_many_were_held() -> None:
    now = [0.0]
    limit = DependencyLogLimit(1.0, clock=lambda: now[0])
    passed = []
    for step in range(50):  # 5 s of a client logging every 0.1 s
        now[0] = step * 0.1
        for name in ("aiokafka.conn", "redis.connection", "agents.consumer"):
            r = record(name)
            if limit.filter(r):
                passed.append((name, r.getMessage()))
    kafka = [m for n, m in passed if n == "aiokafka.conn"]
    assert len(kafka) == 5
    assert kafka[0] == "connect to b1 failed"
    assert kafka[1] == "connect to b1 failed [9 more kafka log lines held back]"
    assert len([n for n, _ in passed if n == "redis.connection"]) == 5
    assert len([n for n, _ in passed if n == "agents.consumer"]) == 50
