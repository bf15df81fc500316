"""``pulse``: the command line of community-pulse.

Exit codes: 0 success, 1 a service (Kafka, Redis) failed, 2 bad usage or configuration,
3 bad input data (``validate``/``produce`` found invalid lines).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Final

import orjson

from agents.settings import ConfigError, Settings
from streams import queries
from streams.activity import Activity, InvalidActivity
from streams.periods import format_instant
from streams.queries import BadQuery, LeaderboardQuery
from streams.simulation import DEFAULT_COMMUNITIES, generate

EXIT_OK, EXIT_SERVICE, EXIT_USAGE, EXIT_BAD_INPUT = 0, 1, 2, 3

DESCRIPTION = """\
community-pulse: a real-time engagement engine for online communities.

Consumes member activity (chat, forum, GitHub, conference check-ins, PyPI releases)
from Kafka, keeps live leaderboards and rolling engagement windows in Redis, and
exports community-health metrics to Prometheus.

Configuration comes from PULSE_* environment variables; `pulse config` shows the
effective values (secrets masked)."""

EPILOG = """\
examples:
  pulse worker                                   run the stream processor
  pulse generate --count 1000 > events.jsonl     make sample activity
  pulse validate events.jsonl                    check a file against the contract
  pulse produce events.jsonl                     publish it (key = member_id)
  pulse leaderboard --community pycon-us --period week
  pulse member member-00001 --community pycon-us --json
  pulse web                                      pages on http://127.0.0.1:6070/c/pycon-us
"""


class CliError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class BadLine:
    line: int
    reason: str
    field: str | None
    detail: str

    def describe(self, path: str) -> str:
        where = f" [{self.field}]" if self.field else ""
        return f"{path}:{self.line}: {self.reason}{where}: {self.detail}"


def _open(path: str) -> BinaryIO:
    if path == "-":
        return sys.stdin.buffer
    try:
        return Path(path).open("rb")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", EXIT_USAGE) from None


def scan_jsonl(
    path: str, now: float, max_future_skew: float, max_bytes: int
) -> Iterator[tuple[int, bytes, Activity | None, BadLine | None]]:
    """Yield (line number, raw bytes, activity, problem) for each non-blank line.

    The checks are the worker's (``agents.processor.check_message``): a line passes
    here exactly when the worker would not dead-letter it.
    """
    from agents.processor import check_message

    with _open(path) as handle:
        for number, raw_line in enumerate(handle, start=1):
            raw = raw_line.strip()
            if not raw:
                continue
            checked = check_message(raw, now, max_future_skew, max_bytes)
            if isinstance(checked, InvalidActivity):
                problem = BadLine(number, checked.reason, checked.field, checked.detail)
                yield number, raw, None, problem
            else:
                yield number, raw, checked, None


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    good = 0
    bad: list[BadLine] = []
    for _, _, _, problem in scan_jsonl(
        args.file, time.time(), settings.max_future_skew, settings.max_message_bytes
    ):
        if problem is None:
            good += 1
        else:
            bad.append(problem)
            print(problem.describe(args.file), file=sys.stderr)
    print(f"{args.file}: {good} valid, {len(bad)} invalid")
    return EXIT_BAD_INPUT if bad else EXIT_OK


def cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    now = time.time()
    scanned = list(scan_jsonl(args.file, now, settings.max_future_skew, settings.max_message_bytes))
    bad = [p for _, _, _, p in scanned if p is not None]
    for problem in bad:
        print(problem.describe(args.file), file=sys.stderr)
    if bad and not args.skip_invalid:
        print(
            f"{args.file}: {len(bad)} invalid line(s); nothing published "
            "(fix them, or pass --skip-invalid to publish the valid ones)",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    from agents.kafka_io import KafkaError, ensure_topics, make_producer
    from agents.progress import Progress

    topic = args.topic or settings.activity_topics[0]
    try:
        ensure_topics(settings, extra=[topic])
        producer = make_producer(settings)
        futures = []
        total = len(scanned) - len(bad)
        with Progress(f"publishing to {topic}", total, unit="events") as progress:
            for _, raw, activity, _ in scanned:
                if activity is not None:
                    futures.append(producer.send(topic, key=activity.member_id.encode(), value=raw))
                    progress.advance()
            producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=30)
        producer.close()
    except KafkaError as exc:
        raise CliError(
            f"Kafka at {','.join(settings.kafka_bootstrap_servers)}: {exc}", EXIT_SERVICE
        ) from None
    skipped = f", {len(bad)} invalid skipped" if bad else ""
    print(f"published {len(futures)} events to {topic}{skipped}")
    return EXIT_OK


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    out = sys.stdout.buffer
    communities = tuple(c.strip() for c in args.communities.split(",") if c.strip())
    for community in communities:
        queries.community(community)
    for event in generate(
        args.count,
        now=time.time(),
        seed=args.seed,
        span_seconds=int(args.span_days * 86400),
        communities=communities,
        members=args.members,
    ):
        out.write(orjson.dumps(event) + b"\n")
    out.flush()
    return EXIT_OK


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    public = settings.public()
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(public, option=orjson.OPT_INDENT_2) + b"\n")
        return EXIT_OK
    for section, values in public.items():
        print(f"{section}: {orjson.dumps(values).decode()}")
    return EXIT_OK


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from agents.kafka_io import KafkaError, ensure_topics

    try:
        created = ensure_topics(settings)
    except KafkaError as exc:
        raise CliError(
            f"Kafka at {','.join(settings.kafka_bootstrap_servers)}: {exc}", EXIT_SERVICE
        ) from None
    outputs = (settings.awards_topic, settings.segments_topic, settings.moderation_topic)
    for topic in (*settings.activity_topics, settings.dlq_topic, *outputs):
        state = "created" if topic in created else "exists"
        print(f"{topic}\t{state}")
    return EXIT_OK


class _SaslRefusals(logging.Handler):
    """Notices kafka-python logging a refused SASL login (it retries, then times out).

    A broker answers a wrong password with an error response or, as often, by closing
    the connection in the middle of the exchange; kafka-python then only logs "socket
    disconnected". Both are remembered so the caller can say what most likely happened.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.refused = False
        self.dropped = False

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.refused = self.refused or "SaslAuthenticationFailed" in message
        self.dropped = self.dropped or "socket disconnected" in message


