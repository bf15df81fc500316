"""A seeded generator of believable community activity, for demos, tests and benchmarks.

Member activity is skewed (a few regulars do most of the talking), types follow what a
Python community actually does (far more chat than merged PRs), and every event gets a
unique, deterministic ``event_id`` so a replay of the same seed is a true redelivery.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
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
