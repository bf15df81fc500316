"""Badges: a declarative catalog of rules, and the counters and checks they need.

A badge holds one or more conditions that must all be true; a tiered badge has
thresholds (bronze 5, silver 25, ...) that apply to its first condition. Condition
kinds:

- ``count``: events matching a filter; with ``same = "attributes.X"`` the events are
  counted per value of that attribute and one value must reach the threshold;
- ``first``: sugar for ``count`` with ``at_least = 1``;
- ``distinct_days``: distinct UTC days with a matching event;
- ``streak``: consecutive UTC days with a matching event.

A filter narrows events by ``type``, ``channel``, ``source``, ``attributes`` (exact
values) and a ``from``/``until`` time box, which makes a challenge. Counters are per
(community, member) and live in Redis beside the points, updated by the same atomic
call, so a redelivered event never counts twice.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

from streams.activity import ACTIVITY_TYPES, Activity, InvalidActivity, parse_timestamp
from streams.periods import format_instant

BADGE_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,47}")
TIER_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
KINDS: Final = ("count", "first", "distinct_days", "streak")
MAX_THRESHOLD: Final = 1_000_000
MAX_STREAK: Final = 366


class CatalogError(ValueError):
    """A badge catalog that cannot be used; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Filter:
    """Which events feed a condition. ``None`` fields match anything."""

    type: str | None = None
    channel: str | None = None
    source: str | None = None
    attributes: tuple[tuple[str, str | int | bool], ...] = ()
    start: float | None = None
    end: float | None = None

    def matches(self, activity: Activity) -> bool:
        if self.type is not None and activity.type != self.type:
            return False
        if self.channel is not None and activity.channel != self.channel:
            return False
        if self.source is not None and activity.source != self.source:
            return False
        if self.start is not None and activity.occurred_at < self.start:
            return False
        if self.end is not None and activity.occurred_at >= self.end:
            return False
        if self.attributes:
            attrs = activity.attributes or {}
            for name, value in self.attributes:
                if attrs.get(name) != value:
                    return False
        return True


@dataclass(frozen=True, slots=True)
class Condition:
    kind: str
    filter: Filter
    at_least: int
    same: str | None = None  # attribute name: count per value of attributes[same]

    def group(self, activity: Activity) -> str | None:
        """The value counted under for ``same`` conditions; None when the event has none."""
        if self.same is None:
            return None
        value = (activity.attributes or {}).get(self.same)
        if value is None or isinstance(value, dict | list):
            return None
        return str(value)[:128]


@dataclass(frozen=True, slots=True)
class Tier:
    name: str | None
    at_least: int


@dataclass(frozen=True, slots=True)
class Badge:
    id: str
    name: str
    description: str
    conditions: tuple[Condition, ...]
    tiers: tuple[Tier, ...]
    # Derived once, for the evaluator's hot path: each condition's counter name, and per
    # tier its member-badges field and per-condition thresholds.
    names: tuple[str, ...] = field(init=False, repr=False, compare=False)
    levels: tuple[tuple[Tier, str, tuple[int, ...]], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "names", tuple(f"{self.id}/{i}" for i in range(len(self.conditions)))
        )
        levels = tuple(
            (
                tier,
                badge_field(self.id, tier.name),
                self.thresholds(tier),
            )
            for tier in self.tiers
        )
        object.__setattr__(self, "levels", levels)

    def thresholds(self, tier: Tier) -> tuple[int, ...]:
        """Per-condition thresholds for ``tier`` (the tier sets the first condition's)."""
        return (tier.at_least, *(c.at_least for c in self.conditions[1:]))

    def public(self) -> dict[str, Any]:
        def condition(c: Condition) -> dict[str, Any]:
            body: dict[str, Any] = {"kind": c.kind, "at_least": c.at_least}
            f = c.filter
            for key, value in (
                ("type", f.type),
                ("channel", f.channel),
                ("source", f.source),
                ("from", f.start),
                ("until", f.end),
                ("same", c.same),
            ):
                if value is not None:
                    body[key] = value
            if f.attributes:
                body["attributes"] = dict(f.attributes)
            return body

        return {
            "badge": self.id,
            "name": self.name,
            "description": self.description,
            "tiers": [{"tier": t.name, "at_least": t.at_least} for t in self.tiers],
            "when": [condition(c) for c in self.conditions],
        }


