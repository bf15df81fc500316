"""PyPI download files and windows (streams/downloads.py), as tables of cases."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from streams.downloads import DownloadsError, day_number, health, normalize, parse

D = day_number("2026-11-30", "t")


def overall(rows: list[dict[str, Any]], package: str = "Flask_SQLAlchemy") -> str:
    return json.dumps({"data": rows, "package": package, "type": "overall_downloads"})


def row(day: str, downloads: Any, category: str = "without_mirrors") -> dict[str, Any]:
    return {"category": category, "date": day, "downloads": downloads}


def test_day_numbers_count_from_1970() -> None:
    assert day_number("1970-01-02", "t") == 1
    midnight = datetime(2026, 11, 30, tzinfo=UTC).timestamp()
    assert midnight == D * 86400


@pytest.mark.parametrize(
    ("name", "normal"),
    [("Flask_SQLAlchemy", "flask-sqlalchemy"), ("zope.interface", "zope-interface"), ("a", "a")],
)
def test_project_names_take_their_pep_503_form(name: str, normal: str) -> None:
    assert normalize(name) == normal


def test_overall_uses_the_without_mirrors_rows() -> None:
    text = overall(
        [
            row("2026-11-29", 10, "with_mirrors"),
            row("2026-11-29", 7),
            row("2026-11-30", 9),
            row("2026-11-30", 12, "with_mirrors"),
        ]
    )
    assert parse(text, "f.json").daily == {"flask-sqlalchemy": {D - 1: 7, D: 9}}


def test_overall_with_only_mirror_rows_uses_them() -> None:
    assert parse(overall([row("2026-11-30", 12, "with_mirrors")]), "f").daily == {
        "flask-sqlalchemy": {D: 12}
    }


def test_recent_keeps_the_three_totals() -> None:
    text = json.dumps(
        {
            "data": {"last_day": 5, "last_week": 40, "last_month": 170},
            "package": "requests",
            "type": "recent_downloads",
        }
    )
    got = parse(text, "r.json")
    assert got.daily == {}
    assert got.recent == {"requests": {"last_day": 5, "last_week": 40, "last_month": 170}}


def test_bigquery_csv_rows_in_any_column_order() -> None:
    text = (
        "downloads,date,project\n12,2026-11-30,Requests\n3,2026-11-29,requests\n"
        "\n5,2026-11-30,flask\n"
    )
    assert parse(text, "q.csv").daily == {
        "requests": {D: 12, D - 1: 3},
        "flask": {D: 5},
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "f:1: not JSON"),
        ('{"package": "x"}', "f: not a pypistats.org API document"),
        (overall([row("2026-11-30", 1)], package="bad name!"), "is not a PyPI project name"),
        (overall([row("2026-13-30", 1)]), "data[0].date: '2026-13-30' is not a date"),
        (overall([row("2026-11-30", -1)]), "data[0].downloads: downloads must be a whole number"),
        (overall([row("2026-11-30", 1.5)]), "must be a whole number"),
        (overall([row("2026-11-30", True)]), "must be a whole number"),
        (overall([row("2026-11-30", 1, "mirrors")]), "data[0]: unknown category 'mirrors'"),
        (overall([row("2026-11-30", 1), row("2026-11-30", 2)]), "data[1]: a second"),
        (
            json.dumps({"data": {"last_day": 1}, "package": "x", "type": "recent_downloads"}),
            "data.last_week is missing",
        ),
        ("", "f: empty file"),
        ("date,project\n2026-11-30,x\n", "f:1: the header needs the columns"),
        ("date,project,downloads\n2026-11-30,x,1\n2026-11-31,x,2\n", "f:3: date: '2026-11-31'"),
        ("date,project,downloads\n2026-11-30,x,1,9\n", "f:2: 4 fields, the header has 3"),
        ("date,project,downloads\n2026-11-30,x,ten\n", "f:2: downloads: downloads must be"),
        (
            "date,project,downloads\n2026-11-30,X,1\n2026-11-30,x,2\n",
            "f:3: a second row for x on 2026-11-30 (first at line 2)",
        ),
        ("date,project,downloads\n2026-11-30,<script>,1\n", "f:2: project: '<script>' is not"),
    ],
)
def test_broken_files_name_the_line_and_the_problem(text: str, message: str) -> None:
    with pytest.raises(DownloadsError) as caught:
        parse(text, "f")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("daily", "windows", "change"),
    [
        ({D: 5}, {"1d": 5, "7d": 5, "30d": 5}, None),
        # 14 days of 10, then the newest week doubled.
        (
            {**{D - i: 10 for i in range(7, 14)}, **{D - i: 20 for i in range(7)}},
            {"1d": 20, "7d": 140, "30d": 210},
            1.0,
        ),
        # A missing day counts 0; the window ends at the newest imported day.
        ({D: 7, D - 2: 3, D - 40: 100}, {"1d": 7, "7d": 10, "30d": 10}, None),
        # A week before with downloads: -50%.
        ({D: 5, D - 7: 10}, {"1d": 5, "7d": 5, "30d": 15}, -0.5),
        # A week before imported with 0 downloads: no ratio.
        ({D: 5, D - 8: 0}, {"1d": 5, "7d": 5, "30d": 5}, None),
    ],
)
def test_windows_at_the_newest_day(
    daily: dict[int, int], windows: dict[str, int], change: float | None
) -> None:
    got = health(daily)
    assert got is not None
    assert got.newest_day == max(daily)
    assert dict(got.windows) == windows
    assert got.week_over_week == (pytest.approx(change) if change is not None else None)


def test_no_days_no_health() -> None:
    assert health({}) is None
