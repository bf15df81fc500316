"""PyPI JSON API payloads to ``package.released`` events.

Reads ``https://pypi.org/pypi/<project>/json`` (every version under ``releases``) or
``https://pypi.org/pypi/<project>/<version>/json`` (one version, files under ``urls``):
``info.name``, ``info.version``, ``info.maintainer``/``info.author`` and, per file,
``upload_time_iso_8601`` (or ``upload_time``, which PyPI gives in UTC) and ``yanked``.

A version counts once, at its first upload, for the configured maintainer (else the
project's ``maintainer`` or ``author`` field). Versions without files, versions whose
every file is yanked, and versions uploaded before ``since`` are skipped with a reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from streams.sources.normalized import (
    MALFORMED,
    Normalized,
    Outcome,
    Skipped,
    activity,
    epoch,
    event_id,
    obj,
    text,
    timestamp,
)

SOURCE: Final = "pypi"
_NAME_RUN: Final = re.compile(r"[-_.]+")


@dataclass(frozen=True)
class PyPIConfig:
    """Who gets the credit, in which community, and from when on."""

    community: str
    member_id: str | None = None
    since: float | None = None
    source: str = SOURCE


def canonical_name(name: str) -> str:
    """PEP 503 normalized project name: ``Flask_SQLAlchemy`` -> ``flask-sqlalchemy``."""
    return _NAME_RUN.sub("-", name).lower()


def _first_upload(files: list[Any]) -> str | None | Skipped:
    live = [f for f in files if isinstance(f, dict) and f.get("yanked") is not True]
    if not live:
        return Skipped("yanked", "every file of the version is yanked")
    stamps = []
    for item in live:
        stamp = timestamp(item.get("upload_time_iso_8601"))
        if stamp is None and isinstance(item.get("upload_time"), str):
            stamp = timestamp(item["upload_time"] + "Z")  # PyPI's naive times are UTC
        if stamp is not None:
            stamps.append(stamp)
    return min(stamps, key=epoch) if stamps else None


def normalize_pypi(payload: object, config: PyPIConfig) -> list[Outcome]:
    """One project payload to one outcome per version."""
    try:
        return _normalize(payload, config)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        return [Skipped(MALFORMED, f"{type(exc).__name__} while reading the payload", True)]


def _normalize(payload: object, config: PyPIConfig) -> list[Outcome]:
    info = obj(payload, "info")
    name = text(info, "name")
    if info is None or name is None:
        return [Skipped("not_a_project", "no info.name: not a PyPI JSON API payload", True)]
    member = config.member_id or text(info, "maintainer") or text(info, "author")
    if member is None:
        return [Skipped("no_maintainer", f"{name[:64]}: no maintainer or author configured")]
    releases = obj(payload, "releases")
    versions: dict[str, Any]
    if releases is not None:
        versions = releases
    else:
        version = text(info, "version")
        urls = payload.get("urls") if isinstance(payload, dict) else None
        if version is None or not isinstance(urls, list):
            return [Skipped("no_releases", f"{name[:64]}: neither releases nor urls", True)]
        versions = {version: urls}
    project = canonical_name(name)
    outcomes: list[Outcome] = []
    for version, files in versions.items():
        if not isinstance(files, list) or not files:
            outcomes.append(Skipped("no_files", f"{project} {version[:32]}"))
            continue
        first_upload = _first_upload(files)
        if isinstance(first_upload, Skipped):
            outcomes.append(first_upload)
            continue
        if first_upload is None:
            outcomes.append(Skipped("no_timestamp", f"{project} {version[:32]}", True))
            continue
        if config.since is not None and epoch(first_upload) < config.since:
            outcomes.append(Skipped("before_since", f"{project} {version[:32]}"))
            continue
        outcomes.append(
            Normalized(
                (
                    activity(
                        event_id=event_id("pypi", project, version),
                        type="package.released",
                        member_id=member[:128],
                        community=config.community,
                        source=config.source,
                        channel=project[:128],
                        occurred_at=first_upload,
                        attributes={"package": project, "version": version[:64]},
                    ),
                )
            )
        )
    return outcomes
