"""The Redis key layout: one hash slot per community, hostile ids cannot escape."""

from __future__ import annotations

import re

import pytest

from streams.keys import KeyLayout, escape

HOSTILE = [
    "a:b",
    "*",
    "{other}",
    "}{",
    "x\ny",
    "a b",
    "%41",
    "A",
    "ａ",
    "a\u200bb",
    "../../etc",
    "member:days",
    "x" * 10_000,
    "",
    "é",
    "é",
]


def hash_tag(key: str) -> str:
    match = re.search(r"\{([^}]*)\}", key)
    assert match is not None
    return match.group(1)


def test_every_key_of_a_community_shares_its_hash_tag() -> None:
    layout = KeyLayout("pulse", "pycon-us")
    keys = [
        layout.counts(),
        layout.offsets(),
        layout.segment_due(),
        layout.burst("f" * 32),
        layout.leaderboard("week", "2026-W48"),
        layout.leaderboard("all", "all", "general"),
        layout.window("min", 1),
        layout.member("alice"),
        layout.member_days("alice"),
    ]
    for member in HOSTILE:
        keys += [
            layout.member(member),
            layout.member_days(member),
            layout.member_badges(member),
            layout.thread("forum", member),
            layout.leaderboard("week", "2026-W48", member),
        ]
    assert {hash_tag(k) for k in keys} == {"pycon-us"}


def test_escaping_is_injective_over_hostile_ids() -> None:
    assert len({escape(v) for v in HOSTILE}) == len(set(HOSTILE))
    for value in HOSTILE:
        assert re.fullmatch(r"[A-Za-z0-9_.~%-]*", escape(value))


def test_member_keys_never_collide_with_other_members_keys() -> None:
    layout = KeyLayout("pulse", "c")
    names = ["alice", "alice:days", "alice%3Adays", "alice:x"]
    keys = [layout.member(n) for n in names] + [layout.member_days(n) for n in names]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("prefix", ["", "a{b}", "a:b", "p" * 33, "sp ace"])
def test_prefix_is_validated(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        KeyLayout(prefix, "c")


@pytest.mark.parametrize("member", ["alice", "a:b", "{x}", "m" * 128, "ünï"])
def test_a_members_event_id_keys_extend_its_profile_key(member: str) -> None:
    # agents/load_members.lua reads a member's dedupe memory by these names.
    layout = KeyLayout("pulse", "pycon-us")
    assert layout.member_ids(member, 20_424) == layout.member(member) + ":ids:20424"