def _check_kafka(settings: Settings) -> None:
    """Reach the brokers within seconds, or exit 1 saying why (refused SASL login or not)."""
    from kafka import KafkaAdminClient

    from agents.kafka_io import KafkaError, client_options

    where = ",".join(settings.kafka_bootstrap_servers)
    check = (
        "check PULSE_KAFKA_SASL_USERNAME, PULSE_KAFKA_SASL_PASSWORD and PULSE_KAFKA_SASL_MECHANISM"
    )
    refusals = _SaslRefusals()
    logger = logging.getLogger("kafka")
    logger.addHandler(refusals)
    try:
        KafkaAdminClient(**client_options(settings)).close()
    except KafkaError as exc:
        if refusals.refused:
            raise CliError(
                f"Kafka at {where} refused the SASL credentials ({check})", EXIT_SERVICE
            ) from None
        if refusals.dropped and settings.kafka_security_protocol.startswith("SASL_"):
            raise CliError(
                f"Kafka at {where} refused the SASL credentials ({check}): it closed "
                "every connection during the login",
                EXIT_SERVICE,
            ) from None
        raise CliError(f"Kafka at {where}: {exc}", EXIT_SERVICE) from None
    finally:
        logger.removeHandler(refusals)


def ensure_port_free(host: str, port: int, variable: str) -> None:
    """One clear line instead of the web server's traceback when the port is taken."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CliError(
                f"cannot listen on {host}:{port} ({exc.strerror}); is another worker or "
                f"server running? Choose another port with {variable}",
                EXIT_SERVICE,
            ) from None


def tune_gc() -> None:
    """Keep Python's cyclic garbage collector off the hot path (worker and rebuild).

    The worker holds up to ``PULSE_STATE_CACHE_MEMBERS`` member states and creates
    thousands of short-lived objects per batch; with the default thresholds (a young
    collection every 700 allocations) it collected about 2,300 times per 100,000 events,
    1.6 to 1.8 s in all, and a full collection, which walks every cached state, paused
    it for up to 200 ms. Objects alive after start-up are frozen out of collection, and
    young collections run every 50,000 allocations: 9 collections, 0.12 to 0.15 s,
    16 ms at worst (docs/performance.md). Member states hold no reference cycles, so
    reference counting frees them anyway.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def service_worker(app: Any, log_level: str) -> Any:
    """The Faust worker that runs ``app``, without Faust's terminal spinner.

    At WARNING and above the spinner sets the root logger to DEBUG for good (it turns
    once per log record), so every debug call of aiokafka, Faust and mode builds a
    record that no handler prints: about 2 % of the worker's time at 6,000 events/s.
    """
    from faust import Worker

    worker = Worker(app, loglevel=log_level, quiet=True)
    worker.spinner = None
    return worker


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from agents.app import create_app
    from agents.kafka_io import KafkaError, ensure_topics

    ensure_port_free(settings.web_bind, settings.web_port, "PULSE_WEB_PORT")
    # kafka-python logs its whole configuration, SASL password included, at DEBUG.
    logging.getLogger("kafka").setLevel(max(logging.INFO, logging.getLogger().level))
    _check_kafka(settings)
    try:
        ensure_topics(settings)
    except KafkaError as exc:
        raise CliError(
            f"Kafka at {','.join(settings.kafka_bootstrap_servers)}: {exc}", EXIT_SERVICE
        ) from None
    from agents.store import connect

    # Refused credentials or no Redis at all: say so and exit 1 now, instead of a worker
    # that retries its first batch forever.
    connect(settings.redis_url.reveal()).ping()
    app = create_app(settings)
    worker = service_worker(app, settings.log_level)
    tune_gc()
    worker.execute_from_commandline()
    return EXIT_OK


