"""The Redis key layout.

Every key of a community carries the community in a Redis Cluster hash tag, so all of
a community's keys live in one slot and one Lua call can touch them::

    {prefix}:{<community>}:counts                   hash type -> events (all time)
    {prefix}:{<community>}:lb:<period>:<bucket>     sorted set member -> -points
    {prefix}:{<community>}:lb:ch:<channel>:<period>:<bucket>
    {prefix}:{<community>}:win:<min|hour>:<n>       hash member -> points in bucket n
                                                    (daily buckets: the lb:day boards)
    {prefix}:{<community>}:member:<member_id>       hash points, events, type:<t>,
                                                    first_seen, last_seen (epoch ms),
                                                    segment, state (the engine's state)
    {prefix}:{<community>}:member:<member_id>:days  set of active UTC days (day numbers)
    {prefix}:{<community>}:member:<member_id>:ids:<day>  event id digests received that
                                                    UTC day (the dedupe memory)
    {prefix}:{<community>}:member:<member_id>:badges  hash: badge[:tier] -> awarded (epoch ms)
    {prefix}:{<community>}:awards                   hash: award_id -> award record (JSON)
    {prefix}:{<community>}:awards:by_time           sorted set: award_id by awarded_at
    {prefix}:{<community>}:awards:outbox            sorted set: awards not yet published
    {prefix}:{<community>}:awards:counts            hash: badge:tier -> awards
    {prefix}:{<community>}:badge:<badge[:tier]>:holders  sorted set: member -> awarded
    {prefix}:{<community>}:channels                 set of channels with leaderboards
    {prefix}:{<community>}:seg:<segment>            sorted set: members above beginner
    {prefix}:{<community>}:seg:due                  sorted set: member -> downgrade due
    {prefix}:{<community>}:segchanges[:outbox]      hash of change records / unpublished ids
    {prefix}:{<community>}:members:first|last       sorted sets: member -> first/last seen ms
    {prefix}:{<community>}:events:day               hash: UTC day number -> events
    {prefix}:{<community>}:counts:source            hash: type|source -> events
    {prefix}:{<community>}:feedback:day             hash: <day>:sum / <day>:n of ratings
    {prefix}:{<community>}:thread:<kind>:<thread>   hash: opened_at, author, answered
    {prefix}:{<community>}:ttfr:<kind>              hash: le:<bound> / sum / count
    {prefix}:{<community>}:mod:burst:<flag_id>      list: event ids attached to a flag
    {prefix}:{<community>}:flags[:outbox]           hash of flag records / unpublished ids
    {prefix}:{<community>}:mod:counts               hash: rule -> flags
    {prefix}:{<community>}:pypi:daily:<project>     hash: UTC day number -> downloads
    {prefix}:{<community>}:pypi:recent:<project>    hash: last_day/last_week/last_month
    {prefix}:{<community>}:offsets                  hash: topic|partition -> owner epoch,
                                                    last applied offset, stream time
    {prefix}:epoch:<topic>:<partition>              counter: the owner epochs handed out

Leaderboard scores are stored negated, so that Redis's ascending order (score, then
member bytes) gives "most points first, ties by member_id ascending".

Ids from the outside are percent-encoded (everything but ``A-Za-z0-9_.-~``) before they
become part of a key, so ``:``, ``*``, braces, newlines or look-alike characters in a
member id or channel can never name another member's or community's key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final
from urllib.parse import quote

PREFIX_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,32}")


@lru_cache(maxsize=65536)
def escape(value: str) -> str:
    """Injective, key-safe encoding of an outside id.

    Cached: the same member ids and channels come back in every batch, and ``quote`` is
    a noticeable share of planning.
    """
    return quote(value, safe="")


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """Builds the key names of one deployment (``prefix``) for one community."""

    prefix: str
    community: str
    # The common start of every key, built once: each event names about 25 keys.
    base: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if PREFIX_RE.fullmatch(self.prefix) is None:
            raise ValueError("key prefix must be 1..32 characters of [A-Za-z0-9_.-]")
        # community is validated against [a-z0-9._-] before it gets here, so it cannot
        # contain the braces that end a hash tag.
        object.__setattr__(self, "base", f"{self.prefix}:{{{self.community}}}")

    def counts(self) -> str:
        return f"{self.base}:counts"

    def leaderboard(self, period: str, bucket: str, channel: str | None = None) -> str:
        if channel is None:
            return f"{self.base}:lb:{period}:{bucket}"
        return f"{self.base}:lb:ch:{escape(channel)}:{period}:{bucket}"

    def window(self, granularity_name: str, index: int) -> str:
        return f"{self.base}:win:{granularity_name}:{index}"

    def member(self, member_id: str) -> str:
        return f"{self.base}:member:{escape(member_id)}"

    def member_days(self, member_id: str) -> str:
        return f"{self.base}:member:{escape(member_id)}:days"

    def member_ids(self, member_id: str, day: int) -> str:
        """The event ids (8-byte digests, hex) a member's records received on a UTC
        day brought: the member's dedupe memory, one string per day. The profile key
        and ``:ids:<day>`` (agents/load_members.lua builds it so)."""
        return f"{self.base}:member:{escape(member_id)}:ids:{day}"

    def member_badges(self, member_id: str) -> str:
        return f"{self.base}:member:{escape(member_id)}:badges"

    def awards(self) -> str:
        return f"{self.base}:awards"

    def awards_by_time(self) -> str:
        return f"{self.base}:awards:by_time"

    def award_outbox(self) -> str:
        return f"{self.base}:awards:outbox"

    def badge_holders(self, badge_field: str) -> str:
        """Members holding one badge tier (``badge`` or ``badge:tier``), scored by the
        award time in ms: the badge pages' holder lists."""
        return f"{self.base}:badge:{badge_field}:holders"

    def channels(self) -> str:
        """The channel names that have leaderboards (a set): the pages' channel switch."""
        return f"{self.base}:channels"

    def award_counts(self) -> str:
        return f"{self.base}:awards:counts"

    def segment_index(self, segment: str) -> str:
        return f"{self.base}:seg:{segment}"

    def segment_changes(self) -> str:
        return f"{self.base}:segchanges"

    def segment_outbox(self) -> str:
        return f"{self.base}:segchanges:outbox"

    def members_first_seen(self) -> str:
        return f"{self.base}:members:first"

    def members_last_seen(self) -> str:
        return f"{self.base}:members:last"

    def events_by_day(self) -> str:
        return f"{self.base}:events:day"

    def counts_by_source(self) -> str:
        return f"{self.base}:counts:source"

    def feedback_by_day(self) -> str:
        return f"{self.base}:feedback:day"

    def thread(self, kind: str, thread_id: str) -> str:
        return f"{self.base}:thread:{kind}:{escape(thread_id)}"

    def first_response(self, kind: str) -> str:
        return f"{self.base}:ttfr:{kind}"

    def burst(self, flag_id: str) -> str:
        return f"{self.base}:mod:burst:{flag_id}"

    def flags(self) -> str:
        return f"{self.base}:flags"

    def flag_outbox(self) -> str:
        return f"{self.base}:flags:outbox"

    def package_daily(self, project: str) -> str:
        """``project`` in its PEP 503 normal form, validated by streams.downloads."""
        return f"{self.base}:pypi:daily:{project}"

    def package_recent(self, project: str) -> str:
        return f"{self.base}:pypi:recent:{project}"

    def moderation_counts(self) -> str:
        return f"{self.base}:mod:counts"

    def offsets(self) -> str:
        """Per input partition, the owner's epoch, the last applied offset and the
        stream time: the fence of the community's writes."""
        return f"{self.base}:offsets"

    def segment_due(self) -> str:
        return f"{self.base}:seg:due"


def partition_field(topic: str, partition: int) -> str:
    """The field of an input partition in a community's offsets hash."""
    return f"{escape(topic)}|{partition}"


def epoch_key(prefix: str, topic: str, partition: int) -> str:
    """The counter that hands out owner epochs of an input partition (one slot)."""
    return f"{prefix}:epoch:{escape(topic)}:{partition}"
