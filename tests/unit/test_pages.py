"""The pages' pure parts: quantiles from Redis histograms, badge criteria in words, the
SVG art, the HTML renderers with hostile data, the credential, the site settings."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from agents.settings import ConfigError, Settings, load_profiles
from agents.web import pages
from agents.web.art import badge_svg, calendar, initials, sparkline, tier_colours
from agents.web.credential import open_badge
from streams.badges import criteria, default_catalog, load_catalog
from streams.queries import histogram_quantile

CATALOG = {b.id: b for b in default_catalog()}
HOSTILE = '<script>alert("x")</script>\'&'


@pytest.mark.parametrize(
    ("fields", "q", "expected"),
    [
        ([{}], 0.5, None),
        ([{"le:60": "10"}], 0.5, 30.0),
        ([{"le:60": "10", "le:300": "10"}], 0.5, 60.0),
        ([{"le:60": "10", "le:300": "10"}], 0.75, 180.0),
        # Two histograms add up: forum and GitHub together.
        ([{"le:60": "5"}, {"le:60": "5", "le:300": "10"}], 0.75, 180.0),
        # Above the last bound: the last finite bound, as Prometheus does.
        ([{"le:60": "1", "le:+Inf": "9"}], 0.9, 60.0),
        ([{"sum": "100", "le:60": "0", "le:300": "4"}], 0.5, 180.0),
    ],
)
def test_histogram_quantile(fields: list[dict[str, str]], q: float, expected: float | None) -> None:
    assert histogram_quantile(fields, q) == expected


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        (
            'when = [{ kind = "first", type = "github.pr_merged" }]',
            ["A first one of github.pr_merged events."],
        ),
        (
            'tiers = { bronze = 5, gold = 50 }\nwhen = [{ kind = "count", type = "forum.reply" }]',
            ["At least 5 (bronze) / 50 (gold) forum.reply events."],
        ),
        (
            'when = [{ kind = "streak", at_least = 7, channel = "help" }]',
            ["Active on at least 7 consecutive UTC days (events of any type in channel help)."],
        ),
        (
            'when = [{ kind = "distinct_days", type = "chat.message", at_least = 5 }]',
            ["Active on at least 5 distinct UTC days (chat.message events)."],
        ),
        (
            'when = [{ kind = "count", type = "event.session_attended", same = "attributes.event",'
            " at_least = 3 }]",
            ["At least 3 event.session_attended events with the same event."],
        ),
        (
            'when = [{ kind = "first", type = "chat.message", from = "2027-05-14T00:00:00Z",'
            ' until = "2027-05-17T00:00:00Z" }]',
            [
                "A first one of chat.message events, between 2027-05-14T00:00:00.000Z and "
                "2027-05-17T00:00:00.000Z."
            ],
        ),
    ],
)
def test_criteria_say_how_to_earn_a_badge(toml: str, expected: list[str]) -> None:
    (badge,) = load_catalog(f'[badges.b]\nname = "B"\ndescription = "d"\n{toml}\n')
    assert criteria(badge) == expected


def test_badge_images_are_deterministic_per_badge_and_tier() -> None:
    helper = CATALOG["helper"]
    gold = badge_svg(helper, "gold")
    assert gold == badge_svg(helper, "gold")
    assert gold != badge_svg(helper, "silver")
    assert gold != badge_svg(CATALOG["reviewer"], "gold")
    assert tier_colours("gold")[0] in gold
    assert gold.count("<circle") == 3  # gold: three dots
    # An unknown tier still gets a colour of its own, the same every time.
    assert tier_colours("diamond") == tier_colours("diamond") != tier_colours("ruby")
    assert initials("Event crew") == "EC"
    assert initials("first-merge") == "FM"


def test_badge_image_text_is_escaped() -> None:
    name = json.dumps(HOSTILE)  # a JSON string is a TOML basic string
    (badge,) = load_catalog(
        f'[badges.x]\nname = {name}\ndescription = "d"\n'
        'when = [{ kind = "first", type = "chat.message" }]\n'
    )
    svg = badge_svg(badge, None)
    assert "<script" not in svg
    assert "&lt;script&gt;" in svg


def test_sparkline_draws_gaps_and_handles_no_data() -> None:
    assert "no data" in sparkline([None, None], "x")
    line = sparkline([1, 2, None, 3, 4], "events")
    assert line.count("<polyline") == 2
    single = sparkline([1, None, 5, None, 2], "lonely")
    assert single.count("<circle") == 3
    flat = sparkline([7, 7, 7], "flat")
    assert "nan" not in flat.lower()


def test_calendar_fills_the_active_days_of_the_year() -> None:
    last = 20_000  # a Monday? weekday = (20000 + 3) % 7
    svg = calendar({last, last - 1, last - 400}, last)
    assert svg.count('class="on"') == 2  # the day 400 days back is off the year
    assert 'aria-label="2 active days in the last 53 weeks"' in svg
    # No square after the last day.
    assert svg.count("<rect") == 52 * 7 + (last + 3) % 7 + 1


def _member(member_id: str) -> dict[str, Any]:
    return {
        "member_id": member_id,
        "community": "c",
        "windows": {"1h": 1, "24h": 2, "7d": 3, "30d": 4},
        "totals": {"points": 1234, "events": 9, "by_type": {"chat.message": 9}},
        "first_seen": "2026-11-01T10:00:00.000Z",
        "last_seen": "2026-11-30T10:00:00.000Z",
        "active_days": 2,
        "ranks": {"day": None, "week": 3, "month": 3, "all": 1200},
        "badges": [],
        "segment": "intermediate",
        "segment_score_30d": 10,
        "newcomer": False,
    }


def test_a_profile_escapes_hostile_ids_everywhere() -> None:
    award = {
        "award_id": "a" * 32,
        "member_id": HOSTILE,
        "badge": "helper",
        "tier": "gold",
        "awarded_at": "2026-11-30T10:00:00.000Z",
    }
    html = pages.profile(
        pages.Profile("c", HOSTILE, _member(HOSTILE), [award], {20000}, CATALOG, 20000 * 86400.0)
    )
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#x27;&amp;" in html
    assert "<bdi>&lt;script&gt;" in html
    assert "#1,200" in html
    assert "1,234 points" in html
    assert 'href="/c/c/awards/' + "a" * 32 + '"' in html
    assert 'src="/c/c/badges/helper.gold.svg"' in html


def test_links_percent_encode_ids_with_slashes_and_quotes() -> None:
    link = pages.member_link("c", 'a/b"?#')
    assert 'href="/c/c/members/a%2Fb%22%3F%23"' in link
    board = {"entries": [{"rank": 1, "member_id": "x<y", "score": 5}]}
    assert "x&lt;y" in pages.leaderboard_table("c", board)


def test_the_error_page_escapes_its_message() -> None:
    html = pages.error(404, f"no member {HOSTILE!r}")
    assert "<h1>404 · Not found</h1>" in html
    assert "<script>" not in html


def test_every_page_links_only_local_assets() -> None:
    html = pages.error(400, "x")
    for url in re.findall(r'(?:href|src)="([^"]+)"', html):
        assert url.startswith("/"), url


def test_an_open_badge_credential() -> None:
    award = {
        "award_id": "f" * 32,
        "member_id": "alice",
        "badge": "helper",
        "tier": "silver",
        "awarded_at": "2026-11-30T10:00:00.000Z",
        "evidence": ["evt-9"],
    }
    issuer = {"community": "c", "id": "https://x.org/c/c", "name": "C", "url": None}
    vc = open_badge("https://x.org", issuer, award, CATALOG["helper"])
    assert vc["id"] == "https://x.org/c/c/awards/" + "f" * 32
    assert vc["issuer"] == {"id": "https://x.org/c/c", "type": ["Profile"], "name": "C"}
    assert vc["validFrom"] == award["awarded_at"]
    achievement = vc["credentialSubject"]["achievement"]
    assert achievement["id"] == "https://x.org/c/c/badges/helper#silver"
    assert achievement["image"]["id"] == "https://x.org/c/c/badges/helper.silver.svg"
    assert achievement["name"] == "Helper (silver)"
    assert vc["evidence"] == [
        {
            "type": ["Evidence"],
            "name": "Event that completed the badge",
            "description": "event_id evt-9",
        }
    ]


def test_community_profiles_file(tmp_path: Path) -> None:
    path = tmp_path / "communities.toml"
    path.write_text('[pycon-us]\nname = "PyCon US"\nurl = "https://us.pycon.org/"\n[other]\n')
    settings = Settings.from_env(
        {"PULSE_COMMUNITIES_FILE": str(path), "PULSE_PUBLIC_URL": "https://p.example.org/"}
    )
    assert settings.profiles["pycon-us"].name == "PyCon US"
    assert settings.profiles["other"].name == "other"
    assert settings.public_url == "https://p.example.org"
    assert settings.public()["web"]["communities"]["pycon-us"]["url"] == "https://us.pycon.org/"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[Bad]\n", "not a community name"),
        ('[c]\nname = ""\n', "name must be"),
        ('[c]\nurl = "ftp://x"\n', "url must be"),
        ('[c]\ncolour = "red"\n', "unknown key 'colour'"),
        ("[c\n", "not valid TOML"),
    ],
)
def test_bad_community_profiles_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_profiles(text)


def test_a_bad_public_url_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PULSE_PUBLIC_URL must be an http"):
        Settings.from_env({"PULSE_PUBLIC_URL": "pulse.example.org"})
    with pytest.raises(ConfigError, match="PULSE_COMMUNITIES_FILE: cannot read"):
        Settings.from_env({"PULSE_COMMUNITIES_FILE": str(tmp_path / "missing.toml")})
