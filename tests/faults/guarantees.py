"""The guarantees of docs/guarantees.md, checked once the input has been fully processed.

1. Redis holds exactly what one clean pass over the same input produces (every key,
   every value: leaderboards, windows, counters, profiles, dedupe markers, award
   records), and the main views equal a recomputation from the distinct valid events.
2. Every invalid message is in the DLQ with its reason (at least once: a crash between
   publishing a dead letter and committing may publish it again).
3. Each award is published: :func:`check_awards` is where "published once" is checked.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
import redis

from agents.rebuild import rebuild, wipe
from agents.settings import Settings
from streams.scoring import DEFAULT_POINTS
from tests.faults.conftest import Lab, Sent


def snapshot(client: redis.Redis, prefix: str) -> dict[str, Any]:
    """Every key under ``prefix`` (named without it) with its full value."""
    keys = sorted(client.scan_iter(match=f"{prefix}:*", count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
    kinds = pipe.execute()
    for key, kind in zip(keys, kinds, strict=True):
        if kind == "zset":
            pipe.zrange(key, 0, -1, withscores=True)
        elif kind == "hash":
            pipe.hgetall(key)
        elif kind == "set":
            pipe.smembers(key)
        elif kind == "string":
            pipe.get(key)
        elif kind == "list":
            pipe.lrange(key, 0, -1)
        else:
            raise AssertionError(f"unexpected {kind} key {key}")
    values = pipe.execute()
    state: dict[str, Any] = {}
    for key, kind, value in zip(keys, kinds, values, strict=True):
        name = str(key)[len(prefix) :]
        state[name] = dict(value) if kind == "zset" else sorted(value) if kind == "set" else value
    return state


# Hashes and sorted sets keyed by ids the Lua script derives from a key name (so from
# the key prefix): compared by their values, since the reference uses another prefix.
PREFIX_DERIVED_IDS = (":segchanges", ":segchanges:outbox")


# Moderation windows live two windows (2 min by default) after the last message, by
# Redis's clock: a fault test that runs longer than that sees some of them expire, while
# the reference pass, made at the end, still has them. They are transient by design and
# left out of the comparison; the flags they raise are compared.
TRANSIENT = (":mod:rate:", ":mod:xp:")
# The fences are bookkeeping of who wrote, not results: the owner epochs handed out
# (prefix:epoch:*) and, per community, each partition's epoch, last applied offset and
# stream time (:offsets). A run with restarts takes other epochs than the reference.
BOOKKEEPING = (":epoch:", ":offsets")


def remembered(
    client: redis.Redis, prefix: str, wanted: Sequence[tuple[str, str, str]]
) -> set[int]:
    """Which of (community, member_id, event_id) the members' dedupe memories hold as
    applied (by index in ``wanted``): the 8-byte digests, in hex, in one string per
    member and receipt day."""
    from streams.keys import KeyLayout
    from streams.state import event_digest

    held: dict[tuple[str, str], set[str]] = {}
    for community, member in sorted({(c, m) for c, m, _ in wanted}):
        # escape() leaves no glob character in a member's key.
        pattern = f"{KeyLayout(prefix, community).member(member)}:ids:*"
        text = "".join(str(client.get(key) or "") for key in client.scan_iter(match=pattern))
        held[(community, member)] = {text[i : i + 16] for i in range(0, len(text), 16)}
    return {i for i, (c, m, e) in enumerate(wanted) if event_digest(e).hex() in held[(c, m)]}


def comparable(state: dict[str, Any]) -> dict[str, Any]:
    return {
        key: sorted(value.values()) if key.endswith(PREFIX_DERIVED_IDS) else value
        for key, value in state.items()
        if not any(marker in key for marker in TRANSIENT + BOOKKEEPING)
    }


def reference_state(lab: Lab) -> dict[str, Any]:
    """One clean pass of the same input into a scratch prefix: what a single worker that
    never failed would have written."""
    scratch = f"ref-{lab.name}"
    settings = Settings.from_env(
        lab.env(PULSE_REDIS_KEY_PREFIX=scratch, PULSE_APP_ID=f"ref-{lab.name}")
    )
    client = lab.redis()
    try:
        rebuild(settings, None, from_beginning=True, announce=False)
        return snapshot(client, scratch)
    finally:
        wipe(client, scratch, None)


def distinct_valid(sent: Sequence[Sent]) -> list[dict[str, Any]]:
    """The valid events, each (community, event_id) once."""
    events: dict[tuple[str, str], dict[str, Any]] = {}
    for item in sent:
        event = item.message.event
        if event is not None:
            events.setdefault((event["community"], event["event_id"]), event)
    return list(events.values())


def recomputed_views(events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counters, the all-time leaderboards and member totals, computed directly from the
    events (no code from streams/ except the scoring table), in snapshot naming."""
    views: dict[str, Any] = {}
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    board: dict[str, Counter[str]] = defaultdict(Counter)
    members: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for e in events:
        c, m, points = e["community"], e["member_id"], DEFAULT_POINTS[e["type"]]
        counts[c][e["type"]] += 1
        board[c][m] += points
        members[(c, m)]["points"] += points
        members[(c, m)]["events"] += 1
    for c, per_type in counts.items():
        views[f":{{{c}}}:counts"] = {t: str(n) for t, n in per_type.items()}
        views[f":{{{c}}}:lb:all:all"] = {m: float(-p) for m, p in board[c].items()}
    for (c, m), totals in members.items():
        views[f":{{{c}}}:member:{quote(m, safe='')}"] = {k: str(v) for k, v in totals.items()}
    return views


