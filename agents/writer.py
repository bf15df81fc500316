"""Redis adapter of the engine: loads member states, claims partitions, writes batches.

Every batch writes each community once: one ``EVALSHA`` of ``write_batch.lua`` with a
flat list of commands the evaluator's effects add up to, behind a fence (the owner's
epoch per input partition). All communities of a batch go in one pipeline: one round
trip. Loading the states a batch needs (and claiming the partitions of a community
first touched) is one more round trip, for the batch's new members only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

import orjson
import redis
import redis.asyncio as aioredis

from streams.badges import badge_field
from streams.effects import APPLIED, CommunityWrites
from streams.keys import KeyLayout, epoch_key
from streams.state import (
    DAY_MS,
    MemberState,
    StateVersionError,
    dedupe_horizon,
    from_record,
    restore_seen,
    to_record,
)

WRITE_LUA: Final = resources.files("agents").joinpath("write_batch.lua").read_text("utf-8")
CLAIM_LUA: Final = resources.files("agents").joinpath("claim.lua").read_text("utf-8")
LOAD_LUA: Final = resources.files("agents").joinpath("load_members.lua").read_text("utf-8")
_SCRIPTS: Final = {"write": WRITE_LUA, "claim": CLAIM_LUA, "load": LOAD_LUA}
# Members per variadic command (well inside Lua's stack limit for unpack()).
CHUNK: Final = 500
# A leaderboard this close to its expiry (seconds) takes increments, not scores set from
# the worker's copy: Redis expires keys by its own clock, which may be ahead of ours.
SCORE_MARGIN: Final = 3600
# Scores a member's copy keeps (a board a day, week and month, the all-time ones, per
# channel too): the old periods' keep coming, so beyond it the copy is dropped and
# learnt again. About 100 bytes each, per cached member.
BOARDS_KEPT: Final = 32
# The profile field that holds the member's engine state (JSON).
STATE_FIELD: Final = "state"


class Fenced(Exception):
    """A newer owner holds an input partition of this batch: nothing was written."""

    def __init__(
        self, community: str, field: str, stored: str, written: Sequence[str] = ()
    ) -> None:
        super().__init__(f"community {community}: partition {field} is owned by epoch {stored}")
        self.community = community
        self.partition = field
        # Communities of the same batch whose writes went through (not atomic across
        # communities): their outputs are in the outboxes.
        self.written = list(written)


@dataclass(slots=True)
class Fence:
    """What is recorded for one (community, input partition): the owner's epoch, the
    last applied offset (-1: none) and the stream time in ms."""

    epoch: int
    offset: int
    stream_ms: int

    @classmethod
    def parse(cls, stored: str) -> Fence:
        epoch, offset, stream = stored.split()
        return cls(int(epoch), int(offset), int(stream))


def encode_state(state: MemberState) -> bytes:
    return orjson.dumps(to_record(state), option=orjson.OPT_NON_STR_KEYS)


def decode_state(raw: str | bytes) -> MemberState:
    return from_record(orjson.loads(raw))


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _add_up(rows: dict[str, dict[str, int]], key: str, amounts: dict[str, int]) -> None:
    """Add ``amounts`` (name -> amount) to the row of ``key``."""
    row = rows.get(key)
    if row is None:
        rows[key] = dict(amounts)
        return
    for name, amount in amounts.items():
        row[name] = row.get(name, 0) + amount


def _live(keys: Iterable[str], expire: Mapping[str, int], now: float) -> list[str]:
    """The keys Redis would not expire at once (an old event replayed long after its
    buckets' retention would write keys that are gone as soon as they are written)."""
    return [k for k in keys if expire.get(k, now + 1) > now]


def _make_room(state: MemberState) -> None:
    """Before a score is added to a member's full copy: drop the copy (every board is
    unknown again, to be learnt)."""
    if len(state.boards) >= BOARDS_KEPT:
        state.boards.clear()
        state.scored = False


def _scores(
    zrows: dict[str, dict[str, int]],
    steady: set[str],
    members: Mapping[str, MemberState],
    batch: int,
) -> list[str | list[str | int]]:
    """Take out of ``zrows`` the leaderboard increments whose member's score the
    worker knows (``MemberState.boards``) and whose key is in ``steady`` (far from its
    expiry): their sums, to be set with ZADD, as ``[key, [score, member, ...], ...]``
    (at most ``CHUNK`` pairs a list). The rest is sent as increments (the known copies
    are kept up to date all the same); the script replies with their sums, which
    :func:`learn` keeps for the boards asked about."""
    scores: list[str | list[str | int]] = []
    for key, row in list(zrows.items()):
        absolute = key in steady
        rest: dict[str, int] = {}
        pairs: list[str | int] = []
        for member, amount in row.items():
            state = members.get(member)
            if state is None:
                rest[member] = amount
                continue
            boards = state.boards
            known = boards.get(key)
            if known is None:
                if state.scored:
                    _make_room(state)
                if not state.scored:
                    rest[member] = amount
                    if absolute:
                        asked = state.asked
                        if len(asked) >= BOARDS_KEPT:
                            asked.clear()  # replies lost: those are not learnt
                        asked[key] = batch
                    continue
                known = 0
            known = boards[key] = known + amount
            if not absolute:
                rest[member] = amount
                continue
            pairs += (known, member)
            if len(pairs) == 2 * CHUNK:
                scores += (key, pairs)
                pairs = []
        if pairs:
            scores += (key, pairs)
        if rest:
            zrows[key] = rest
        else:
            del zrows[key]
    return scores


def learn(states: Mapping[str, MemberState], reply: Sequence[Any], batch: int) -> None:
    """Keep the scores a write's reply tells (``{'ok', key, member, score, ...}``) for
    the boards that ``batch`` sent as increments and no later batch has (at most
    ``BOARDS_KEPT`` a member)."""
    for at in range(1, len(reply) - 2, 3):
        key, member = reply[at], reply[at + 1]
        state = states.get(member)
        if state is None or state.asked.get(key) != batch:
            continue
        del state.asked[key]
        _make_room(state)
        state.boards[key] = int(float(reply[at + 2]))


def payload(
    writes: CommunityWrites,
    fences: Mapping[str, tuple[int, int, int]],
    now: float,
    keep_ids: int = 8 * 86400,
    batch: int = 0,
) -> list[bytes]:
    """The arguments of ``write_batch.lua`` for one community's batch.

    The first is one JSON array: fences (field -> epoch, offset, stream ms), the
    sorted-set and hash increments added up per key (``{key: {name: amount}}``, as the
    batch added them up: no list is built per key), the hash
    writes whose value is a JSON document of its own
    (member states, award, flag and segment-change records: they follow as further
    arguments, so the script does not decode them), the other commands, the thread
    ops, and the leaderboard scores the worker knows (see :func:`_scores`; ``batch`` is
    the batch's number, which :func:`learn` matches replies to). ``now`` (epoch
    seconds, the shell's clock) only leaves out keys that Redis would expire at once. A
    member's day of remembered event ids lives ``keep_ids`` seconds from its first write
    (the evaluator forgets it by the records' timestamps; this only bounds memory).
    """
    layout = writes.layout
    expire = writes.expire
    blobs: list[bytes] = []

    def blob(value: bytes) -> int:
        blobs.append(value)
        return len(blobs) + 1  # its index in ARGV (1-based, after the JSON)

    zrows: dict[str, dict[str, int]] = {}
    hrows: dict[str, dict[str, int]] = {}
    steady: set[str] = set()
    for spreads, rows in ((writes.boards, zrows), (writes.windows, hrows)):
        for spread in spreads.values():
            if spread.amounts:
                live = spread.keys if spread.first_expiry > now else _live(spread.keys, expire, now)
                for key in live:
                    _add_up(rows, key, spread.amounts)
                if rows is zrows and spread.first_expiry > now + SCORE_MARGIN:
                    steady.update(spread.keys)
    if writes.tally:
        counts: dict[str, int] = {}
        sources: dict[str, int] = {}
        days: dict[str, int] = {}
        for (kind, source, day), n in writes.tally.items():
            counts[kind] = counts.get(kind, 0) + n
            name = f"{kind}|{source}"
            sources[name] = sources.get(name, 0) + n
            name = str(day)
            days[name] = days.get(name, 0) + n
        _add_up(hrows, writes.counts_key, counts)
        _add_up(hrows, writes.sources_key, sources)
        _add_up(hrows, writes.days_key, days)
    for table, rows in ((writes.zextra, zrows), (writes.hextra, hrows)):
        for key, amounts in table.items():
            if expire.get(key, now + 1) > now:
                _add_up(rows, key, amounts)
    # A late bucket of zextra is near its expiry.
    steady -= writes.zextra.keys()
    scores = _scores(zrows, steady, writes.members, batch)
    hsets: list[list[Any]] = []
    out: list[list[str]] = []
    firsts: list[str] = []
    lasts: list[str] = []
    # The event types a member's applied events of this batch had: only their counts
    # changed (the profile's other type fields are as the batches before wrote them).
    kinds: dict[str, set[str]] = {}
    for activity, code in zip(writes.activities, writes.codes, strict=True):
        if code == APPLIED:
            got = kinds.get(activity.member_id)
            if got is None:
                kinds[activity.member_id] = {activity.type}
            else:
                got.add(activity.type)
    # The profile's first_seen and segment are written when they change (a profile
    # without a segment reads as a beginner).
    moved = {record["member_id"] for _, record in writes.changes}
    for member, state in writes.members.items():
        fields: list[Any] = [layout.member(member), STATE_FIELD, blob(encode_state(state))]
        if state.events:
            lasts.extend((str(state.last_seen), member))
            fields += [
                "points", str(state.points),
                "events", str(state.events),
                "last_seen", str(state.last_seen),
            ]  # fmt: skip
            if member in writes.firsts:
                firsts.extend((str(state.first_seen), member))
                fields += ["first_seen", str(state.first_seen)]
            if member in moved:
                fields += ["segment", state.segment]
            for kind in kinds.get(member, ()):
                fields += [f"type:{kind}", str(state.by_type[kind])]
        hsets.append(fields)
    for member, by_day in writes.ids.items():
        for day, digests in by_day.items():
            key = layout.member_ids(member, day)
            out.append(["APPEND", key, digests.hex()])
            if (member, day) in writes.new_ids:
                out.append(["EXPIRE", key, str(keep_ids)])
    if channels := sorted({channel for _, channel in writes.boards if channel is not None}):
        out.append(["SADD", layout.channels(), *channels])
    for member, active in writes.active_days.items():
        out.append(["SADD", layout.member_days(member), *map(str, sorted(active))])
    for head, items in (
        (["ZADD", layout.members_first_seen(), "LT"], firsts),
        (["ZADD", layout.members_last_seen(), "GT"], lasts),
    ):
        for chunk in _chunks(items, 2 * CHUNK):
            out.append([*head, *chunk])
    for identity, record in writes.awards:
        at, member = str(record["at_ms"]), record["member_id"]
        name = badge_field(record["badge"], record["tier"])
        out.append(["HSET", layout.member_badges(member), name, at])
        hsets.append([layout.awards(), identity, blob(orjson.dumps(record))])
        out.append(["ZADD", layout.awards_by_time(), at, identity])
        out.append(["ZADD", layout.award_outbox(), at, identity])
        out.append(["HINCRBY", layout.award_counts(), name, "1"])
        out.append(["ZADD", layout.badge_holders(name), at, member])
    for identity, record in writes.flags:
        hsets.append([layout.flags(), identity, blob(orjson.dumps(record))])
        out.append(["ZADD", layout.flag_outbox(), str(record["end_ms"]), identity])
        out.append(["HINCRBY", layout.moderation_counts(), record["rule"], "1"])
    for key, ids in writes.bursts.items():
        out.append(["RPUSH", key, *ids])
    for identity, record in writes.changes:
        at, member = str(record["at_ms"]), record["member_id"]
        hsets.append([layout.segment_changes(), identity, blob(orjson.dumps(record))])
        out.append(["ZADD", layout.segment_outbox(), at, identity])
        if record["from"] != "beginner":
            out.append(["ZREM", layout.segment_index(record["from"]), member])
        if record["to"] != "beginner":
            out.append(["ZADD", layout.segment_index(record["to"]), at, member])
    for member, due in writes.dues.items():
        if due:
            out.append(["ZADD", layout.segment_due(), str(due), member])
        else:
            out.append(["ZREM", layout.segment_due(), member])
    incremented = writes.incremented()
    for key, expire_at in expire.items():
        if expire_at > now and key in incremented:
            out.append(["EXPIREAT", key, str(expire_at)])
    hist = {kind: layout.first_response(kind) for kind in ("forum", "github")}
    threads = [
        [op, key, member, str(at), str(expire_at), hist[key.split(":thread:", 1)[1].split(":")[0]]]
        for op, key, member, at, expire_at in writes.threads
    ]
    header = orjson.dumps(
        [
            [[f, str(e), str(o), str(s)] for f, (e, o, s) in fences.items()],
            zrows,
            hrows,
            hsets,
            out,
            threads,
            scores,
        ]
    )
    return [header, *blobs]


def commands(argv: Sequence[bytes]) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    """A payload read back as ``write_batch.lua`` reads it: (fences, the commands it
    runs in order, thread ops). For the unit tests' in-memory Redis and for reading
    what a batch writes."""
    fences, zrows, hrows, hsets, out, threads, scores = orjson.loads(argv[0])
    run: list[list[str]] = []
    for key, row in zrows.items():
        run.extend(["ZINCRBY", key, str(a), n] for n, a in row.items())
    for key, row in hrows.items():
        run.extend(["HINCRBY", key, n, str(a)] for n, a in row.items())
    for key, pairs in zip(scores[::2], scores[1::2], strict=True):
        run.append(["ZADD", key, *map(str, pairs)])
    for key, name, index, *rest in hsets:
        run.append(["HSET", key, name, argv[index - 1].decode(), *rest])
    run.extend(out)
    return fences, run, threads


class StateWriter:
    """Loads, claims and writes through one asyncio Redis client."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client: Any = client
        self._prefix = prefix
        self._shas: dict[str, str] = {}

    async def _scripts(self) -> dict[str, str]:
        if not self._shas:
            self._shas = {
                name: await self._client.script_load(text) for name, text in _SCRIPTS.items()
            }
        return self._shas

    async def _run(self, queue: Callable[[Any, Mapping[str, str]], None]) -> list[Any]:
        """One pipeline that ``queue(pipe, shas)`` fills (``shas``: the scripts' SHA1 by
        name); its replies. Redis forgot the scripts (a restart, SCRIPT FLUSH): load them
        and run it again once (an unknown script runs nothing)."""
        for attempt in range(2):
            shas = await self._scripts()
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    queue(pipe, shas)
                    replies: list[Any] = await pipe.execute()
                    return replies
            except redis.exceptions.NoScriptError:
                if attempt:
                    raise
                self._shas = {}
        raise AssertionError("unreachable")  # pragma: no cover

    async def epochs(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """A new owner epoch per input partition (newer than any handed out before)."""
        if not partitions:
            return {}
        async with self._client.pipeline(transaction=False) as pipe:
            for topic, partition in partitions:
                pipe.incr(epoch_key(self._prefix, topic, partition))
            values = await pipe.execute()
        return {tp: int(v) for tp, v in zip(partitions, values, strict=True)}

    async def load(
        self,
        claims: Mapping[KeyLayout, Sequence[tuple[str, int]]],
        members: Sequence[tuple[KeyLayout, str]],
        days: range = range(0),
        retention_seconds: int = 7 * 86400,
    ) -> tuple[dict[KeyLayout, dict[str, Fence]], list[MemberState | None]]:
        """Claim partitions in communities first touched (``claims``: field, epoch pairs)
        and read members' states with their event ids remembered on ``days``, in one
        round trip. The claims run first, so no older owner writes between them and the
        reads."""
        if not claims and not members:
            return {}, []

        by_community: dict[KeyLayout, list[str]] = {}
        for layout, member in members:
            keys = by_community.get(layout)
            if keys is None:
                keys = by_community[layout] = []
            keys.append(layout.member(member))
        day_names = [str(d) for d in days]

        def queue(pipe: Any, shas: Mapping[str, str]) -> None:
            for layout, fields in claims.items():
                args = [x for field, epoch in fields for x in (field, str(epoch))]
                pipe.evalsha(shas["claim"], 1, layout.offsets(), *args)
            for keys in by_community.values():
                pipe.evalsha(shas["load"], len(keys), *keys, STATE_FIELD, *day_names)

        replies = await self._run(queue)
        fences = {}
        for (layout, fields), stored in zip(claims.items(), replies, strict=False):
            fences[layout] = {
                field: Fence.parse(value) for (field, _), value in zip(fields, stored, strict=True)
            }
        # Each community's flat reply, cut into its members' (state, first_seen, ids).
        step = len(days) + 2
        cut = {
            layout: iter(
                [
                    (reply[i], reply[i + 1], reply[i + 2 : i + step])
                    for i in range(0, len(reply), step)
                ]
            )
            for layout, reply in zip(by_community, replies[len(claims) :], strict=True)
        }
        rest = [next(cut[layout]) for layout, _ in members]
        states: list[MemberState | None] = []
        found: list[dict[int, str]] = []
        # Days a state's own newest receipt reaches back to but ``days`` did not cover
        # (its records came with older timestamps, or a sweep loaded it): read in a
        # second round trip, which the worker's batches rarely need.
        more: list[tuple[int, KeyLayout, str, list[int]]] = []
        for index, (raw, first_seen, texts) in enumerate(rest):
            if raw is None and first_seen is not None:
                # A profile written by a release that kept the rules' state in other keys.
                raise StateVersionError(
                    "a member profile without engine state (written by an older release): "
                    "run `pulse rebuild --from-beginning`"
                )
            if raw is None:
                states.append(None)
                found.append({})
                continue
            state = decode_state(raw)
            got = {d: text for d, text in zip(days, texts, strict=True) if text}
            needed = range(
                dedupe_horizon(state.received, retention_seconds) - 1,
                state.received // DAY_MS + 1,
            )
            if state.received and (lacking := [d for d in needed if d not in days]):
                layout, member = members[index]
                more.append((len(states), layout, member, lacking))
            states.append(state)
            found.append(got)
        if more:
            async with self._client.pipeline(transaction=False) as pipe:
                for _, layout, member, lacking in more:
                    pipe.mget([layout.member_ids(member, d) for d in lacking])
                extra = await pipe.execute()
            for (position, _, _, lacking), texts in zip(more, extra, strict=True):
                found[position].update((d, t) for d, t in zip(lacking, texts, strict=True) if t)
        for loaded, got in zip(states, found, strict=True):
            if loaded is not None:
                restore_seen(loaded, got, retention_seconds)
        return fences, states

    async def write(self, batches: Sequence[tuple[str, str, Sequence[bytes]]]) -> list[Any]:
        """Run ``write_batch.lua`` per (community, offsets key, payload), in one pipeline;
        its replies (see :func:`learn`). :class:`Fenced` when a newer owner refused one
        (the others are written)."""
        if not batches:
            return []

        def queue(pipe: Any, shas: Mapping[str, str]) -> None:
            for _community, offsets_key, argv in batches:
                pipe.evalsha(shas["write"], 1, offsets_key, *argv)

        replies = await self._run(queue)
        refused = [
            (community, reply)
            for (community, _, _), reply in zip(batches, replies, strict=True)
            if reply[0] == "fenced"
        ]
        if refused:
            community, reply = refused[0]
            written = [c for c, _, _ in batches if c not in {c for c, _ in refused}]
            raise Fenced(community, reply[1], reply[2], written)
        return replies

    async def due_members(self, layout: KeyLayout, until_ms: int) -> list[str]:
        """Members of a community whose segment downgrade is due by ``until_ms``."""
        members: list[str] = await self._client.zrangebyscore(layout.segment_due(), 0, until_ms)
        return members

    async def pending(self, outbox_key: str, limit: int = 1000) -> list[str]:
        """Ids waiting in an outbox (recorded, not yet confirmed as published), oldest first."""
        ids: list[str] = await self._client.zrange(outbox_key, 0, limit - 1)
        return ids

    async def records(
        self, wanted: Sequence[tuple[str, Sequence[str]]]
    ) -> list[list[tuple[str, Any]]]:
        """Per (records key, ids) pair, the JSON records of the ids (ids without a record
        are skipped), read with one pipeline."""
        asked = [(key, list(ids)) for key, ids in wanted if ids]
        if not asked:
            return [[] for _ in wanted]
        async with self._client.pipeline(transaction=False) as pipe:
            for key, ids in asked:
                pipe.hmget(key, ids)
            replies = iter(await pipe.execute())
        return [
            [(i, orjson.loads(r)) for i, r in zip(ids, next(replies), strict=True) if r]
            if ids
            else []
            for _, ids in wanted
        ]

    async def confirm(self, confirmed: Sequence[tuple[str, str]]) -> None:
        """Remove published ids from their outboxes: (outbox key, id) pairs."""
        if not confirmed:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for outbox_key, identity in confirmed:
                pipe.zrem(outbox_key, identity)
            await pipe.execute()

    async def communities(self) -> list[str]:
        members: set[str] = await self._client.smembers(f"{self._prefix}:communities")
        return sorted(members)

    async def remember_communities(self, communities: Sequence[str]) -> None:
        if communities:
            await self._client.sadd(f"{self._prefix}:communities", *communities)
