"""Seeded generators of believable community activity, for demos, tests and benchmarks.

Two generators share this module:

- :func:`generate` draws ``count`` independent events: member activity is skewed (a few
  regulars do most of the talking) and types follow what a Python community does (far
  more chat than merged PRs). Tests use it when they need an exact count.
- :func:`simulate` plays out a community over days: a heavy tail of core members,
  newcomers joining and members drifting away, a weekday and daily rhythm, GitHub flow
  (issues, pull requests, reviews, merges), forum questions with replies and accepted
  answers, package releases, a conference week with check-ins, sessions, volunteers and
  feedback, chat floods and cross-posts, and a small share of malformed lines.

Both are deterministic for a seed and a ``now``, and give every event a unique
``event_id``, so a replay of the same seed is a true redelivery.
"""

from __future__ import annotations

import heapq
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from streams.periods import format_instant

# (type, source, relative frequency, channels)
_MIX: Final[tuple[tuple[str, str, int, tuple[str, ...]], ...]] = (
    ("chat.message", "discord", 60, ("general", "help", "web-dev", "data-science")),
    ("forum.post", "discourse", 5, ("q-and-a", "announcements")),
    ("forum.reply", "discourse", 10, ("q-and-a", "ideas")),
    ("forum.answer_accepted", "discourse", 2, ("q-and-a",)),
    ("github.issue_opened", "github", 3, ("core", "docs")),
    ("github.comment", "github", 6, ("core", "docs")),
    ("github.pr_opened", "github", 3, ("core", "docs")),
    ("github.pr_merged", "github", 2, ("core", "docs")),
    ("github.review_submitted", "github", 3, ("core",)),
    ("event.checkin", "pycon", 2, ()),
    ("event.session_attended", "pycon", 2, ()),
    ("event.volunteer_shift", "pycon", 1, ()),
    ("feedback.submitted", "pycon", 1, ()),
    ("package.released", "pypi", 1, ()),
)

DEFAULT_COMMUNITIES: Final = ("pycon-us", "python-discord", "django-forum")


def generate(
    count: int,
    *,
    now: float,
    seed: int = 7,
    span_seconds: int = 7 * 86400,
    communities: tuple[str, ...] = DEFAULT_COMMUNITIES,
    members: int = 200,
    id_prefix: str = "sim",
) -> Iterator[dict[str, Any]]:
    """Yield ``count`` activity dicts with ``occurred_at`` in ``(now - span, now]``."""
    rng = random.Random(seed)  # noqa: S311 - simulation, not security
    kinds = [m[0] for m in _MIX]
    weights = [m[2] for m in _MIX]
    by_kind = {m[0]: m for m in _MIX}
    # Zipf-like skew: member i is picked with weight 1/(i+1).
    member_weights = [1.0 / (i + 1) for i in range(members)]
    member_names = [f"member-{i:05d}" for i in range(members)]
    for n in range(count):
        kind = rng.choices(kinds, weights)[0]
        _, source, _, channels = by_kind[kind]
        event: dict[str, Any] = {
            "event_id": f"{id_prefix}-{seed}-{n}",
            "type": kind,
            "member_id": rng.choices(member_names, member_weights)[0],
            "community": communities[rng.randrange(len(communities))],
            "source": source,
            "occurred_at": format_instant(now - rng.random() * span_seconds),
        }
        if channels:
            event["channel"] = rng.choice(channels)
        if kind == "chat.message":
            event["attributes"] = {"content_hash": f"{rng.getrandbits(64):016x}"}
        elif kind == "feedback.submitted":
            event["attributes"] = {"rating": rng.randint(1, 5), "event": "pycon-2026"}
        elif kind == "event.session_attended":
            event["attributes"] = {"event": "pycon-2026", "session": f"talk-{rng.randrange(40)}"}
        yield event


# ---------------------------------------------------------------------------------------
# simulate(): a community played out over days
# ---------------------------------------------------------------------------------------

