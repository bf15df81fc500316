"""``pulse dlq inspect`` and ``pulse dlq replay``: look at dead letters and send fixed
ones back.

``inspect`` reads the dead-letter topic without joining a consumer group (it moves no
offsets and disturbs nothing) and shows, per letter, where it sits, why it was rejected
(``pulse-reason``, ``pulse-field``, ``pulse-detail``), where it came from, and a preview
of its bytes in which control characters are escaped, so a hostile payload cannot
drive the terminal. ``--json`` prints one object per letter, with the exact bytes
(base64) and, when they parse, the JSON value to fix.

``replay`` never sends anything that is still invalid. It takes either a file of fixed
events (``--from-file``; lines of ``inspect --json`` output with ``value`` corrected work
as they are) or the letters of given ``--reason`` codes re-checked as they are (for
rejections that were right at the time but are fine now, such as ``in_future`` after a
clock fix). Every event is validated first; replayed messages carry a
``pulse-replayed-from`` header naming the letter. Replaying twice is harmless: the
worker counts an ``event_id`` once.
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from agents.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_SERVICE, EXIT_USAGE, CliError
from agents.ingest import Message, Problem, publish, quiet_kafka, read_json_records
from agents.settings import Settings
from streams.activity import InvalidActivity, parse_activity
from streams.periods import format_instant

PREVIEW_CHARS = 120
READ_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Letter:
    """One record of the dead-letter topic."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]

    def header(self, name: str) -> str | None:
        raw = self.headers.get(name)
        return None if raw is None else safe_text(raw, 300)

    @property
    def reason(self) -> str:
        return self.header("pulse-reason") or "unknown"

    @property
    def origin(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    def as_json(self) -> dict[str, Any]:
        try:
            value: Any = orjson.loads(self.value)
        except orjson.JSONDecodeError:
            value = None
        return {
            "dlq": {
                "topic": self.topic,
                "partition": self.partition,
                "offset": self.offset,
                "timestamp": format_instant(self.timestamp_ms / 1000),
            },
            "reason": self.reason,
            "field": self.header("pulse-field"),
            "detail": self.header("pulse-detail"),
            "source": {
                "topic": self.header("pulse-source-topic"),
                "partition": self.header("pulse-source-partition"),
                "offset": self.header("pulse-source-offset"),
            },
            "key": None if self.key is None else safe_text(self.key, 200),
            "size": len(self.value),
            "preview": safe_text(self.value, PREVIEW_CHARS),
            "value_b64": base64.b64encode(self.value).decode(),
            "value": value,
        }


def safe_text(raw: bytes, limit: int) -> str:
    """Bytes as text fit for a terminal: invalid UTF-8 and control characters escaped,
    at most ``limit`` characters (then ``...``)."""
    head = raw[: limit * 4]
    text = head.decode("utf-8", "backslashreplace")
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    if len(shown) > limit or len(head) < len(raw):
        return shown[:limit] + "..."
    return shown


def read_letters(
    settings: Settings, reasons: set[str] | None, newest: int | None
) -> tuple[int, list[Letter]]:
    """(letters in the topic, the letters read). ``newest`` limits the read to about that
    many of the most recent letters per partition; ``reasons`` filters by reason."""
    from kafka import KafkaConsumer, TopicPartition

    from agents.kafka_io import KafkaError, client_options

    quiet_kafka(settings)
    topic = settings.dlq_topic
    try:
        consumer = KafkaConsumer(
            **client_options(settings),
            enable_auto_commit=False,
            group_id=None,
            request_timeout_ms=15000,
        )
    except KafkaError as exc:
        raise CliError(
            f"Kafka at {','.join(settings.kafka_bootstrap_servers)}: {exc}", EXIT_SERVICE
        ) from None
    try:
        numbers = consumer.partitions_for_topic(topic)
        if not numbers:
            return 0, []
        partitions = [TopicPartition(topic, p) for p in sorted(numbers)]
        consumer.assign(partitions)
        begin = consumer.beginning_offsets(partitions)
        end = consumer.end_offsets(partitions)
        total = sum(end[tp] - begin[tp] for tp in partitions)
        for tp in partitions:
            start = begin[tp] if newest is None else max(begin[tp], end[tp] - newest)
            consumer.seek(tp, start)
        letters: list[Letter] = []
        deadline = time.monotonic() + READ_TIMEOUT
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise CliError(f"timed out reading {topic}", EXIT_SERVICE)
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    if record.offset >= end[TopicPartition(record.topic, record.partition)]:
                        continue
                    letter = Letter(
                        record.topic,
                        record.partition,
                        record.offset,
                        record.timestamp,
                        record.key,
                        record.value or b"",
                        {k: v for k, v in (record.headers or []) if v is not None},
                    )
                    if reasons is None or letter.reason in reasons:
                        letters.append(letter)
    except KafkaError as exc:
        raise CliError(
            f"Kafka at {','.join(settings.kafka_bootstrap_servers)}: {exc}", EXIT_SERVICE
        ) from None
    finally:
        consumer.close()
    letters.sort(key=lambda item: (item.timestamp_ms, item.partition, item.offset))
    return total, letters


def cmd_inspect(args: argparse.Namespace, settings: Settings) -> int:
    limit = args.limit if args.limit > 0 else None
    reasons = set(args.reason) if args.reason else None
    total, letters = read_letters(settings, reasons, None if reasons else limit)
    shown = letters[-limit:] if limit is not None else letters
    if args.json:
        out = sys.stdout.buffer
        for letter in shown:
            out.write(orjson.dumps(letter.as_json()) + b"\n")
        out.flush()
        return EXIT_OK
    print(f"{settings.dlq_topic}: {total} dead letter(s); showing the newest {len(shown)}")
    for letter in shown:
        data = letter.as_json()
        field = f" [{data['field']}]" if data["field"] else ""
        source = data["source"]
        print(
            f"\n{letter.partition}:{letter.offset}  {data['dlq']['timestamp']}  "
            f"{data['reason']}{field}"
        )
        print(f"  detail   {data['detail'] or '-'}")
        print(f"  from     {source['topic']}/{source['partition']}/{source['offset']}")
        print(f"  key      {data['key'] if data['key'] is not None else '-'}")
        print(f"  bytes    {data['size']}: {data['preview']}")
    if shown:
        counts = Counter(letter.reason for letter in shown)
        print("\nby reason: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return EXIT_OK


def _fixed_events(path: str) -> Iterator[tuple[int, object, str | None]]:
    """(line, event, the letter it fixes) from a file of fixed events or inspect records."""
    for line, record in read_json_records(path):
        if isinstance(record, Problem):
            yield line, record, None
        elif isinstance(record, dict) and isinstance(record.get("dlq"), dict):
            where = record["dlq"]
            origin = f"{where.get('topic')}/{where.get('partition')}/{where.get('offset')}"
            yield line, record.get("value"), origin
        else:
            yield line, record, None


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    now = time.time()
    topic = args.topic or settings.activity_topics[0]
    good: list[Message] = []
    problems: list[str] = []
    if args.from_file:
        for line, value, origin in _fixed_events(args.from_file):
            if isinstance(value, Problem):
                problems.append(value.describe(args.from_file))
                continue
            try:
                event = parse_activity(value, now=now, max_future_skew=settings.max_future_skew)
            except InvalidActivity as exc:
                where = f" [{exc.field}]" if exc.field else ""
                problems.append(f"{args.from_file}:{line}: {exc.reason}{where}: {exc.detail}")
                continue
            headers = [("pulse-replayed-from", origin.encode())] if origin else []
            good.append((event.member_id.encode(), orjson.dumps(value), headers))
    else:
        _, letters = read_letters(settings, set(args.reason), None)
        for letter in letters:
            try:
                value = orjson.loads(letter.value)
                event = parse_activity(value, now=now, max_future_skew=settings.max_future_skew)
            except orjson.JSONDecodeError:
                problems.append(f"{letter.origin}: invalid_json: still not valid UTF-8 JSON")
                continue
            except InvalidActivity as exc:
                where = f" [{exc.field}]" if exc.field else ""
                problems.append(f"{letter.origin}: {exc.reason}{where}: {exc.detail}")
                continue
            headers = [("pulse-replayed-from", letter.origin.encode())]
            good.append((event.member_id.encode(), letter.value, headers))
    for problem in problems:
        print(problem, file=sys.stderr)
    if args.from_file and problems and not args.skip_invalid:
        print(
            f"{len(problems)} line(s) still invalid; nothing replayed "
            "(fix them, or pass --skip-invalid to replay the rest)",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    if args.dry_run:
        print(f"would replay {len(good)} event(s) to {topic}; {len(problems)} still invalid")
        return EXIT_OK
    sent = publish(settings, topic, good, total=len(good)) if good else 0
    still = f"; {len(problems)} still invalid (left in the DLQ)" if problems else ""
    print(f"replayed {sent} event(s) to {topic}{still}")
    return EXIT_OK


def run(args: argparse.Namespace, settings: Settings) -> int:
    """``pulse dlq inspect|replay``."""
    if args.action == "inspect":
        return cmd_inspect(args, settings)
    if not args.from_file and not args.reason:
        raise CliError("replay needs --from-file FILE or --reason REASON", EXIT_USAGE)
    return cmd_replay(args, settings)
