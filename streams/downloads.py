"""PyPI download health: daily downloads per package, and the windows maintainers watch.

Two inputs, both files (there is no network at run time):

- the pypistats.org API's JSON: ``/api/packages/<name>/overall`` (daily downloads,
  ``{"data": [{"category": "without_mirrors", "date": "2026-11-30", "downloads": 812},
  ...], "package": "<name>", "type": "overall_downloads"}``; the ``without_mirrors``
  rows are used, ``with_mirrors`` only when a file has nothing else) and
  ``/api/packages/<name>/recent`` (``{"data": {"last_day": 1, "last_week": 7,
  "last_month": 30}, ...}``: three totals without dates, kept as reported);
- a CSV export of the public PyPI downloads data set (BigQuery), one row per day and
  project: ``date,project,downloads``.

A file is checked whole before anything is kept: the first broken line is reported with
its number. Days are UTC day numbers (days since 1970-01-01). The windows are judged at
the newest imported day of a package, never by a clock: an import gives the same
figures whenever it runs.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Final

# PEP 508 project names; compared in their PEP 503 normal form.
PROJECT_RE: Final = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,98}[A-Za-z0-9])?")
MAX_DOWNLOADS: Final = 10**13
WINDOWS: Final = {"1d": 1, "7d": 7, "30d": 30}


class DownloadsError(ValueError):
    """A downloads file that cannot be imported; the message says where and why."""


def normalize(name: str) -> str:
    """A project name's PEP 503 normal form (``Flask_SQLAlchemy`` -> ``flask-sqlalchemy``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def project(name: object, where: str) -> str:
    if not isinstance(name, str) or PROJECT_RE.fullmatch(name) is None:
        raise DownloadsError(f"{where}: {str(name)[:80]!r} is not a PyPI project name")
    return normalize(name)


def day_number(text: object, where: str) -> int:
    if not isinstance(text, str):
        raise DownloadsError(f"{where}: the date must be a string YYYY-MM-DD")
    try:
        return date.fromisoformat(text.strip()).toordinal() - date(1970, 1, 1).toordinal()
    except ValueError:
        raise DownloadsError(f"{where}: {text[:40]!r} is not a date (YYYY-MM-DD)") from None


def day_text(day: int) -> str:
    return date.fromordinal(day + date(1970, 1, 1).toordinal()).isoformat()


def count(value: object, where: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_DOWNLOADS:
        raise DownloadsError(f"{where}: downloads must be a whole number >= 0, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Imported:
    """What one file holds: per project, downloads by day; per project, the totals a
    ``recent`` document reported."""

    daily: Mapping[str, Mapping[int, int]]
    recent: Mapping[str, Mapping[str, int]]


def parse_pypistats(text: str, path: str) -> Imported:
    """One pypistats.org ``overall`` or ``recent`` JSON document."""
    try:
        document: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DownloadsError(f"{path}:{exc.lineno}: not JSON: {exc.msg}") from None
    if not isinstance(document, dict) or "data" not in document:
        raise DownloadsError(f"{path}: not a pypistats.org API document (no 'data')")
    name = project(document.get("package"), f"{path}: package")
    kind = document.get("type")
    data = document["data"]
    if kind == "recent_downloads" or isinstance(data, dict):
        if not isinstance(data, dict):
            raise DownloadsError(f"{path}: 'data' of a recent_downloads document is an object")
        totals = {}
        for key in ("last_day", "last_week", "last_month"):
            if key not in data:
                raise DownloadsError(f"{path}: data.{key} is missing")
            totals[key] = count(data[key], f"{path}: data.{key}")
        return Imported({}, {name: totals})
    if kind not in (None, "overall_downloads") or not isinstance(data, list):
        raise DownloadsError(f"{path}: expected an overall_downloads or recent_downloads document")
    by_category: dict[str, dict[int, int]] = {}
    for index, row in enumerate(data):
        where = f"{path}: data[{index}]"
        if not isinstance(row, dict):
            raise DownloadsError(f"{where}: expected an object")
        category = row.get("category")
        if category not in ("with_mirrors", "without_mirrors"):
            raise DownloadsError(f"{where}: unknown category {str(category)[:40]!r}")
        day = day_number(row.get("date"), f"{where}.date")
        days = by_category.setdefault(category, {})
        if day in days:
            raise DownloadsError(f"{where}: a second {category} row for {day_text(day)}")
        days[day] = count(row.get("downloads"), f"{where}.downloads")
    chosen = by_category.get("without_mirrors") or by_category.get("with_mirrors") or {}
    return Imported({name: chosen}, {})


def parse_bigquery_csv(text: str, path: str) -> Imported:
    """A CSV export with the columns date, project, downloads (any order, a header)."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise DownloadsError(f"{path}: empty file") from None
    except csv.Error as exc:
        raise DownloadsError(f"{path}:1: {exc}") from None
    missing = [c for c in ("date", "project", "downloads") if c not in header]
    if missing:
        raise DownloadsError(
            f"{path}:1: the header needs the columns date, project, downloads "
            f"(missing {', '.join(missing)})"
        )
    at = {name: header.index(name) for name in ("date", "project", "downloads")}
    daily: dict[str, dict[int, int]] = {}
    seen: dict[tuple[str, int], int] = {}
    try:
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            where = f"{path}:{line}"
            if len(row) != len(header):
                raise DownloadsError(f"{where}: {len(row)} fields, the header has {len(header)}")
            name = project(row[at["project"]].strip(), f"{where}: project")
            day = day_number(row[at["date"]], f"{where}: date")
            if (first := seen.get((name, day))) is not None:
                raise DownloadsError(
                    f"{where}: a second row for {name} on {day_text(day)} (first at line {first})"
                )
            seen[(name, day)] = line
            daily.setdefault(name, {})[day] = count(row[at["downloads"]], f"{where}: downloads")
    except csv.Error as exc:
        raise DownloadsError(f"{path}:{reader.line_num}: {exc}") from None
    return Imported(daily, {})


def parse(text: str, path: str) -> Imported:
    """A pypistats.org JSON document or a BigQuery CSV export, told apart by content."""
    if text.lstrip().startswith(("{", "[")):
        return parse_pypistats(text, path)
    return parse_bigquery_csv(text, path)


@dataclass(frozen=True, slots=True)
class Health:
    """A package's download windows at its newest imported day."""

    newest_day: int
    windows: Mapping[str, int]  # "1d", "7d", "30d"
    # The last 7 days over the 7 before them, minus 1 (+0.25: 25% more); None when the
    # week before had no downloads or is not imported.
    week_over_week: float | None


def health(daily: Mapping[int, int]) -> Health | None:
    """The windows of one package's daily downloads; None when there are none. A day
    that is not imported counts as 0 within a window; the week before must be covered
    by at least one imported day for the week-over-week change."""
    if not daily:
        return None
    newest = max(daily)

    def total(first: int, last: int) -> int:
        return sum(daily.get(d, 0) for d in range(first, last + 1))

    windows = {name: total(newest - span + 1, newest) for name, span in WINDOWS.items()}
    before = total(newest - 13, newest - 7)
    covered = any(newest - 13 <= d <= newest - 7 for d in daily)
    change = windows["7d"] / before - 1 if covered and before else None
    return Health(newest, windows, change)