DAY: Final = 86400
HOUR: Final = 3600
COMMUNITY_NAMES: Final = (
    *DEFAULT_COMMUNITIES,
    "pyladies",
    "scipy-conf",
    "pydata-global",
    "flask-users",
    "fastapi-community",
    "europython",
    "python-brasil",
    "pycon-au",
    "pyvideo",
)
CHAT_CHANNELS: Final = ("general", "help", "web-dev", "data-science", "off-topic")
_CHAT_CHANNEL_WEIGHTS: Final = (40, 25, 12, 12, 11)
REPOSITORIES: Final = ("core", "docs", "website")
_REPO_WEIGHTS: Final = (6, 3, 1)
# Monday first: quieter Fridays, much quieter weekends.
WEEKDAY_FACTOR: Final = (1.0, 1.05, 1.05, 1.0, 0.9, 0.5, 0.45)
# Activity by UTC hour for a community centred on Europe/the Americas.
_HOUR_WEIGHTS: Final = (
    3,
    2,
    1.5,
    1,
    1,
    1.5,
    3,
    5,
    8,
    10,
    11,
    12,
    13,
    14,
    15,
    16,
    16,
    15,
    14,
    12,
    10,
    8,
    6,
    4,
)
_HOUR_SHIFTS: Final = (0, 3, -4, 6, -6, 1, -2, 5)
_RATINGS: Final = (1, 2, 3, 4, 5)
_RATING_WEIGHTS: Final = (2, 5, 15, 40, 38)
MALFORMED_KINDS: Final = (
    "invalid_json",
    "not_an_object",
    "unknown_type",
    "missing_field",
    "bad_community",
    "bad_timestamp",
    "out_of_range",
    "unknown_field",
)
# role -> affinity per persona
_AFFINITY: Final[dict[str, dict[str, float]]] = {
    "chatter": {"chat": 1.0, "ask": 0.6, "help": 0.1, "code": 0.03, "review": 0.0, "release": 0},
    "helper": {"chat": 0.7, "ask": 0.2, "help": 1.0, "code": 0.2, "review": 0.15, "release": 0},
    "coder": {"chat": 0.5, "ask": 0.3, "help": 0.4, "code": 1.0, "review": 0.6, "release": 0},
    "maintainer": {"chat": 0.6, "ask": 0.1, "help": 0.8, "code": 1.0, "review": 1.0, "release": 1},
}
_ROLES: Final = ("chat", "ask", "help", "code", "review", "release", "any")


def community_names(count: int) -> tuple[str, ...]:
    """``count`` plausible community names (the demo's three first)."""
    names = list(COMMUNITY_NAMES[:count])
    names += [f"community-{i:03d}" for i in range(len(names), count)]
    return tuple(names)


@dataclass(frozen=True, slots=True)
class Malformed:
    """A deliberately broken input line, which rule it breaks, and its intended key."""

    line: str
    kind: str
    member_id: str | None = None


@dataclass(frozen=True)
class Scenario:
    """What to simulate. ``events`` is the approximate number of valid events; the
    conference, floods and cross-posts come on top, follow-ups after ``now`` are not
    emitted."""

    now: float
    communities: tuple[str, ...] = DEFAULT_COMMUNITIES
    members: int = 300
    days: int = 10
    events: int = 5000
    seed: int = 7
    malformed_share: float = 0.01
    id_prefix: str = "sim"
    conference: bool = True

    def __post_init__(self) -> None:
        if not self.communities:
            raise ValueError("at least one community is needed")
        if self.members < 2:
            raise ValueError("at least two members are needed")
        if self.days < 1:
            raise ValueError("at least one day is needed")
        if self.events < 0:
            raise ValueError("events must not be negative")
        if not 0 <= self.malformed_share <= 0.5:
            raise ValueError("malformed_share must be between 0 and 0.5")


@dataclass(slots=True)
class _Member:
    name: str
    weight: float
    persona: str
    communities: tuple[int, ...]
    joined: float
    left: float

    def active(self, start: float, end: float) -> bool:
        return self.joined < end and self.left > start


@dataclass(slots=True)
class _Pool:
    members: list[_Member]
    cum: list[float]


@dataclass
class _Run:
    scenario: Scenario
    rng: random.Random
    start: float
    members: list[_Member]
    pending: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    seq: int = 0
    threads: int = 0
    issue_numbers: dict[tuple[int, str], int] = field(default_factory=dict)
    versions: dict[tuple[int, str], tuple[int, int]] = field(default_factory=dict)

    def push(self, at: float, event: dict[str, Any]) -> None:
        self.seq += 1
        heapq.heappush(self.pending, (at, self.seq, event))

    def thread_id(self) -> str:
        self.threads += 1
        return f"{self.scenario.id_prefix}-{self.scenario.seed}-t{self.threads}"


