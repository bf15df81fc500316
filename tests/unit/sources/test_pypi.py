"""PyPI JSON API payloads: one release per version, at its first upload."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streams.sources.normalized import Skipped
from streams.sources.pypi import PyPIConfig, canonical_name, normalize_pypi
from tests.unit.sources.conftest import events_of

CONFIG = PyPIConfig(community="pycon-us")
Load = Callable[[str], Any]


def reasons(outcomes: list[Any]) -> list[str]:
    return [o.reason for o in outcomes if isinstance(o, Skipped)]


def test_each_version_is_released_once_at_its_first_upload(payload: Load) -> None:
    outcomes = normalize_pypi(payload("pypi_project.json"), CONFIG)
    events = events_of(outcomes)
    assert [(e["attributes"]["version"], e["occurred_at"]) for e in events] == [
        ("24.1.0", "2025-03-11T10:17:40.103377Z"),
        ("24.2.0", "2025-11-20T16:45:01Z"),  # only upload_time: read as UTC
    ]
    assert {e["member_id"] for e in events} == {"hynek"}
    assert {e["channel"] for e in events} == {"structlog-extras"}
    assert events[0]["event_id"] == "pypi-structlog-extras-24.1.0"
    assert events[0]["source"] == "pypi"
    assert reasons(outcomes) == ["yanked", "no_files"]


def test_configured_member_and_since(payload: Load) -> None:
    config = PyPIConfig(community="pycon-us", member_id="hynek-s", since=1756684800.0)
    outcomes = normalize_pypi(payload("pypi_project.json"), config)
    [event] = events_of(outcomes)
    assert event["member_id"] == "hynek-s"
    assert event["attributes"]["version"] == "24.2.0"
    assert "before_since" in reasons(outcomes)


def test_single_version_payload(payload: Load) -> None:
    project = payload("pypi_project.json")
    single = {"info": project["info"], "urls": project["releases"]["24.2.0"]}
    [event] = events_of(normalize_pypi(single, CONFIG))
    assert event["attributes"]["version"] == "24.2.0"


def test_no_maintainer_and_broken_payloads_are_skipped(payload: Load) -> None:
    project = payload("pypi_project.json")
    project["info"]["maintainer"] = ""
    assert reasons(normalize_pypi(project, CONFIG)) == ["no_maintainer"]
    for broken in (None, [], {"info": {}}, {"info": {"name": "x", "maintainer": "m"}}):
        [outcome] = normalize_pypi(broken, CONFIG)
        assert isinstance(outcome, Skipped)
        assert outcome.malformed


def test_canonical_names() -> None:
    assert canonical_name("Flask_SQLAlchemy") == "flask-sqlalchemy"
    assert canonical_name("zope.interface") == "zope-interface"
