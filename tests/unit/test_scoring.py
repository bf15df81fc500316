"""Points per type: the published defaults and operator overrides."""

from __future__ import annotations

import pytest

from streams.activity import ACTIVITY_TYPES
from streams.scoring import DEFAULT_POINTS, parse_points, scoring_table


def test_defaults_cover_every_type_with_the_published_points() -> None:
    assert set(DEFAULT_POINTS) == set(ACTIVITY_TYPES)
    assert dict(DEFAULT_POINTS) == {
        "chat.message": 1,
        "forum.post": 3,
        "forum.reply": 2,
        "forum.answer_accepted": 10,
        "github.issue_opened": 3,
        "github.comment": 1,
        "github.pr_opened": 5,
        "github.pr_merged": 15,
        "github.review_submitted": 8,
        "event.checkin": 2,
        "event.session_attended": 4,
        "event.volunteer_shift": 20,
        "feedback.submitted": 2,
        "package.released": 10,
    }


def test_override_changes_only_the_named_types() -> None:
    table = scoring_table(parse_points(" chat.message = 2 , forum.post=0,"))
    assert table["chat.message"] == 2
    assert table["forum.post"] == 0
    assert table["github.pr_merged"] == 15


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("chat.shout=1", "unknown activity type"),
        ("chat.message=-1", "between"),
        ("chat.message=1000001", "between"),
        ("chat.message=1.5", "integer"),
        ("chat.message", "type=points"),
    ],
)
def test_bad_overrides_are_explained(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        scoring_table(parse_points(text))
