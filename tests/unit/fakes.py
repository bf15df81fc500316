"""Hand-written fakes of the processor's ports: Redis (the engine's writer), the broker's
output topics and the dead-letter topic. No servers, no ``Mock``.

:class:`FakeWriter` keeps what ``agents/writer.py`` keeps in Redis, as plain dicts, and
follows the two Lua scripts where the tests depend on them: ``claim.lua`` (a newer epoch
replaces an older one, the recorded offset and stream time are kept) and
``write_batch.lua`` (refused when a stored epoch is newer, a no-op when the batch's
offsets are recorded already, else the commands, then the new offsets). It runs the
commands the payload carries on a tiny in-memory keyspace; first-response thread ops are
only collected.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson
import redis

from agents.processor import DeadLetter
from agents.writer import STATE_FIELD, Fence, Fenced, decode_state
from agents.writer import commands as read_payload
from streams.keys import KeyLayout
from streams.state import MemberState, restore_seen

TOPIC = "pulse.activity"
# A member's profile hash: prefix, {community}, escaped member id.
MEMBER_KEY = re.compile(r"([^:]+):\{([^}]+)\}:member:([^:]+)")


@dataclass
class FakeRecord:
    """A consumed Kafka record (the parts the processor reads)."""

    value: bytes | None
    key: bytes | None = b"k"
    topic: str = TOPIC
    partition: int = 0
    offset: int = 0
    timestamp: int = 0  # milliseconds, as Kafka gives it


class FakeWriter:
    """The :class:`agents.processor.EffectWriter` port, in memory.

    ``failures`` writes fail before anything is applied (Redis down); ``lost_replies``
    writes are applied but their reply never arrives. While ``hold()`` is true a write
    waits (handing the event loop back), so that a test can interleave other work.
    """

    def __init__(self, failures: int = 0, lost_replies: int = 0) -> None:
        self.failures = failures
        self.lost_replies = lost_replies
        self.hold: Callable[[], bool] | None = None
        self.hashes: dict[str, dict[str, str]] = {}
        self.zsets: dict[str, dict[str, float]] = {}
        self.sets: dict[str, set[str]] = {}
        self.lists: dict[str, list[str]] = {}
        self.strings: dict[str, str] = {}
        # The dedupe retention the states are restored with (the policy's default).
        self.retention_seconds = 7 * 86400
        self.threads: list[list[str]] = []
        self.known: set[str] = set()
        self.epoch_counters: dict[tuple[str, int], int] = {}
        # Write calls (attempts included), load calls, and every member state read.
        self.calls = 0
        self.loads = 0
        self.loaded: list[tuple[str, str]] = []

    # -- the port ----------------------------------------------------------------------

    async def epochs(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        for partition in partitions:
            self.epoch_counters[partition] = self.epoch_counters.get(partition, 0) + 1
        return {partition: self.epoch_counters[partition] for partition in partitions}

    async def load(
        self,
        claims: Mapping[KeyLayout, Sequence[tuple[str, int]]],
        members: Sequence[tuple[KeyLayout, str]],
        days: range = range(0),
        retention_seconds: int = 7 * 86400,
    ) -> tuple[dict[KeyLayout, dict[str, Fence]], list[MemberState | None]]:
        self.loads += 1
        fences = {
            layout: {
                field: Fence.parse(self._claim(layout, field, epoch)) for field, epoch in fields
            }
            for layout, fields in claims.items()
        }
        self.loaded.extend((layout.community, member) for layout, member in members)
        # As StateWriter: the days asked for, and those the state's newest receipt needs.
        return fences, [
            self.state(layout, member, None, retention_seconds) for layout, member in members
        ]

    async def write(self, batches: Sequence[tuple[str, str, Sequence[bytes]]]) -> list[Any]:
        if not batches:
            return []  # as StateWriter: no round trip
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise redis.exceptions.ConnectionError("Redis is down")
        while self.hold is not None and self.hold():
            await asyncio.sleep(0)
        replies = [(community, self._write(key, body)) for community, key, body in batches]
        if self.lost_replies:
            self.lost_replies -= 1
            raise redis.exceptions.TimeoutError("Timeout reading from socket")
        refused = [(community, reply) for community, reply in replies if reply[0] == "fenced"]
        if refused:
            community, reply = refused[0]
            written = [c for c, answer in replies if answer[0] != "fenced"]
            raise Fenced(community, reply[1], reply[2], written)
        return [reply for _, reply in replies]

    async def due_members(self, layout: KeyLayout, until_ms: int) -> list[str]:
        due = self.zsets.get(layout.segment_due(), {})
        return [m for m, s in sorted(due.items(), key=lambda i: (i[1], i[0])) if 0 <= s <= until_ms]

    async def pending(self, outbox_key: str, limit: int = 1000) -> list[str]:
        outbox = self.zsets.get(outbox_key, {})
        return [m for m, _ in sorted(outbox.items(), key=lambda i: (i[1], i[0]))][:limit]

    async def records(
        self, wanted: Sequence[tuple[str, Sequence[str]]]
    ) -> list[list[tuple[str, Any]]]:
        return [
            [(i, orjson.loads(self.hashes[key][i])) for i in ids if i in self.hashes.get(key, {})]
            for key, ids in wanted
        ]

    async def confirm(self, confirmed: Sequence[tuple[str, str]]) -> None:
        for outbox_key, identity in confirmed:
            self.zsets.get(outbox_key, {}).pop(identity, None)

    async def communities(self) -> list[str]:
        return sorted(self.known)

    async def remember_communities(self, communities: Sequence[str]) -> None:
        self.known.update(communities)

    # -- what the tests read -----------------------------------------------------------

    def state(
        self,
        layout: KeyLayout,
        member: str,
        days: range | None = None,
        retention_seconds: int | None = None,
    ) -> MemberState | None:
        """A member's stored engine state, decoded as the real writer decodes it, with
        the event ids it remembers on ``days`` (all days when None)."""
        raw = self.hashes.get(layout.member(member), {}).get(STATE_FIELD)
        if raw is None:
            return None
        state = decode_state(raw)
        prefix = layout.member_ids(member, 0)[:-1]
        found = {
            int(key[len(prefix) :]): text
            for key, text in self.strings.items()
            if key.startswith(prefix) and (days is None or int(key[len(prefix) :]) in days)
        }
        restore_seen(state, found, retention_seconds or self.retention_seconds)
        return state

    def states(self) -> dict[tuple[str, str], MemberState]:
        """Every stored member state: (community, member) -> state."""
        found = {}
        for key, fields in self.hashes.items():
            match = MEMBER_KEY.fullmatch(key)
            if match is not None and STATE_FIELD in fields:
                prefix, community = match.group(1), match.group(2)
                member = unquote(match.group(3))
                state = self.state(KeyLayout(prefix, community), member)
                assert state is not None
                found[(community, member)] = state
        return found

    def recorded(self, records_key: str) -> dict[str, dict[str, Any]]:
        """The JSON records of a records hash (awards, flags, segment changes)."""
        return {i: orjson.loads(r) for i, r in self.hashes.get(records_key, {}).items()}

    def fence(self, layout: KeyLayout, field: str) -> Fence | None:
        stored = self.hashes.get(layout.offsets(), {}).get(field)
        return None if stored is None else Fence.parse(stored)

    def pending_count(self) -> int:
        return sum(len(z) for key, z in self.zsets.items() if key.endswith(":outbox"))

    # -- the scripts -------------------------------------------------------------------

    def _claim(self, layout: KeyLayout, field: str, epoch: int) -> str:
        """claim.lua for one field."""
        offsets = self.hashes.setdefault(layout.offsets(), {})
        stored = offsets.get(field)
        held, rest = (
            (-1, "-1 0") if stored is None else (int(stored.split()[0]), stored.split(" ", 1)[1])
        )
        if held < epoch:
            stored = offsets[field] = f"{epoch} {rest}"
        assert stored is not None  # noqa: S101 - for mypy's sake
        return stored

    def _write(self, offsets_key: str, argv: Sequence[bytes]) -> tuple[str, ...]:
        """write_batch.lua."""
        fences, commands, threads = read_payload(argv)
        offsets = self.hashes.setdefault(offsets_key, {})
        done = False
        for field, epoch, offset, _ in fences:
            stored = offsets.get(field)
            if stored is None:
                continue
            recorded = Fence.parse(stored)
            if recorded.epoch > int(epoch):
                return ("fenced", field, stored)
            if offset != "-1" and recorded.offset >= int(offset):
                done = True
        if done:
            return ("ok",)
        # As the script: the new scores of the leaderboard increments follow "ok".
        sums: list[str] = []
        for command in commands:
            self._run(command)
            if command[0] == "ZINCRBY":
                key, member = command[1], command[3]
                sums += (key, member, str(int(self.zsets[key][member])))
        for field, epoch, offset, stream in fences:
            if offset != "-1":
                offsets[field] = f"{epoch} {offset} {stream}"
        self.threads.extend(threads)
        return ("ok", *sums)

    def _run(self, command: list[str]) -> None:
        name, key, *args = command
        if name == "HSET":
            self.hashes.setdefault(key, {}).update(zip(args[::2], args[1::2], strict=True))
        elif name == "HINCRBY":
            table = self.hashes.setdefault(key, {})
            table[args[0]] = str(int(table.get(args[0], "0")) + int(args[1]))
        elif name == "ZINCRBY":
            board = self.zsets.setdefault(key, {})
            board[args[1]] = board.get(args[1], 0.0) + float(args[0])
        elif name == "ZADD":
            flag = args[0] if args and args[0] in ("LT", "GT") else None
            pairs = args[1:] if flag else args
            zset = self.zsets.setdefault(key, {})
            for score, member in zip(pairs[::2], pairs[1::2], strict=True):
                old, new = zset.get(member), float(score)
                if old is None or flag is None or (new < old if flag == "LT" else new > old):
                    zset[member] = new
        elif name == "ZREM":
            for member in args:
                self.zsets.get(key, {}).pop(member, None)
        elif name == "SADD":
            self.sets.setdefault(key, set()).update(args)
        elif name == "RPUSH":
            self.lists.setdefault(key, []).extend(args)
        elif name == "APPEND":
            self.strings[key] = self.strings.get(key, "") + args[0]
        elif name not in ("EXPIREAT", "EXPIRE"):  # nothing expires in a test
            raise NotImplementedError(f"the fake writer cannot run {name}")


class FakeSink:
    """An output topic; ``fail_with`` makes every publish raise it."""

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.fail_with = fail_with

    async def publish(self, messages: Sequence[dict[str, Any]]) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.messages.extend(messages)


def sinks(awards: FakeSink | None = None) -> dict[str, FakeSink]:
    """The processor's output sinks: ``awards`` (or a new one), flags, segment changes."""
    return {
        "awards": awards if awards is not None else FakeSink(),
        "flags": FakeSink(),
        "segments": FakeSink(),
    }


class FakeDeadLetters:
    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def publish(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)