def cmd_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from agents.rebuild import run

    tune_gc()
    return run(args, settings)


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from agents.ingest import cmd_ingest as run

    return run(args, settings)


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    if args.kind == "pypi-downloads":
        from agents.downloads import import_downloads

        return import_downloads(args, settings)
    if args.from_url:
        raise CliError("--from-url is for pypi-downloads only", EXIT_USAGE)
    if len(args.file) != 1:
        raise CliError(f"import {args.kind} takes one FILE (or - for stdin)", EXIT_USAGE)
    args.file = args.file[0]
    from agents.ingest import cmd_import as run

    return run(args, settings)


def cmd_announce(args: argparse.Namespace, settings: Settings) -> int:
    from agents.announce import cmd_announce as run

    return run(args, settings)


def cmd_packages(args: argparse.Namespace, settings: Settings) -> int:
    from agents.downloads import cmd_packages as run

    return run(args, settings)


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from agents.ingest import cmd_simulate as run

    return run(args, settings)


def cmd_ingest_server(args: argparse.Namespace, settings: Settings) -> int:
    from agents.ingest_server import run

    return run(settings, args.bind, args.port)


def cmd_web(args: argparse.Namespace, settings: Settings) -> int:
    from agents.web.server import run

    return run(args, settings)


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    from agents.dlq import run

    return run(args, settings)


def _reader(settings: Settings) -> Any:
    from agents.store import Reader, connect

    return Reader(
        connect(settings.redis_url.reveal()), settings.redis_key_prefix, settings.segments
    )