def _event(
    kind: str,
    member: _Member,
    community: str,
    source: str,
    channel: str | None = None,
    **attributes: Any,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": kind,
        "member_id": member.name,
        "community": community,
        "source": source,
    }
    if channel is not None:
        event["channel"] = channel
    if attributes:
        event["attributes"] = attributes
    return event


def _members(scenario: Scenario, rng: random.Random, start: float) -> list[_Member]:
    span = scenario.now - start
    n = len(scenario.communities)
    shares = [1 / math.sqrt(i + 1) for i in range(n)]
    core = max(2, round(scenario.members * 0.04))
    members = []
    for i in range(scenario.members):
        is_core = i < core
        if is_core:
            persona = "maintainer" if i < (core + 1) // 2 else "coder"
        else:
            persona = rng.choices(("chatter", "helper", "coder"), (60, 18, 22))[0]
        home = rng.choices(range(n), shares)[0]
        homes = [home]
        if n > 1 and rng.random() < (0.6 if is_core else 0.2):
            other = rng.randrange(n - 1)
            homes.append(other if other < home else other + 1)
        joined, left = -math.inf, math.inf
        if not is_core and rng.random() < 0.3:
            joined = start + rng.uniform(0.05, 0.9) * span  # a newcomer
        if not is_core and rng.random() < 0.18:
            left = max(joined, start) + rng.uniform(0.1, 0.6) * span  # drifts away
        # Zipf-like skew with some noise: a few core members do most of the work.
        weight = rng.uniform(0.8, 1.25) / (i + 1) ** 0.95
        members.append(_Member(f"member-{i:05d}", weight, persona, tuple(homes), joined, left))
    return members


def _pools(members: list[_Member], community: int, start: float, end: float) -> dict[str, _Pool]:
    present = [m for m in members if community in m.communities and m.active(start, end)]
    pools: dict[str, _Pool] = {}
    for role in _ROLES:
        chosen, cum, total = [], [], 0.0
        for m in present:
            if role == "any":
                w = 1.0
            elif role == "ask":  # newcomers and occasional members ask the questions
                w = math.sqrt(m.weight) * _AFFINITY[m.persona]["ask"]
            else:
                w = m.weight * _AFFINITY[m.persona][role]
            if w > 0:
                total += w
                chosen.append(m)
                cum.append(total)
        if chosen:
            pools[role] = _Pool(chosen, cum)
    return pools


def _pick(
    run: _Run, pools: dict[str, _Pool], role: str, avoid: _Member | None = None
) -> _Member | None:
    pool = pools.get(role)
    if pool is None:
        return None
    for _ in range(4):
        member = run.rng.choices(pool.members, cum_weights=pool.cum)[0]
        if member is not avoid:
            return member
    return None


def _chat(run: _Run, c: int, pools: dict[str, _Pool], t: float) -> int:
    member = _pick(run, pools, "chat")
    if member is None:
        return 1
    channel = run.rng.choices(CHAT_CHANNELS, _CHAT_CHANNEL_WEIGHTS)[0]
    community = run.scenario.communities[c]
    content = f"{run.rng.getrandbits(128):032x}"
    run.push(t, _event("chat.message", member, community, "discord", channel, content_hash=content))
    return 1


def _flood(run: _Run, c: int, pools: dict[str, _Pool], t: float) -> int:
    """One member posting a burst of near-identical messages in one channel."""
    member = _pick(run, pools, "any")
    if member is None:
        return 0
    rng = run.rng
    channel = rng.choices(CHAT_CHANNELS, _CHAT_CHANNEL_WEIGHTS)[0]
    spam = f"{rng.getrandbits(128):032x}"
    count = rng.randint(10, 25)
    for _ in range(count):
        content = spam if rng.random() < 0.6 else f"{rng.getrandbits(128):032x}"
        t += rng.uniform(1, 8)
        community = run.scenario.communities[c]
        run.push(
            t, _event("chat.message", member, community, "discord", channel, content_hash=content)
        )
    return count