def criteria(badge: Badge) -> list[str]:
    """How to earn ``badge``, one sentence per condition (for people, not machines)."""
    out = []
    for index, c in enumerate(badge.conditions):
        f = c.filter
        what = f"{f.type} events" if f.type else "events of any type"
        if f.channel is not None:
            what += f" in channel {f.channel}"
        if f.source is not None:
            what += f" from {f.source}"
        for name, value in f.attributes:
            what += f" with {name} = {value}"
        if index == 0 and badge.tiers and badge.tiers[0].name is not None:
            count = " / ".join(f"{t.at_least} ({t.name})" for t in badge.tiers)
        else:
            count = str(c.at_least)
        if c.kind == "streak":
            sentence = f"Active on at least {count} consecutive UTC days ({what})"
        elif c.kind == "distinct_days":
            sentence = f"Active on at least {count} distinct UTC days ({what})"
        elif c.same is not None:
            sentence = f"At least {count} {what} with the same {c.same}"
        elif count == "1":
            sentence = f"A first one of {what}"
        else:
            sentence = f"At least {count} {what}"
        if f.start is not None or f.end is not None:
            start = format_instant(f.start) if f.start is not None else "the start"
            end = format_instant(f.end) if f.end is not None else "now"
            sentence += f", between {start} and {end}"
        out.append(sentence + ".")
    return out


def badge_field(badge: str, tier: str | None) -> str:
    """The member-badges hash field of an award, and the award counts' field."""
    return badge if not tier else f"{badge}:{tier}"


@lru_cache(maxsize=65536)
def award_id(community: str, member_id: str, badge: str, tier: str | None) -> str:
    """Deterministic id of the award of ``badge``/``tier`` to a member of a community.

    Cached: every event that feeds a badge computes the ids of its tiers, and the same
    members come back batch after batch.
    """
    text = "\x1f".join((community, member_id, badge, tier or ""))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def award_message(
    community: str,
    identity: str,
    member_id: str,
    badge_id: str,
    tier: str | None,
    at_ms: int,
    evidence: str,
    badge: Badge | None,
) -> dict[str, Any]:
    """The ``badge-awarded.v1`` message of one award (``schemas/badge-awarded.v1.json``)."""
    return {
        "schema_version": 1,
        "award_id": identity,
        "community": community,
        "member_id": member_id,
        "badge": badge_id,
        "tier": tier,
        "awarded_at": format_instant(at_ms / 1000),
        "evidence": [evidence],
        "badge_name": badge.name if badge is not None else badge_id,
        "description": badge.description if badge is not None else "",
    }