def _print_json(value: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")


def _print_entries(entries: list[dict[str, Any]], mark: str | None = None) -> None:
    if not entries:
        print("  (no entries)")
        return
    width = max(len(e["member_id"]) for e in entries)
    print(f"  {'rank':>4}  {'member':<{width}}  {'points':>8}")
    for e in entries:
        flag = "  <" if e["member_id"] == mark else ""
        print(f"  {e['rank']:>4}  {e['member_id']:<{width}}  {e['score']:>8}{flag}")


def cmd_leaderboard(args: argparse.Namespace, settings: Settings) -> int:
    q = LeaderboardQuery.parse(
        args.community, args.period, args.at, args.top, args.channel, time.time()
    )
    body = _reader(settings).leaderboard(q.community, q.period, q.at, q.top, q.channel)
    if args.json:
        _print_json(body)
        return EXIT_OK
    channel = f" #{q.channel}" if q.channel else ""
    bucket = "all time" if q.period == "all" else f"{q.period} {body['bucket']}"
    print(f"{q.community}{channel} leaderboard, {bucket}")
    _print_entries(body["entries"])
    return EXIT_OK


def cmd_member(args: argparse.Namespace, settings: Settings) -> int:
    community = queries.community(args.community)
    member = queries.member_id(args.member_id)
    at = queries.instant(args.at, time.time())
    body = _reader(settings).member(community, member, at)
    if body is None:
        raise CliError(f"no member {member!r} in community {community!r}", EXIT_BAD_INPUT)
    if args.json:
        _print_json(body)
        return EXIT_OK
    totals = body["totals"]
    print(f"{member} in {community} (at {body['at']})")
    print(
        f"  points {totals['points']} from {totals['events']} events, "
        f"{body['active_days']} active days"
    )
    print(f"  first seen {body['first_seen']}, last seen {body['last_seen']}")
    print("  windows " + ", ".join(f"{k}={v}" for k, v in body["windows"].items()))
    print(
        "  ranks   "
        + ", ".join(f"{k}={v if v is not None else '-'}" for k, v in body["ranks"].items())
    )
    print("  by type " + ", ".join(f"{k}={v}" for k, v in totals["by_type"].items()))
    newcomer = ", newcomer" if body["newcomer"] else ""
    print(f"  segment {body['segment']} (30-day score {body['segment_score_30d']}){newcomer}")
    badges = [b["badge"] + (f" {b['tier']}" if b["tier"] else "") for b in body["badges"]]
    print("  badges  " + (", ".join(badges) if badges else "none yet"))
    return EXIT_OK


def cmd_around(args: argparse.Namespace, settings: Settings) -> int:
    community = queries.community(args.community)
    period = queries.period(args.period)
    member = queries.member_id(args.member_id)
    n = queries.bounded_int(args.n, "--n", 5, 1, queries.MAX_AROUND)
    at = queries.instant(args.at, time.time())
    body = _reader(settings).around(community, member, period, at, n)
    if body is None:
        raise CliError(
            f"{member!r} has no {period} score in community {community!r}", EXIT_BAD_INPUT
        )
    if args.json:
        _print_json(body)
        return EXIT_OK
    bucket = "all time" if period == "all" else f"{period} {body['bucket']}"
    print(f"{community} leaderboard, {bucket}: {member} is #{body['rank']}")
    _print_entries(body["entries"], mark=member)
    return EXIT_OK


def cmd_badges(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "backtest":
        if not args.file:
            raise CliError("backtest needs a JSON-lines FILE", EXIT_USAGE)
        return backtest(args.file, settings, args.json)
    catalog = [badge.public() for badge in settings.catalog]
    if args.json:
        _print_json({"file": settings.badges_file, "badges": catalog})
        return EXIT_OK
    print(f"badge catalog: {settings.badges_file or 'built-in default'}")
    for badge in catalog:
        tiers = ", ".join(f"{t['tier']} {t['at_least']}" for t in badge["tiers"] if t["tier"])
        print(f"  {badge['badge']:<20} {badge['name']}{f' ({tiers})' if tiers else ''}")
        print(f"  {'':<20} {badge['description']}")
    return EXIT_OK


def backtest(path: str, settings: Settings, as_json: bool) -> int:
    """Evaluate the catalog over a file with the worker's evaluator: no Kafka, no Redis."""
    from streams.policy import Retention
    from streams.replay import Replay

    now = time.time()
    keep = Retention(
        day_seconds=10**10, week_seconds=10**10, month_seconds=10**10, window_seconds=10**10
    )
    history = Replay(replace(settings.policy, retention=keep), settings.redis_key_prefix)
    from agents.progress import Progress

    valid = invalid = 0
    # The worker's checks, so a line the worker would dead-letter (an oversized one
    # too) is skipped here as invalid.
    with Progress("backtest", unit="lines") as progress:
        for _, _, activity, _ in scan_jsonl(
            path, now, settings.max_future_skew, settings.max_message_bytes
        ):
            progress.advance()
            if activity is None:
                invalid += 1
                continue
            history.feed((activity,))
            valid += 1
    awards = sorted(
        (
            {
                "community": community,
                "member_id": record["member_id"],
                "badge": record["badge"],
                "tier": record["tier"] or None,
                "awarded_at": format_instant(int(record["at_ms"]) / 1000),
                "evidence": [record["evidence"]],
                "award_id": identity,
            }
            for community, identity, record in history.awards()
        ),
        key=lambda a: (a["awarded_at"], a["community"], a["award_id"]),
    )
    totals: dict[str, int] = {}
    for award in awards:
        name = str(award["badge"]) + (f" {award['tier']}" if award["tier"] else "")
        totals[name] = totals.get(name, 0) + 1
    if as_json:
        _print_json(
            {
                "events": valid,
                "invalid": invalid,
                "awards": len(awards),
                "by_badge": totals,
                "list": awards,
            }
        )
        return EXIT_OK
    print(f"{path}: {valid} events ({invalid} invalid skipped) would award {len(awards)} badges")
    for name, count in sorted(totals.items()):
        print(f"  {name:<28} {count:>6}")
    for award in awards[:50]:
        tier = f" {award['tier']}" if award["tier"] else ""
        print(
            f"  {award['awarded_at']}  {award['community']}/{award['member_id']}: "
            f"{award['badge']}{tier}"
        )
    if len(awards) > 50:
        print(f"  ... and {len(awards) - 50} more (--json lists all)")
    return EXIT_OK


def cmd_awards(args: argparse.Namespace, settings: Settings) -> int:
    community = queries.community(args.community)
    member = queries.member_id(args.member) if args.member else None
    limit = queries.bounded_int(args.limit, "--limit", 100, 1, 100_000)
    awards = _reader(settings).awards(community, member, limit)
    if args.json:
        _print_json({"community": community, "member_id": member, "awards": awards})
        return EXIT_OK
    if not awards:
        print(f"no awards in {community}" + (f" for {member}" if member else ""))
    for award in awards:
        tier = f" {award['tier']}" if award["tier"] else ""
        state = "" if award["published"] else "  (not yet published)"
        print(f"{award['awarded_at']}  {award['member_id']}: {award['badge']}{tier}{state}")
    return EXIT_OK


def cmd_counts(args: argparse.Namespace, settings: Settings) -> int:
    communities = [queries.community(c) for c in args.community]
    reader = _reader(settings)
    body = {c: reader.community_counts(c) for c in communities}
    if args.json:
        _print_json(body)
        return EXIT_OK
    kinds = sorted({kind for counts in body.values() for kind in counts})
    width = max([len(c) for c in communities] + [8])
    print(f"{'type':<24}" + "".join(f"{c:>{width + 2}}" for c in communities))
    for kind in kinds:
        print(f"{kind:<24}" + "".join(f"{body[c].get(kind, 0):>{width + 2}}" for c in communities))
    print(f"{'total':<24}" + "".join(f"{sum(body[c].values()):>{width + 2}}" for c in communities))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pulse",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(
        name: str, handler: Callable[[argparse.Namespace, Settings], int], help_text: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    add("worker", cmd_worker, "run the stream processor (Faust worker, web and /metrics)")

    p = add(
        "web",
        cmd_web,
        "serve the pages (leaderboards, profiles, badges, the wall) and the JSON API "
        "from Redis alone, apart from the workers",
    )
    p.add_argument("--bind", help="address to listen on (default: PULSE_WEB_BIND, 127.0.0.1)")
    p.add_argument("--port", type=int, default=6070, help="port to listen on (default 6070)")

    p = add("produce", cmd_produce, "validate a JSON-lines file and publish it to Kafka")
    p.add_argument("file", help="JSON-lines file of activity events, or - for stdin")
    p.add_argument("--topic", help="topic to publish to (default: the first input topic)")
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="publish the valid lines even when some are invalid (and report them)",
    )

    p = add("validate", cmd_validate, "check a JSON-lines file against the activity contract")
    p.add_argument("file", help="JSON-lines file, or - for stdin")

    p = add("generate", cmd_generate, "write realistic sample activity as JSON lines to stdout")
    p.add_argument("--count", type=int, default=1000, help="number of events (default 1000)")
    p.add_argument("--seed", type=int, default=7, help="random seed; same seed, same events")
    p.add_argument("--members", type=int, default=200, help="members per run (default 200)")
    p.add_argument(
        "--span-days",
        type=float,
        default=7.0,
        help="spread occurred_at over the last N days (default 7)",
    )
    p.add_argument(
        "--communities",
        default=",".join(DEFAULT_COMMUNITIES),
        help="comma-separated community names",
    )

    p = add("config", cmd_config, "print the effective configuration (secrets masked)")
    p.add_argument("--json", action="store_true", help="print JSON")

    add("topics", cmd_topics, "create the input and dead-letter topics when missing")

    p = add("leaderboard", cmd_leaderboard, "show a community leaderboard")
    p.add_argument("--community", required=True)
    p.add_argument("--period", required=True, choices=("day", "week", "month", "all"))
    p.add_argument("--at", help="a day (YYYY-MM-DD) or RFC 3339 time; default now")
    p.add_argument("--channel", help="the leaderboard of one channel (week and all)")
    p.add_argument("--top", default=10, help="number of entries (default 10, max 1000)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("member", cmd_member, "show one member: windows, totals, ranks")
    p.add_argument("member_id")
    p.add_argument("--community", required=True)
    p.add_argument("--at", help="evaluate windows and ranks at this time; default now")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("around", cmd_around, "show a member with the n members above and below")
    p.add_argument("member_id")
    p.add_argument("--community", required=True)
    p.add_argument("--period", required=True, choices=("day", "week", "month", "all"))
    p.add_argument("--n", default=5, help="members above and below (default 5)")
    p.add_argument("--at", help="a day (YYYY-MM-DD) or RFC 3339 time; default now")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add(
        "badges",
        cmd_badges,
        "show the badge catalog, or backtest it over a file (no Kafka, no Redis)",
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=("list", "backtest"),
        default="list",
        help="list (default) or backtest",
    )
    p.add_argument("file", nargs="?", help="backtest: JSON-lines file of activity events")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("awards", cmd_awards, "list the badges awarded in a community")
    p.add_argument("--community", required=True)
    p.add_argument("--member", help="only this member")
    p.add_argument("--limit", default=100, help="at most this many (default 100)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("counts", cmd_counts, "events processed per type, for one or more communities")
    p.add_argument(
        "--community", action="append", required=True, help="community (repeat for several)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add(
        "rebuild",
        cmd_rebuild,
        "recompute Redis state from the input topics (after Redis data loss or a scoring "
        "change); announces only awards not on the awards topic yet",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--community", action="append", help="community (repeat for several)")
    which.add_argument("--all", action="store_true", help="every community")
    p.add_argument(
        "--from-beginning",
        action="store_true",
        help="delete the communities' keys and replay every record the topics still hold "
        "(stop the workers first); without it, replay the last --since hours over the "
        "current state, skipping events Redis already has",
    )
    p.add_argument("--since", default="24", help="hours to replay without --from-beginning")
    p.add_argument("--batch-size", type=int, default=5000, help="records per batch")
    p.add_argument("--json", action="store_true", help="print JSON")
    _add_source_commands(add)
    return parser


def _add_source_commands(
    add: Callable[
        [str, Callable[[argparse.Namespace, Settings], int], str], argparse.ArgumentParser
    ],
) -> None:
    """Arguments of ingest, import, simulate, ingest-server and dlq (agents/ingest.py,
    agents/ingest_server.py, agents/dlq.py)."""

    def publishing(p: argparse.ArgumentParser) -> None:
        p.add_argument("--topic", help="topic to publish to (default: PULSE_INGEST_TOPICS)")
        p.add_argument("--source", help="the events' source name (default: the platform's)")
        p.add_argument(
            "--dry-run", action="store_true", help="print the events as JSON lines, publish none"
        )
        p.add_argument(
            "--skip-invalid",
            action="store_true",
            help="publish the good records even when some are broken (and report them)",
        )

    p = add("ingest", cmd_ingest, "normalize a platform export and publish it to Kafka")
    p.add_argument("platform", choices=("github", "discord", "discourse", "pypi"))
    p.add_argument(
        "file", help="JSON lines or a JSON document (see docs/sources.md), or - for stdin"
    )
    p.add_argument("--community", help="community for records no mapping covers (pypi: required)")
    p.add_argument("--instance", help="discourse: the forum URL of bare payloads")
    p.add_argument("--member", help="pypi: member credited with the releases")
    p.add_argument("--since", help="pypi: only versions uploaded after this day or time")
    publishing(p)

    p = add(
        "import",
        cmd_import,
        "normalize a conference or survey export and publish it; or load PyPI download "
        "counts into Redis",
    )
    p.add_argument("kind", choices=("checkins", "volunteers", "feedback", "pypi-downloads"))
    p.add_argument(
        "file",
        nargs="*",
        help="CSV with a header line (feedback: also JSON), or - for stdin; pypi-downloads: "
        "pypistats.org overall/recent JSON or BigQuery CSV (date,project,downloads) files",
    )
    p.add_argument(
        "--from-url",
        metavar="URL",
        help="pypi-downloads: fetch every configured package from this pypistats.org-"
        "compatible API (e.g. https://pypistats.org) instead of files",
    )
    p.add_argument("--community", help="community of rows without a community column")
    p.add_argument("--event", help="conference id of rows without an event column")
    p.add_argument("--timezone", help="zone of times without an offset, e.g. America/New_York")
    publishing(p)

    p = add(
        "announce",
        cmd_announce,
        "deliver awards, segment changes and flags to Discord, Slack, Discourse, webhooks",
    )
    p.add_argument("--config", required=True, help="TOML file of destinations (see README)")
    p.add_argument("--dlq-topic", help="dead letters (default: <prefix>.announce.dlq)")
    p.add_argument(
        "--metrics-port", type=int, default=6068, help="Prometheus /metrics port (0: none)"
    )
    p.add_argument("--metrics-bind", default="127.0.0.1", help="address of /metrics")
    p.add_argument(
        "--exit-when-idle",
        action="store_true",
        help="stop once every message on the topics was handled (for batch runs, tests)",
    )

    p = add("packages", cmd_packages, "PyPI downloads of the configured packages: 1d, 7d, 30d")
    p.add_argument("--community", action="append", help="only this community (repeatable)")
    p.add_argument("--json", action="store_true", help="JSON output")

    p = add("simulate", cmd_simulate, "simulate a believable community, to a file or Kafka")
    p.add_argument("--communities", default="3", help="a number, or comma-separated names")
    p.add_argument("--members", type=int, default=300, help="members in all (default 300)")
    p.add_argument("--days", type=int, default=10, help="days up to now (default 10)")
    p.add_argument("--events", type=int, default=5000, help="about this many valid events")
    p.add_argument("--rate", type=float, help="publish at most this many events per second")
    p.add_argument("--seed", type=int, default=7, help="random seed; same seed, same lines")
    p.add_argument("--now", help="end of the simulated time (default: now)")
    p.add_argument(
        "--malformed", type=float, default=0.01, help="share of malformed lines (default 0.01)"
    )
    p.add_argument("--no-conference", action="store_true", help="leave the conference out")
    p.add_argument("--id-prefix", default="sim", help="event ids start with this")
    p.add_argument("--out", help="write JSON lines to this file (- for stdout), not Kafka")
    p.add_argument("--topic", help="topic to publish to (default: the first input topic)")

    p = add("ingest-server", cmd_ingest_server, "serve signed GitHub and Discourse webhooks")
    p.add_argument("--bind", help="address (default PULSE_INGEST_BIND, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default PULSE_INGEST_PORT, 6067)")

    p = add("dlq", cmd_dlq, "inspect dead letters, replay fixed ones")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = actions.add_parser("inspect", help="list dead letters with their reasons")
    q.add_argument("--json", action="store_true", help="one JSON object per letter")
    q.add_argument("--limit", type=int, default=20, help="newest N letters (0: all)")
    q.add_argument("--reason", action="append", help="only this reason (repeatable)")
    q = actions.add_parser("replay", help="send fixed events back to the input topic")
    q.add_argument("--from-file", help="fixed events, or `dlq inspect --json` lines")
    q.add_argument("--reason", action="append", help="re-check letters of this reason as they are")
    q.add_argument("--topic", help="topic to replay to (default: the first input topic)")
    q.add_argument("--dry-run", action="store_true", help="check and count, send nothing")
    q.add_argument(
        "--skip-invalid", action="store_true", help="replay the valid lines of --from-file"
    )


# Long-running commands keep the Kafka client's log: it is the operator's view of it.
SERVERS: Final = frozenset({"worker", "ingest-server", "announce", "web"})


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"pulse: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command not in SERVERS and settings.log_level != "DEBUG":
        # A one-shot command reports a Kafka failure in one line of its own; the
        # client's retry-by-retry log would only bury it.
        for name in ("kafka", "aiokafka"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    import redis

    try:
        code: int = args.handler(args, settings)
    except BadQuery as exc:
        print(f"pulse {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CliError as exc:
        print(f"pulse {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except redis.exceptions.AuthenticationError:
        print(
            f"pulse {args.command}: Redis at {settings.redis_url_masked} refused the "
            "credentials (check PULSE_REDIS_URL)",
            file=sys.stderr,
        )
        return EXIT_SERVICE
    except redis.exceptions.RedisError as exc:
        print(
            f"pulse {args.command}: Redis at {settings.redis_url_masked}: "
            f"{type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return EXIT_SERVICE
    except BrokenPipeError:
        return EXIT_OK
    return code


if __name__ == "__main__":
    sys.exit(main())