def _cross_post(run: _Run, c: int, pools: dict[str, _Pool], t: float) -> int:
    """The same message (same content hash) posted by one member in several channels."""
    member = _pick(run, pools, "chat")
    if member is None:
        return 0
    rng = run.rng
    content = f"{rng.getrandbits(128):032x}"
    channels = rng.sample(CHAT_CHANNELS, rng.randint(2, 4))
    for channel in channels:
        t += rng.uniform(20, 180)
        community = run.scenario.communities[c]
        run.push(
            t, _event("chat.message", member, community, "discord", channel, content_hash=content)
        )
    return len(channels)


def _forum_thread(run: _Run, c: int, pools: dict[str, _Pool], t: float) -> int:
    """A question, replies over the next hours, and often an accepted answer."""
    rng = run.rng
    asker = _pick(run, pools, "ask")
    if asker is None:
        return 1
    community = run.scenario.communities[c]
    channel = rng.choices(("q-and-a", "ideas"), (7, 3))[0]
    thread = run.thread_id()
    run.push(t, _event("forum.post", asker, community, "discourse", channel, thread_id=thread))
    count = 1
    answers: list[tuple[float, _Member]] = []
    for _ in range(rng.choices((0, 1, 2, 3, 4), (15, 30, 25, 18, 12))[0]):
        t += rng.expovariate(1 / (3 * HOUR))
        helper = asker if answers and rng.random() < 0.25 else _pick(run, pools, "help", asker)
        if helper is None:
            continue
        run.push(
            t, _event("forum.reply", helper, community, "discourse", channel, thread_id=thread)
        )
        count += 1
        if helper is not asker:
            answers.append((t, helper))
    if channel == "q-and-a" and answers and rng.random() < 0.6:
        when, helper = answers[0] if rng.random() < 0.6 else rng.choice(answers)
        accepted_at = max(t, when) + rng.expovariate(1 / (6 * HOUR))
        run.push(
            accepted_at,
            _event(
                "forum.answer_accepted", helper, community, "discourse", channel, thread_id=thread
            ),
        )
        count += 1
    return count


def _number(run: _Run, c: int, repo: str) -> int:
    key = (c, repo)
    if key not in run.issue_numbers:
        run.issue_numbers[key] = run.rng.randint(100, 5000)
    run.issue_numbers[key] += 1
    return run.issue_numbers[key]


def _issue(run: _Run, c: int, pools: dict[str, _Pool], t: float) -> int:
    rng = run.rng
    opener = _pick(run, pools, "ask")
    if opener is None:
        return 1
    community = run.scenario.communities[c]
    repo = rng.choices(REPOSITORIES, _REPO_WEIGHTS)[0]
    thread = f"{repo}#{_number(run, c, repo)}"
    run.push(t, _event("github.issue_opened", opener, community, "github", repo, thread_id=thread))
    count = 1
    for _ in range(rng.choices((0, 1, 2, 3), (30, 35, 20, 15))[0]):
        t += rng.expovariate(1 / (10 * HOUR))
        who = _pick(run, pools, "review") or opener
        run.push(t, _event("github.comment", who, community, "github", repo, thread_id=thread))
        count += 1
    return count


def _pull_request(run: _Run, c: int, pools: dict[str, _Pool], t: float) -> int:
    """Opened, reviewed by others, commented, and most of the time merged."""
    rng = run.rng
    author = _pick(run, pools, "code")
    if author is None:
        return 1
    community = run.scenario.communities[c]
    repo = rng.choices(REPOSITORIES, _REPO_WEIGHTS)[0]
    thread = f"{repo}#{_number(run, c, repo)}"
    run.push(t, _event("github.pr_opened", author, community, "github", repo, thread_id=thread))
    count = 1
    reviews = 0
    for _ in range(rng.choices((0, 1, 2, 3), (20, 45, 25, 10))[0]):
        t += rng.expovariate(1 / (8 * HOUR))
        reviewer = _pick(run, pools, "review", author)
        if reviewer is None:
            continue
        state = rng.choices(("approved", "changes_requested", "commented"), (6, 2, 2))[0]
        run.push(
            t,
            _event(
                "github.review_submitted",
                reviewer,
                community,
                "github",
                repo,
                thread_id=thread,
                state=state,
            ),
        )
        reviews += 1
        count += 1
        if rng.random() < 0.4:
            t += rng.uniform(600, 4 * HOUR)
            run.push(
                t, _event("github.comment", author, community, "github", repo, thread_id=thread)
            )
            count += 1
    if rng.random() < (0.8 if reviews else 0.25):
        t += rng.expovariate(1 / (12 * HOUR))
        run.push(t, _event("github.pr_merged", author, community, "github", repo, thread_id=thread))
        count += 1
    return count