def _int(where: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CatalogError(f"{where} must be an integer between {low} and {high}")
    return value


def _text(where: str, value: object, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or not value.strip() or len(value) > 500:
        raise CatalogError(f"{where} must be a non-empty string of at most 500 characters")
    return value


def _time(where: str, value: object) -> float | None:
    if value is None:
        return None
    if hasattr(value, "isoformat"):  # TOML offset date-times arrive as datetime
        value = value.isoformat()
    try:
        return parse_timestamp(value, where)
    except InvalidActivity as exc:
        raise CatalogError(f"{where}: {exc.detail}") from None


def _condition(where: str, raw: object, tiered: bool) -> Condition:
    if not isinstance(raw, Mapping):
        raise CatalogError(f"{where} must be a table")
    known = {"kind", "type", "channel", "source", "attributes", "from", "until", "at_least", "same"}
    if unknown := set(raw) - known:
        raise CatalogError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise CatalogError(f"{where}.kind must be one of {', '.join(KINDS)}")
    kind_type = raw.get("type")
    if kind_type is not None and kind_type not in ACTIVITY_TYPES:
        raise CatalogError(f"{where}.type {kind_type!r} is not an activity type")
    if kind in ("count", "first") and kind_type is None:
        raise CatalogError(f"{where}: a {kind} condition needs a type")
    attributes = raw.get("attributes", {})
    if not isinstance(attributes, Mapping) or not all(
        isinstance(v, str | int | bool) for v in attributes.values()
    ):
        raise CatalogError(f"{where}.attributes must map names to strings or numbers")
    start, end = _time(f"{where}.from", raw.get("from")), _time(f"{where}.until", raw.get("until"))
    if start is not None and end is not None and end <= start:
        raise CatalogError(f"{where}: until must be after from")
    same = raw.get("same")
    if same is not None:
        if kind != "count" or not isinstance(same, str) or not same.startswith("attributes."):
            raise CatalogError(f"{where}.same must be 'attributes.<name>' on a count condition")
        same = same.removeprefix("attributes.")
    if kind == "first":
        if "at_least" in raw:
            raise CatalogError(f"{where}: a first condition has no at_least")
        at_least = 1
    elif tiered and "at_least" not in raw:
        at_least = 0  # set per tier
    else:
        high = MAX_STREAK if kind == "streak" else MAX_THRESHOLD
        at_least = _int(f"{where}.at_least", raw.get("at_least"), 1, high)
    return Condition(
        kind="count" if kind == "first" else str(kind),
        filter=Filter(
            type=kind_type,
            channel=_text(f"{where}.channel", raw.get("channel"), "") or None,
            source=_text(f"{where}.source", raw.get("source"), "") or None,
            attributes=tuple(sorted(attributes.items())),
            start=start,
            end=end,
        ),
        at_least=at_least,
        same=same,
    )


def _badge(badge_id: str, raw: object) -> Badge:
    where = f"badges.{badge_id}"
    if BADGE_ID_RE.fullmatch(badge_id) is None:
        raise CatalogError(f"{where}: a badge id is 1..48 characters of [a-z0-9-]")
    if not isinstance(raw, Mapping):
        raise CatalogError(f"{where} must be a table")
    if unknown := set(raw) - {"name", "description", "tiers", "when"}:
        raise CatalogError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    when = raw.get("when")
    if not isinstance(when, list) or not when:
        raise CatalogError(f"{where}.when must list at least one condition")
    raw_tiers = raw.get("tiers")
    tiered = raw_tiers is not None
    conditions = tuple(
        _condition(f"{where}.when[{i}]", c, tiered and i == 0) for i, c in enumerate(when)
    )
    if tiered:
        if not isinstance(raw_tiers, Mapping) or not raw_tiers:
            raise CatalogError(f"{where}.tiers must map tier names to thresholds")
        high = MAX_STREAK if conditions[0].kind == "streak" else MAX_THRESHOLD
        tiers = []
        for name, threshold in raw_tiers.items():
            if TIER_RE.fullmatch(name) is None:
                raise CatalogError(f"{where}.tiers: {name!r} is not 1..32 characters of [a-z0-9-]")
            tiers.append(Tier(name, _int(f"{where}.tiers.{name}", threshold, 1, high)))
        if [t.at_least for t in tiers] != sorted({t.at_least for t in tiers}):
            raise CatalogError(f"{where}.tiers must have strictly increasing thresholds")
    else:
        tiers = [Tier(None, conditions[0].at_least)]
    return Badge(
        id=badge_id,
        name=_text(f"{where}.name", raw.get("name"), badge_id),
        description=_text(f"{where}.description", raw.get("description"), ""),
        conditions=conditions,
        tiers=tuple(tiers),
    )


def parse_catalog(data: Mapping[str, Any]) -> tuple[Badge, ...]:
    """Validate a decoded catalog (``{"badges": {id: {...}}}``)."""
    if set(data) - {"badges"}:
        raise CatalogError(f"unknown top-level key {sorted(set(data) - {'badges'})[0]!r}")
    badges = data.get("badges")
    if not isinstance(badges, Mapping):
        raise CatalogError("the catalog needs a [badges.<id>] table per badge")
    return tuple(_badge(badge_id, raw) for badge_id, raw in badges.items())


def load_catalog(text: str) -> tuple[Badge, ...]:
    """Parse TOML catalog text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"not valid TOML: {exc}") from None
    return parse_catalog(data)


DEFAULT_CATALOG_TOML: Final = """\
[badges.first-merge]
name = "First merge"
description = "Had a first pull request merged."
when = [{ kind = "first", type = "github.pr_merged" }]

[badges.helper]
name = "Helper"
description = "Answers accepted on the forum."
tiers = { bronze = 5, silver = 25, gold = 100 }
when = [{ kind = "count", type = "forum.answer_accepted" }]

[badges.reviewer]
name = "Reviewer"
description = "Code reviews submitted."
tiers = { bronze = 10, silver = 50, gold = 200 }
when = [{ kind = "count", type = "github.review_submitted" }]

[badges.conversationalist]
name = "Conversationalist"
description = "At least 50 chat messages on at least 5 distinct days."
when = [
  { kind = "count", type = "chat.message", at_least = 50 },
  { kind = "distinct_days", type = "chat.message", at_least = 5 },
]

[badges.regular]
name = "Regular"
description = "Active on 7 consecutive days."
when = [{ kind = "streak", at_least = 7 }]

[badges.session-goer]
name = "Session-goer"
description = "Attended at least 3 sessions of the same event."
when = [
  { kind = "count", type = "event.session_attended", same = "attributes.event", at_least = 3 },
]

[badges.event-crew]
name = "Event crew"
description = "Volunteered at an event."
when = [{ kind = "first", type = "event.volunteer_shift" }]

[badges.voice]
name = "Voice"
description = "Gave feedback for the first time."
when = [{ kind = "first", type = "feedback.submitted" }]
"""


def default_catalog() -> tuple[Badge, ...]:
    return load_catalog(DEFAULT_CATALOG_TOML)
