"""``pulse import pypi-downloads`` and ``pulse packages``: PyPI download health in Redis.

The packages of each community are configured with ``PULSE_PYPI_PACKAGES``
(``project=community,...``). An import reads every file (or fetches every configured
package from a pypistats.org-compatible API with ``--from-url``), checks it all, and
only then writes: per community one MULTI/EXEC that replaces the imported days (an
imported day is set, not added, so importing a file twice changes nothing). The
worker's ``/metrics`` and ``pulse packages`` read the figures back
(:meth:`agents.store.Reader.package_health`).
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import orjson
import redis

from agents.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_SERVICE, EXIT_USAGE, CliError
from agents.settings import Settings
from agents.store import Reader, connect
from streams.downloads import DownloadsError, Imported, day_text, parse
from streams.keys import KeyLayout

FETCH_TIMEOUT_SECONDS = 10.0
MAX_FILE_BYTES = 64 * 1024 * 1024


def _read(path: str) -> str:
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror or exc}", EXIT_USAGE) from None
    if len(data) > MAX_FILE_BYTES:
        raise CliError(f"{path}: larger than {MAX_FILE_BYTES // 2**20} MB", EXIT_BAD_INPUT)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CliError(f"{path}: not UTF-8 (byte {exc.start})", EXIT_BAD_INPUT) from None


def _fetch(base: str, project: str) -> list[tuple[str, str]]:
    """The ``overall`` and ``recent`` documents of ``project`` from ``base``."""
    out = []
    for endpoint in ("overall", "recent"):
        url = f"{base.rstrip('/')}/api/packages/{urllib.parse.quote(project)}/{endpoint}"
        # http(s) only: import_downloads checked the scheme of ``base``.
        request = urllib.request.Request(url, headers={"User-Agent": "community-pulse"})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_SECONDS) as response:  # noqa: S310
                text = response.read(MAX_FILE_BYTES + 1).decode("utf-8")
        except urllib.error.HTTPError as exc:
            raise CliError(f"{url}: HTTP {exc.code} {exc.reason}", EXIT_SERVICE) from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"{url}: {reason}", EXIT_SERVICE) from None
        except UnicodeDecodeError:
            raise CliError(f"{url}: the answer is not UTF-8", EXIT_SERVICE) from None
        out.append((url, text))
    return out


def _merge(parts: Sequence[Imported]) -> Imported:
    daily: dict[str, dict[int, int]] = {}
    recent: dict[str, dict[str, int]] = {}
    for part in parts:
        for project, days in part.daily.items():
            daily.setdefault(project, {}).update(days)
        for project, totals in part.recent.items():
            recent[project] = dict(totals)
    return Imported(daily, recent)


def import_downloads(args: argparse.Namespace, settings: Settings) -> int:
    """``pulse import pypi-downloads FILE... | --from-url URL``."""
    configured = settings.pypi_packages
    if not configured:
        raise CliError(
            "no packages configured: set PULSE_PYPI_PACKAGES=project=community,... first",
            EXIT_USAGE,
        )
    documents: list[tuple[str, str]] = []
    if args.from_url:
        if urllib.parse.urlsplit(args.from_url).scheme not in ("http", "https"):
            raise CliError("--from-url must be an http(s) URL", EXIT_USAGE)
        if args.file:
            raise CliError("give files or --from-url, not both", EXIT_USAGE)
        for project in sorted(configured):
            documents += _fetch(args.from_url, project)
    elif not args.file:
        raise CliError("pypi-downloads needs FILE(s) or --from-url URL", EXIT_USAGE)
    else:
        documents = [(path, _read(path)) for path in args.file]
    parts = []
    for where, text in documents:
        try:
            parts.append(parse(text, where))
        except DownloadsError as exc:
            print(f"{exc}; nothing imported", file=sys.stderr)
            return EXIT_BAD_INPUT
    imported = _merge(parts)
    unknown = sorted((set(imported.daily) | set(imported.recent)) - set(configured))
    if unknown:
        print(
            f"{', '.join(unknown)}: not in PULSE_PYPI_PACKAGES (project=community,...); "
            "nothing imported",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    days = sum(len(d) for d in imported.daily.values())
    projects = sorted(set(imported.daily) | set(imported.recent))
    if args.dry_run:
        print(f"would import {days} day(s) of {len(projects)} package(s): {', '.join(projects)}")
        return EXIT_OK
    by_community: dict[str, list[str]] = {}
    for project in projects:
        by_community.setdefault(configured[project], []).append(project)
    client = connect(settings.redis_url.reveal())
    try:
        for community, names in sorted(by_community.items()):
            layout = KeyLayout(settings.redis_key_prefix, community)
            # One community's keys share a slot: one atomic write each.
            pipe = client.pipeline(transaction=True)
            for project in names:
                if days_of := imported.daily.get(project):
                    pipe.hset(
                        layout.package_daily(project),
                        mapping={str(d): n for d, n in sorted(days_of.items())},
                    )
                if totals := imported.recent.get(project):
                    pipe.hset(
                        layout.package_recent(project),
                        mapping={k: str(v) for k, v in totals.items()},
                    )
            pipe.execute()
    except redis.RedisError as exc:
        raise CliError(f"Redis: {exc}", EXIT_SERVICE) from None
    print(f"imported {days} day(s) of {len(projects)} package(s): {', '.join(projects)}")
    return EXIT_OK


def cmd_packages(args: argparse.Namespace, settings: Settings) -> int:
    """``pulse packages``: each configured package's download windows."""
    packages = settings.pypi_packages
    if args.community:
        packages = {p: c for p, c in packages.items() if c in set(args.community)}
    reader = Reader(connect(settings.redis_url.reveal()), settings.redis_key_prefix)
    try:
        rows = reader.package_health(packages)
    except redis.RedisError as exc:
        raise CliError(f"Redis: {exc}", EXIT_SERVICE) from None
    if args.json:
        body = [
            {
                "community": community,
                "package": project,
                "newest_day": day_text(h.newest_day) if h else None,
                "downloads": dict(h.windows) if h else None,
                "week_over_week": h.week_over_week if h else None,
                "pypistats_recent": recent or None,
            }
            for community, project, h, recent in rows
        ]
        sys.stdout.buffer.write(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")
        return EXIT_OK
    if not rows:
        print("no packages configured (PULSE_PYPI_PACKAGES=project=community,...)")
        return EXIT_OK
    print(
        f"{'community':<16} {'package':<24} {'as of':<10} "
        f"{'1d':>10} {'7d':>11} {'30d':>12} {'week/week':>9}"
    )
    for community, project, h, _ in rows:
        if h is None:
            print(f"{community:<16} {project:<24} {'no data':<10}")
            continue
        change = f"{h.week_over_week:+.1%}" if h.week_over_week is not None else "-"
        w = h.windows
        print(
            f"{community:<16} {project:<24} {day_text(h.newest_day):<10} "
            f"{w['1d']:>10,} {w['7d']:>11,} {w['30d']:>12,} {change:>9}"
        )
    return EXIT_OK