def _release(run: _Run, c: int, pools: dict[str, _Pool], t: float) -> int:
    maintainer = _pick(run, pools, "release")
    if maintainer is None:
        return 0
    rng = run.rng
    community = run.scenario.communities[c]
    package = f"{community}-{rng.choice(('core', 'cli', 'plugins'))}"
    minor, patch = run.versions.get((c, package), (rng.randint(0, 9), rng.randint(0, 5)))
    minor, patch = (minor + 1, 0) if rng.random() < 0.3 else (minor, patch + 1)
    run.versions[(c, package)] = (minor, patch)
    version = f"1.{minor}.{patch}"
    run.push(
        t,
        _event(
            "package.released",
            maintainer,
            community,
            "pypi",
            package,
            package=package,
            version=version,
        ),
    )
    return 1


def _conference(run: _Run, c: int, first_day: float, days: int) -> None:
    """Check-ins, session scans, volunteer shifts and feedback of a conference."""
    rng = run.rng
    scenario = run.scenario
    community = scenario.communities[c]
    name = f"{community}-{format_instant(first_day)[:4]}"
    end = first_day + days * DAY
    present = [m for m in run.members if m.active(first_day, end)]
    core = {m.name for m in run.members if m.persona == "maintainer"}
    attendees = [m for m in present if m.name in core or rng.random() < 0.25]
    last_day = first_day + (days - 1) * DAY
    for member in attendees:
        volunteer = rng.random() < (0.3 if member.persona in ("maintainer", "helper") else 0.06)
        shifts = rng.randint(1, 3) if volunteer else 0
        attended: list[float] = []
        for d in range(days):
            if d and rng.random() > 0.85:
                continue
            day = first_day + d * DAY
            t = day + 13 * HOUR + rng.uniform(0, 2.5 * HOUR)  # doors open 08:00 local (UTC-5)
            attended.append(t)
            run.push(t, _event("event.checkin", member, community, "conference", event=name))
            talks = rng.sample(range(1, 25), rng.randint(1, 4))
            for slot, talk in enumerate(sorted(talks)):
                at = day + (15 + slot * 1.5) * HOUR + rng.uniform(0, 1200)
                session = f"d{d + 1}-talk-{talk:02d}"
                run.push(
                    at,
                    _event(
                        "event.session_attended",
                        member,
                        community,
                        "conference",
                        event=name,
                        session=session,
                    ),
                )
            if shifts and rng.random() < 0.7:
                shifts -= 1
                half = rng.choice(("am", "pm"))
                role = rng.choice(("registration", "session-chair", "swag", "info-desk"))
                shift_end = day + (17 if half == "am" else 22) * HOUR
                run.push(
                    shift_end,
                    _event(
                        "event.volunteer_shift",
                        member,
                        community,
                        "conference",
                        event=name,
                        shift=f"{role}-d{d + 1}-{half}",
                        role=role,
                    ),
                )
        if attended and rng.random() < 0.45:
            at = max(last_day + 20 * HOUR, attended[-1]) + rng.uniform(0, 3 * DAY)
            rating = rng.choices(_RATINGS, _RATING_WEIGHTS)[0]
            run.push(
                at,
                _event(
                    "feedback.submitted", member, community, "conference", rating=rating, event=name
                ),
            )