def check_state(lab: Lab, state: dict[str, Any], reference: dict[str, Any]) -> None:
    """No loss, no double count: ``state`` equals the clean pass and the recomputation."""
    state, reference = comparable(state), comparable(reference)
    missing = sorted(reference.keys() - state.keys())
    extra = sorted(state.keys() - reference.keys())
    assert not missing, f"{len(missing)} keys missing, e.g. {missing[:5]}"
    assert not extra, f"{len(extra)} unexpected keys, e.g. {extra[:5]}"
    different = sorted(k for k in reference if reference[k] != state[k])
    assert not different, (
        f"{len(different)} keys differ, e.g. {different[0]}: "
        f"{state[different[0]]!r} != {reference[different[0]]!r}"
    )
    for key, want in recomputed_views(distinct_valid(lab.sent)).items():
        got = state.get(key, {})
        if key.count(":member:"):
            got = {k: v for k, v in got.items() if k in ("points", "events")}
        assert got == want, key


def check_dead_letters(lab: Lab) -> int:
    """Every invalid message is in the DLQ with its reason, and nothing else is; returns
    how many dead letters were published more than once."""
    letters: Counter[tuple[int, int]] = Counter()
    reasons: dict[tuple[int, int], str] = {}
    for record in lab.read_topic(lab.dlq_topic):
        headers = {k: v.decode() for k, v in record.headers}
        assert headers["pulse-source-topic"] == lab.activity_topic
        origin = (int(headers["pulse-source-partition"]), int(headers["pulse-source-offset"]))
        letters[origin] += 1
        reasons[origin] = headers["pulse-reason"]
    invalid = {(s.partition, s.offset): s.message.reason for s in lab.sent if s.message.reason}
    assert invalid, "the stream had no invalid messages"
    assert reasons == invalid, (reasons, invalid)
    return sum(n - 1 for n in letters.values())


def check_awards(lab: Lab, state: dict[str, Any]) -> int:
    """Every award recorded in Redis was published; returns how many were published more
    than once.

    This is the hook for "each award published once": a test that wants it exactly
    once asserts the returned count is 0.
    """
    recorded = {
        award
        for key, value in state.items()
        if key.endswith(":awards") and isinstance(value, dict)
        for award in value
    }
    published: Counter[str] = Counter(
        orjson.loads(record.value)["award_id"] for record in lab.read_topic(lab.awards_topic)
    )
    assert set(published) == recorded
    return sum(n - 1 for n in published.values())


@dataclass(frozen=True)
class Verdict:
    keys: int
    events: int
    dead_letter_repeats: int
    award_repeats: int
    awards: int


def check_guarantees(lab: Lab) -> Verdict:
    """Wait until every input offset is committed, then check every guarantee."""
    lab.wait_caught_up()
    state = snapshot(lab.redis(), lab.prefix)
    check_state(lab, state, reference_state(lab))
    repeats = check_dead_letters(lab)
    award_repeats = check_awards(lab, state)
    awards = sum(len(v) for k, v in state.items() if k.endswith(":awards"))
    return Verdict(len(state), len(distinct_valid(lab.sent)), repeats, award_repeats, awards)
