"""Credentials and exposure: a broker that requires SASL/SCRAM-SHA-256 and a Redis with
an ACL user; wrong passwords fail fast; secrets stay out of logs, config and metrics;
the worker listens on loopback unless told otherwise."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.faults.conftest import (
    FaultStack,
    Lab,
    make_stream,
    metric_value,
    running_stack,
    wait_for,
)
from tests.faults.servers import AclUser, Sasl

WEBHOOK_SECRETS = {
    "PULSE_GITHUB_WEBHOOK_SECRET": f"gh-{uuid.uuid4().hex}",
    "PULSE_DISCOURSE_WEBHOOK_SECRET": f"dc-{uuid.uuid4().hex}",
}


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    """This module's broker takes SASL clients only; its Redis has an ACL user."""
    users = (AclUser("pulse", f"acl-{uuid.uuid4().hex}"),)
    sasl = Sasl(mechanism="SCRAM-SHA-256")
    with running_stack(tmp_path_factory.mktemp("secure"), sasl, users) as stack:
        yield stack


def secrets(lab: Lab) -> dict[str, str]:
    sasl = lab.stack.broker.sasl
    assert sasl is not None
    found = {
        "kafka SASL password": sasl.password,
        "Redis ACL password": lab.stack.redis.users[0].password,
        "Redis admin password": str(lab.stack.redis.password),
    }
    found.update(WEBHOOK_SECRETS)
    return found


def test_worker_uses_sasl_and_a_redis_acl_user_from_the_environment(lab: Lab) -> None:
    worker = lab.start_worker()
    stream = make_stream(600, seed=81, now=time.time())
    lab.send(stream)
    lab.wait_caught_up()
    expected: Counter[str] = Counter()
    seen: set[tuple[str, str]] = set()
    for message in stream:
        event = message.event
        if event is not None and (event["community"], event["event_id"]) not in seen:
            seen.add((event["community"], event["event_id"]))
            expected[event["type"]] += 1
    applied = metric_value(worker.metrics(), "pulse_community_events_total")
    assert applied == sum(expected.values())
    client = lab.redis()
    assert client.acl_whoami() == "default"
    # Written by the ACL user (the default user's password is not in the worker's env).
    assert "PULSE_REDIS_URL" in lab.env()
    assert lab.stack.redis.password not in lab.env()["PULSE_REDIS_URL"]
    counts: Counter[str] = Counter()
    for key in client.scan_iter(match=f"{lab.prefix}:*:counts"):
        if not key.endswith("}:counts"):
            continue  # another feature's counters
        counts.update({t: int(n) for t, n in client.hgetall(key).items()})
    assert counts == expected


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"redis": "wrong"}, "refused the credentials (check PULSE_REDIS_URL)"),
        ({"kafka": "wrong"}, "refused the SASL credentials (check PULSE_KAFKA_SASL_USERNAME"),
    ],
    ids=["redis", "kafka"],
)
def test_a_wrong_password_stops_the_worker_at_once_with_a_clear_message(
    lab: Lab, override: dict[str, str], message: str
) -> None:
    env: dict[str, str] = {}
    if "redis" in override:
        env["PULSE_REDIS_URL"] = lab.stack.redis.url("pulse", "not-the-password")
    else:
        env["PULSE_KAFKA_SASL_PASSWORD"] = "not-the-password"
    started = time.monotonic()
    done = lab.pulse("worker", timeout=60, **env)
    seconds = time.monotonic() - started
    assert done.returncode == 1, done.stderr[-3000:]
    assert seconds < 20
    last = done.stderr.strip().splitlines()[-1]
    assert message in last, last
    assert "not-the-password" not in done.stderr + done.stdout
    print(f"{seconds:.1f}s: {last}")


def test_secrets_never_appear_in_logs_config_or_metrics(lab: Lab) -> None:
    lab.extra_env.update(WEBHOOK_SECRETS)
    lab.extra_env["PULSE_LOG_LEVEL"] = "DEBUG"
    worker = lab.start_worker()
    lab.send(make_stream(200, seed=82, now=time.time()))
    lab.wait_caught_up()
    config = lab.pulse("config", "--json")
    assert config.returncode == 0, config.stderr
    public = orjson.loads(config.stdout)
    assert public["kafka"]["sasl_password"] == "**********"
    assert "**********" in public["redis"]["url"]
    surfaces = {
        "worker log (DEBUG)": worker.log(),
        "pulse config --json": config.stdout + config.stderr,
        "pulse config": (c := lab.pulse("config")).stdout + c.stderr,
        "/metrics": worker.metrics(),
    }
    for surface, text in surfaces.items():
        assert text, surface
        for name, secret in secrets(lab).items():
            assert secret not in text, f"the {name} appears in the {surface}"


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port`` (IPv4 and IPv6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                found.add(address)
    return found


def test_the_worker_listens_on_loopback_by_default(lab: Lab) -> None:
    worker = lab.start_worker()
    wait_for(lambda: bool(listening_addresses(worker.web_port)), 30, "the web server")
    assert listening_addresses(worker.web_port) == {"0100007F"}  # 127.0.0.1


def test_a_stray_faust_variable_does_not_change_where_the_worker_listens(lab: Lab) -> None:
    worker = lab.start_worker(WEB_BIND="0.0.0.0")  # noqa: S104 - the point of the test
    wait_for(lambda: bool(listening_addresses(worker.web_port)), 30, "the web server")
    assert listening_addresses(worker.web_port) == {"0100007F"}
