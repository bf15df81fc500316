"""Hostile and odd input through a real worker: ids that try to escape the key layout,
a huge burst from one member, events dated 2099 and 1970.

(Arbitrary bytes and JSON through the decoder: tests/unit/test_properties.py; the
writer with hostile ids: tests/integration/test_redis_writer.py.)
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any
from urllib.error import HTTPError
from urllib.parse import quote
from urllib.request import urlopen

import orjson
from kafka import KafkaProducer

from streams.periods import format_instant
from streams.scoring import DEFAULT_POINTS
from tests.conftest import activity_dict
from tests.faults.conftest import Lab, Message, Sent, metric_value, wait_for
from tests.faults.guarantees import check_dead_letters, remembered, snapshot

# Accepted ids (printable, at most 128 characters) that look like key syntax.
SNEAKY = [
    "}:{b}:member:victim",
    "victim:days",
    "victim%3Adays",
    "*",
    "{b}",
    "b}",
    "ｖｉｃｔｉｍ",  # fullwidth look-alike of "victim"
    "victim ",
    "../../b",
    "x" * 128,
]
# Rejected, with the reason the DLQ must carry.
REJECTED: list[tuple[dict[str, Any], str]] = [
    ({"member_id": "x" * 10_000}, "too_long"),
    ({"member_id": "victim\n"}, "bad_characters"),
    ({"member_id": "vic\u200btim"}, "bad_characters"),  # zero-width space
    ({"member_id": ""}, "empty_field"),
    ({"channel": "c" * 10_000}, "too_long"),
    ({"event_id": "e" * 10_000}, "too_long"),
    ({"event_id": "e\r\n*"}, "bad_characters"),
    ({"community": "b}"}, "bad_community"),
    ({"community": "{b}"}, "bad_community"),
    ({"community": "B"}, "bad_community"),
    ({"community": "b:x"}, "bad_community"),
    ({"community": "b\n"}, "bad_community"),
    ({"community": "ｂ"}, "bad_community"),
]


def event(n: int, **fields: Any) -> dict[str, Any]:
    base = {"event_id": f"h-{n}", "occurred_at": format_instant(time.time() - 60)}
    return activity_dict(**(base | fields))


def message(value: dict[str, Any], reason: str | None = None) -> Message:
    key = str(value.get("member_id", "")).encode()[:200]
    return Message(key, orjson.dumps(value), None if reason else value, reason)


def http(lab: Lab, path: str) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{lab.workers[0].web_port}{path}"
    try:
        with urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read())
    except HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, body.decode()  # the router's own 404: no route matched


def test_hostile_ids_are_rejected_or_kept_inside_their_own_keys(lab: Lab) -> None:
    lab.start_worker()
    victim = [event(n, member_id="victim", community="b", channel="general") for n in range(3)]
    lab.send([message(e) for e in victim])
    lab.wait_caught_up()
    client = lab.redis()
    before = snapshot(client, f"{lab.prefix}:{{b}}")
    assert before

    sneaky = [
        event(100 + n, member_id=text, channel=text, event_id=f"{text[:100]}-{n}", community="a")
        for n, text in enumerate(SNEAKY)
    ]
    rejected = [
        message(event(200 + n, community="a") | fields, reason)
        for n, (fields, reason) in enumerate(REJECTED)
    ]
    lab.send([message(e) for e in sneaky] + rejected)
    lab.wait_caught_up()

    assert snapshot(client, f"{lab.prefix}:{{b}}") == before  # community b untouched
    written = set(snapshot(client, lab.prefix)) - {f":{{b}}{k}" for k in before}
    # Besides community a's keys: the list of communities and the owner-epoch counters
    # of the input partitions (named after the configured topic, not after any input).
    outside = [
        k
        for k in written
        if not k.startswith(":{a}:")
        and k != ":communities"
        and not k.startswith(f":epoch:{lab.activity_topic}:")
    ]
    assert not outside, outside
    assert all(k.count("{") == 1 and k.count("}") == 1 for k in written if k.startswith(":{a}"))
    # Each sneaky member has its own profile, under its own (escaped) name.
    members = {
        m
        for k in written
        if k.startswith(":{a}:member:") and (m := k.split(":")[3]) and k.count(":") == 3
    }
    assert len(members) == len(SNEAKY)
    assert check_dead_letters(lab) == 0  # every rejected id in the DLQ with its reason

    # Reads cannot cross over either: the HTTP API validates and escapes the same way.
    assert http(lab, "/api/v1/communities/b/members/victim")[0] == 200
    for community, member in [
        ("a", "victim"),
        ("a", "victim:days"),
        ("b", "victim:days"),
        ("b", "victim%3Adays"),
        ("a", "ｖｉｃｔｉｍ"),
    ]:
        status, body = http(
            lab, f"/api/v1/communities/{community}/members/{quote(member, safe='')}"
        )
        if status == 200:
            assert body["member_id"] == member
            assert body["community"] == community == "a"
            assert member in SNEAKY
        else:
            assert status == 404, body
    for community in ("b}", "{b}", "B", "b:x", "*", "b\n"):
        status, _ = http(lab, f"/api/v1/communities/{quote(community, safe='')}/leaderboards/all")
        assert status in (400, 404), community


def test_a_huge_burst_from_one_member_is_counted_exactly_with_bounded_keys(lab: Lab) -> None:
    worker = lab.start_worker()
    now = time.time()
    replies = [
        event(
            n,
            member_id="flooder",
            type="forum.reply",
            occurred_at=format_instant(now - 600 + n * 0.02),
        )
        for n in range(20_000)
    ]
    # A chat flood on top: over the moderation limit, messages earn nothing (README).
    chat = [
        event(30_000 + n, member_id="flooder", occurred_at=format_instant(now - 300 + n * 0.02))
        for n in range(2_000)
    ]
    quiet = [event(50_000 + n, member_id=f"calm-{n}") for n in range(50)]
    total = len(replies) + len(chat) + len(quiet)
    started = time.monotonic()
    lab.send([message(e) for e in replies + chat + quiet])

    def done() -> bool:
        text = worker.metrics()
        return (
            metric_value(text, "pulse_community_events_total")
            + metric_value(text, "pulse_community_events_moderated_total")
            == total
        )

    wait_for(done, 150, "the burst to be applied")
    print(f"{total} events in {time.monotonic() - started:.1f}s")
    text = worker.metrics()
    moderated = metric_value(text, "pulse_community_events_moderated_total")
    assert 0 < moderated < len(chat)
    client = lab.redis()
    profile = client.hgetall(f"{lab.prefix}:{{pycon-us}}:member:flooder")
    counted_chat = len(chat) - moderated
    assert int(profile["type:forum.reply"]) == len(replies)
    assert (
        int(profile["points"])
        == len(replies) * DEFAULT_POINTS["forum.reply"]
        + int(counted_chat) * DEFAULT_POINTS["chat.message"]
    )
    for member in ("calm-0", "calm-49"):
        assert client.hget(f"{lab.prefix}:{{pycon-us}}:member:{member}", "events") == "1"
    keys = Counter(
        "seen" if ":seen:" in k else "other" for k in client.scan_iter(match=f"{lab.prefix}:*")
    )
    # No key per event (event ids are remembered inside the members' states); nothing
    # grows with the number of events: a few dozen keys per member over ten minutes.
    assert keys["seen"] == 0
    assert keys["other"] < 100 + 10 * len(quiet), keys
    assert total > keys["other"]


def test_events_from_2099_are_rejected_and_from_1970_counted_without_dated_keys(
    lab: Lab,
) -> None:
    worker = lab.start_worker()
    future = event(1, member_id="marty", community="old", occurred_at="2099-01-01T00:00:00Z")
    past = event(2, member_id="marty", community="old", occurred_at="1970-01-01T00:00:00Z")
    lab.send([message(future, "in_future"), message(past)])
    lab.wait_caught_up()
    assert check_dead_letters(lab) == 0
    assert metric_value(worker.metrics(), "pulse_community_events_late_total") == 1
    client = lab.redis()
    keys = sorted(k.removeprefix(lab.prefix) for k in client.scan_iter(match=f"{lab.prefix}:*"))
    print(keys)
    # Counted where nothing expires (all time, the member's totals) ...
    assert client.zscore(f"{lab.prefix}:{{old}}:lb:all:all", "marty") == -1
    assert client.hget(f"{lab.prefix}:{{old}}:member:marty", "events") == "1"
    # ... and nowhere dated: no 1970 day/week/month board, no window bucket, which would
    # otherwise be created already expired or, worse, never expire.
    dated = [k for k in keys if ":lb:day:" in k or ":lb:week:" in k or ":lb:month:" in k]
    assert not dated, dated
    assert not [k for k in keys if ":win:" in k]
    assert not [k for k in keys if "1970" in k or "2099" in k]
    # Remembered for dedupe like any event, in the member's state (no key per event).
    assert remembered(client, lab.prefix, [("old", "marty", past["event_id"])]) == {0}
    assert not [k for k in keys if ":seen:" in k]


def test_a_message_too_big_to_dead_letter_whole_does_not_stall_the_worker(lab: Lab) -> None:
    """A ~1 MiB invalid message fits the input topic but not the DLQ once the reason
    headers are added: the worker used to retry that publish forever."""
    lab.start_worker()
    producer = KafkaProducer(
        **lab.stack.broker.client_options(), acks="all", max_request_size=1_100_000
    )
    try:
        # As big as the input topic takes (1 MiB with the record's overhead).
        big = b"{" + b"x" * 1_046_899
        sent = producer.send(lab.activity_topic, key=b"k" * 1500, value=big).get(timeout=30)
    finally:
        producer.close()
    lab.sent.append(Sent(Message(b"k", big, None, "oversized"), sent.partition, sent.offset))
    after = [event(n, type="forum.reply") for n in range(20)]
    lab.send([message(e) for e in after])
    lab.wait_caught_up(timeout=60)
    assert check_dead_letters(lab) == 0
    (letter,) = lab.read_topic(lab.dlq_topic)
    headers = dict(letter.headers)
    assert headers["pulse-truncated-value"] == str(len(big)).encode()
    assert headers["pulse-truncated-key"] == b"1500"
    assert big.startswith(letter.value)
    assert lab.redis().hget(f"{lab.prefix}:{{pycon-us}}:member:alice", "events") == "20"