def _malformed(event: dict[str, Any], kind: str, event_id: str) -> Malformed:
    bad = dict(event, event_id=event_id)
    if kind == "invalid_json":
        text = json.dumps(bad, separators=(",", ":"))
        return Malformed(text[: len(text) // 2], kind, event["member_id"])
    if kind == "not_an_object":
        return Malformed(json.dumps([event_id, event["type"]]), kind, event["member_id"])
    if kind == "unknown_type":
        bad["type"] = "chat.shout"
    elif kind == "missing_field":
        del bad["member_id"]
    elif kind == "bad_community":
        bad["community"] = event["community"].upper() + " Club"
    elif kind == "bad_timestamp":
        bad["occurred_at"] = event["occurred_at"].replace("T", " ").rstrip("Z")
    elif kind == "out_of_range":
        bad["type"] = "feedback.submitted"
        bad["attributes"] = {"rating": 7}
    else:  # unknown_field
        bad["user"] = event["member_id"]
    return Malformed(json.dumps(bad, separators=(",", ":")), kind, event["member_id"])


def simulate(scenario: Scenario) -> Iterator[dict[str, Any] | Malformed]:
    """Play ``scenario`` out and yield its lines in time order.

    Valid events are dicts of the activity contract with ``occurred_at`` in
    ``(now - days, now]``; about ``malformed_share`` of the lines are
    :class:`Malformed` ones that break one rule each. Same scenario, same lines.
    """
    rng = random.Random(scenario.seed)  # noqa: S311 - simulation, not security
    now = scenario.now
    start = now - scenario.days * DAY
    run = _Run(scenario, rng, start, _members(scenario, rng, start))
    n = len(scenario.communities)
    first_day, last_day = math.floor(start / DAY), math.floor(now / DAY)
    conference_days = min(3, scenario.days - 1)
    conference_start = first_day + min(int(scenario.days * 0.55), scenario.days - 3)
    has_conference = scenario.conference and conference_days >= 1 and scenario.days >= 3
    if has_conference:
        _conference(run, 0, conference_start * DAY, conference_days)
    # The conference is part of the requested volume; the rest is spread over the days.
    organic = max(0, scenario.events - len(run.pending))
    shares = [1 / math.sqrt(i + 1) for i in range(n)]
    per_day = organic / scenario.days / (sum(WEEKDAY_FACTOR) / 7)
    budgets = [per_day * s / sum(shares) for s in shares]
    hour_cums = []
    for c in range(n):
        shift = _HOUR_SHIFTS[c % len(_HOUR_SHIFTS)]
        weights = [_HOUR_WEIGHTS[(h - shift) % 24] for h in range(24)]
        hour_cums.append([sum(weights[: h + 1]) for h in range(24)])
    emitted = bad = 0
    actions = (_chat, _forum_thread, _issue, _pull_request)
    action_weights = (85, 6, 3, 6)
    for day_number in range(first_day, last_day + 1):
        day = day_number * DAY
        weekday = (day_number + 3) % 7  # 1970-01-01 was a Thursday
        in_conference = has_conference and 0 <= day_number - conference_start < conference_days
        for c in range(n):
            pools = _pools(run.members, c, day, day + DAY)
            factor = WEEKDAY_FACTOR[weekday]
            # Floods, cross-posts and releases below come out of the same budget.
            extras = 0.2 * factor * 17.5 + 0.35 * 3 + 0.15 * factor
            budget = (budgets[c] * factor - extras) * rng.uniform(0.85, 1.15)
            if in_conference and c == 0:
                budget *= 1.5

            def moment(c: int = c, day: float = day) -> float:
                hour = rng.choices(range(24), cum_weights=hour_cums[c])[0]
                return day + hour * HOUR + rng.uniform(0, HOUR)

            made = 0.0
            while made < budget:
                action = rng.choices(actions, action_weights)[0]
                made += action(run, c, pools, moment())
            if rng.random() < 0.2 * factor:
                _flood(run, c, pools, moment())
            if rng.random() < 0.35:
                _cross_post(run, c, pools, moment())
            if rng.random() < 0.15 * factor:
                _release(run, c, pools, moment())
        day_end = day + DAY
        while run.pending and run.pending[0][0] < day_end:
            at, _, event = heapq.heappop(run.pending)
            if not start + 0.001 < at <= now:
                continue
            event_id = f"{scenario.id_prefix}-{scenario.seed}-{emitted}"
            emitted += 1
            event = {"event_id": event_id, **event, "occurred_at": format_instant(at)}
            yield event
            if rng.random() < scenario.malformed_share:
                kind = MALFORMED_KINDS[bad % len(MALFORMED_KINDS)]
                yield _malformed(event, kind, f"{scenario.id_prefix}-{scenario.seed}-bad-{bad}")
                bad += 1
