"""``pulse ingest``, ``pulse import`` and ``pulse simulate``: activity from platform
exports (or from the simulator) normalized, checked against the contract and published.

Each input record goes through its platform's normalizer (``streams.sources``); every
event that comes out is validated with ``parse_activity`` before anything is sent. A
record that is irrelevant (a bot, a ping, a closed-but-not-merged pull request) is
counted as skipped; a broken one (not JSON, a missing field, a rating of 7) is reported
with its line number, and, as with ``pulse produce``, nothing is published while there
are broken records unless ``--skip-invalid`` is given.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from agents.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_SERVICE, EXIT_USAGE, BadLine, CliError
from agents.settings import Settings
from streams import queries
from streams.activity import SOURCE_RE, InvalidActivity, parse_activity
from streams.simulation import Malformed, Scenario, community_names, simulate
from streams.sources import conference, discord, discourse, feedback, github, pypi
from streams.sources.normalized import (
    Outcome,
    Skipped,
    Tally,
    table_rows,
)

MAX_REPORTED = 50
Message = tuple[bytes | None, bytes, list[tuple[str, bytes]]]


# A record that could not be used, and where it was: the same report as `pulse validate`.
Problem = BadLine


@dataclass
class Normalization:
    """What a file became: valid events, counts by type and reason, broken records."""

    events: list[dict[str, Any]] = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)
    problems: list[Problem] = field(default_factory=list)

    def add(self, line: int, outcome: Outcome, now: float, skew: float) -> None:
        if isinstance(outcome, Skipped):
            self.tally.add(outcome)
            if outcome.malformed:
                self.problems.append(Problem(line, outcome.reason, None, outcome.detail))
            return
        for event in outcome.events:
            try:
                parse_activity(event, now=now, max_future_skew=skew)
            except InvalidActivity as exc:
                self.tally.malformed[f"invalid_event.{exc.reason}"] += 1
                self.problems.append(Problem(line, exc.reason, exc.field, exc.detail))
            else:
                self.tally.events[event["type"]] += 1
                self.events.append(event)


# --- reading ---------------------------------------------------------------------------


def _open(path: str) -> BinaryIO:
    if path == "-":
        return sys.stdin.buffer
    try:
        return Path(path).open("rb")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", EXIT_USAGE) from None


def read_json_records(path: str) -> Iterator[tuple[int, object | Problem]]:
    """(line, record) from a JSON document (an array is one record per item) or JSON lines.

    Unreadable lines come out as :class:`Problem` values, never as exceptions.
    """
    with _open(path) as handle:
        data = handle.read()
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        document = None
    else:
        if isinstance(document, list):
            yield from ((n, item) for n, item in enumerate(document, start=1))
        else:
            yield 1, document
        return
    for number, raw_line in enumerate(data.splitlines(), start=1):
        raw = raw_line.strip()
        if not raw:
            continue
        try:
            yield number, orjson.loads(raw)
        except orjson.JSONDecodeError:
            yield number, Problem(number, "invalid_json", None, "not valid UTF-8 JSON")


def read_table(path: str) -> Iterator[tuple[int, dict[str, str] | Problem]]:
    """(line, row) of a CSV export with a header line."""
    with _open(path) as handle:
        data = handle.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        yield exc.start, Problem(0, "invalid_utf8", None, f"byte {exc.start} is not UTF-8")
        return
    try:
        yield from table_rows(text.splitlines(keepends=True))
    except Exception as exc:  # noqa: BLE001 - csv.Error and its kin; the file is bad
        yield 0, Problem(0, "invalid_csv", None, str(exc)[:200])


def parse_timezone(name: str | None) -> tzinfo | None:
    """``Europe/Berlin``, ``UTC`` or a fixed offset such as ``-04:00``."""
    if name is None:
        return None
    if name.upper() in ("UTC", "Z"):
        return UTC
    if match := re.fullmatch(r"([+-])(\d{2}):?(\d{2})", name):
        sign = -1 if match[1] == "-" else 1
        return timezone(sign * timedelta(hours=int(match[2]), minutes=int(match[3])))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CliError(f"unknown time zone {name!r}", EXIT_USAGE) from None


def _source(args: argparse.Namespace, default: str) -> str:
    source = args.source or default
    if SOURCE_RE.fullmatch(source) is None:
        raise CliError("--source must be 1..32 characters of [a-z0-9._-]", EXIT_USAGE)
    return str(source)


def _communities(mapping: Any, fallback: str | None) -> dict[str, str]:
    merged = dict(mapping)
    if fallback is not None:
        merged["*"] = queries.community(fallback)
    return merged


# --- normalizing -----------------------------------------------------------------------


def github_config(settings: Settings, fallback: str | None = None) -> github.GitHubConfig:
    return github.GitHubConfig(
        communities=_communities(settings.github_communities, fallback),
        member_id=settings.github_member_id,
        releases=settings.github_releases,
    )


def discourse_config(settings: Settings, fallback: str | None = None) -> discourse.DiscourseConfig:
    return discourse.DiscourseConfig(
        communities=_communities(settings.discourse_communities, fallback)
    )


def _github(record: object, config: github.GitHubConfig) -> Outcome:
    delivery = github.unwrap_delivery(record)
    if delivery is not None:
        event, payload, delivery_id = delivery
        return github.normalize_github(event, payload, config, delivery_id)
    event_name = github.guess_event(record)
    if event_name is None:
        return Skipped("unknown_payload", "neither a delivery nor a known webhook payload", True)
    return github.normalize_github(event_name, record, config)


def _discourse(
    record: object, config: discourse.DiscourseConfig, instance: str | None, now: float
) -> Outcome:
    delivery = discourse.unwrap_delivery(record)
    if delivery is not None:
        event, payload, record_instance, received = delivery
        return discourse.normalize_discourse(
            event, payload, config, instance=record_instance or instance, received_at=received
        )
    if isinstance(record, dict) and "post" in record:  # a bare post_created body
        return discourse.normalize_discourse(
            "post_created", record, config, instance=instance, received_at=now
        )
    return Skipped("unknown_payload", "neither a delivery nor a post payload", True)


def normalize_file(args: argparse.Namespace, settings: Settings, now: float) -> Normalization:
    """Normalize the file of ``pulse ingest PLATFORM FILE``."""
    result = Normalization()
    skew = settings.max_future_skew
    platform = args.platform
    if platform == "github":
        gh = github_config(settings, args.community)
        gh = github.GitHubConfig(
            gh.communities, gh.member_id, gh.releases, _source(args, github.SOURCE)
        )

        def outcome(record: object) -> list[Outcome]:
            return [_github(record, gh)]

    elif platform == "discord":
        dc = discord.DiscordConfig(
            _communities(settings.discord_communities, args.community),
            settings.discord_channels,
            _source(args, discord.SOURCE),
        )

        def outcome(record: object) -> list[Outcome]:
            return [discord.normalize_discord(record, dc)]

    elif platform == "discourse":
        dsc = discourse.DiscourseConfig(
            _communities(settings.discourse_communities, args.community),
            _source(args, discourse.SOURCE),
        )

        def outcome(record: object) -> list[Outcome]:
            return [_discourse(record, dsc, args.instance, now)]

    else:  # pypi
        if args.community is None:
            raise CliError("pypi needs --community", EXIT_USAGE)
        since = queries.instant(args.since, now) if args.since else None
        py = pypi.PyPIConfig(
            queries.community(args.community), args.member, since, _source(args, pypi.SOURCE)
        )

        def outcome(record: object) -> list[Outcome]:
            return pypi.normalize_pypi(record, py)

    for line, record in read_json_records(args.file):
        if isinstance(record, Problem):
            result.tally.malformed[record.reason] += 1
            result.problems.append(record)
            continue
        for item in outcome(record):
            result.add(line, item, now, skew)
    return result


def normalize_table(args: argparse.Namespace, settings: Settings, now: float) -> Normalization:
    """Normalize the file of ``pulse import checkins|volunteers|feedback FILE``."""
    result = Normalization()
    skew = settings.max_future_skew
    default_source = "survey" if args.kind == "feedback" else conference.SOURCE
    config = conference.ConferenceConfig(
        community=queries.community(args.community) if args.community else None,
        event=args.event,
        timezone=parse_timezone(args.timezone),
        source=_source(args, default_source),
    )
    rows: Iterable[tuple[int, object]]
    if args.kind == "feedback" and not args.file.lower().endswith(".csv"):
        rows = _survey_records(args.file)
    else:
        rows = read_table(args.file)
    normalize: Callable[[Any, conference.ConferenceConfig], Outcome] = {
        "checkins": conference.normalize_scan,
        "volunteers": conference.normalize_shift,
        "feedback": feedback.normalize_feedback,
    }[args.kind]
    for line, row in rows:
        if isinstance(row, Problem):
            result.tally.malformed[row.reason] += 1
            result.problems.append(row)
            continue
        if not isinstance(row, dict):
            outcome: Outcome = Skipped("not_an_object", "a record must be an object", True)
        else:
            outcome = normalize(row, config)
        result.add(line, outcome, now, skew)
    return result


def _survey_records(path: str) -> Iterator[tuple[int, object]]:
    records = list(read_json_records(path))
    if len(records) == 1 and not isinstance(records[0][1], Problem):
        answers = feedback.survey_records(records[0][1])
        if answers is not None:
            yield from enumerate(answers, start=1)
            return
    yield from records


# --- publishing ------------------------------------------------------------------------


def quiet_kafka(settings: Settings) -> None:
    """kafka-python narrates every connection at INFO; a CLI shows only its problems."""
    if settings.log_level != "DEBUG":
        # Never below what main() chose (CRITICAL for one-shot commands).
        logger = logging.getLogger("kafka")
        logger.setLevel(max(logging.WARNING, logger.level))


def publish(
    settings: Settings,
    topic: str,
    messages: Iterable[Message],
    rate: float | None = None,
    total: int | None = None,
) -> int:
    """Send every message to ``topic`` and return once the broker acknowledged them all
    (progress on a terminal: ``total`` messages, when known)."""
    from agents.kafka_io import KafkaError, ensure_topics, make_producer
    from agents.progress import Progress

    if topic == settings.dlq_topic:
        raise CliError(f"refusing to publish activity to the dead-letter topic {topic}", EXIT_USAGE)
    quiet_kafka(settings)
    failures: list[BaseException] = []
    sent = 0
    try:
        ensure_topics(settings, extra=[topic])
        producer = make_producer(settings)
        started = time.monotonic()
        with Progress(f"publishing to {topic}", total, unit="messages") as progress:
            for key, value, headers in messages:
                if rate:
                    delay = started + sent / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                future = producer.send(topic, key=key, value=value, headers=headers or None)
                future.add_errback(failures.append)
                sent += 1
                progress.advance()
            producer.flush(timeout=60)
        producer.close()
    except KafkaError as exc:
        raise CliError(
            f"Kafka at {','.join(settings.kafka_bootstrap_servers)}: {exc}", EXIT_SERVICE
        ) from None
    if failures:
        raise CliError(
            f"Kafka did not take {len(failures)} of {sent} messages: {failures[0]}", EXIT_SERVICE
        )
    return sent


def _finish(args: argparse.Namespace, settings: Settings, result: Normalization, topic: str) -> int:
    for problem in result.problems[:MAX_REPORTED]:
        print(problem.describe(args.file), file=sys.stderr)
    if len(result.problems) > MAX_REPORTED:
        print(f"... and {len(result.problems) - MAX_REPORTED} more", file=sys.stderr)
    print(f"{args.file}: {result.tally.summary()}", file=sys.stderr)
    if result.problems and not args.skip_invalid:
        print(
            f"{args.file}: {len(result.problems)} broken record(s); nothing published "
            "(fix them, or pass --skip-invalid to publish the rest)",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    if args.dry_run:
        out = sys.stdout.buffer
        for event in result.events:
            out.write(orjson.dumps(event) + b"\n")
        out.flush()
        return EXIT_OK
    sent = publish(
        settings,
        topic,
        ((e["member_id"].encode(), orjson.dumps(e), []) for e in result.events),
        total=len(result.events),
    )
    print(f"published {sent} events to {topic}")
    return EXIT_OK


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    """``pulse ingest github|discord|discourse|pypi FILE``."""
    result = normalize_file(args, settings, time.time())
    return _finish(args, settings, result, args.topic or settings.ingest_topic(args.platform))


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    """``pulse import checkins|volunteers|feedback FILE``."""
    result = normalize_table(args, settings, time.time())
    platform = "feedback" if args.kind == "feedback" else "conference"
    return _finish(args, settings, result, args.topic or settings.ingest_topic(platform))


# --- simulate --------------------------------------------------------------------------


def scenario_from(args: argparse.Namespace, now: float) -> Scenario:
    spec = str(args.communities).strip()
    if spec.isdigit():
        if not 1 <= int(spec) <= 1000:
            raise CliError("--communities must be 1..1000", EXIT_USAGE)
        names = community_names(int(spec))
    else:
        names = tuple(queries.community(c.strip()) for c in spec.split(",") if c.strip())
    try:
        return Scenario(
            now=queries.instant(args.now, now),
            communities=names,
            members=args.members,
            days=args.days,
            events=args.events,
            seed=args.seed,
            malformed_share=args.malformed,
            id_prefix=args.id_prefix,
            conference=not args.no_conference,
        )
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    """``pulse simulate``: a believable community, to a file or to Kafka."""
    if args.rate is not None and args.rate <= 0:
        raise CliError("--rate must be positive", EXIT_USAGE)
    scenario = scenario_from(args, time.time())
    kinds: Counter[str] = Counter()
    broken: Counter[str] = Counter()

    def messages() -> Iterator[Message]:
        for line in simulate(scenario):
            if isinstance(line, Malformed):
                broken[line.kind] += 1
                key = line.member_id.encode() if line.member_id else None
                yield key, line.line.encode(), []
            else:
                kinds[line["type"]] += 1
                yield line["member_id"].encode(), orjson.dumps(line), []

    if args.out is not None:
        where = args.out
        handle = sys.stdout.buffer if args.out == "-" else _create(args.out)
        try:
            for _, value, _ in messages():
                handle.write(value + b"\n")
        finally:
            if handle is not sys.stdout.buffer:
                handle.close()
            else:
                handle.flush()
    else:
        where = args.topic or settings.activity_topics[0]
        publish(settings, where, messages(), rate=args.rate, total=scenario.events)
    valid = sum(kinds.values())
    detail = ", ".join(f"{k}={v}" for k, v in sorted(kinds.items()))
    print(
        f"simulate: {valid} valid events ({detail}) and {sum(broken.values())} malformed "
        f"lines to {where}",
        file=sys.stderr,
    )
    return EXIT_OK


def _create(path: str) -> BinaryIO:
    try:
        return Path(path).open("wb")
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}", EXIT_USAGE) from None
