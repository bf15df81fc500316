"""Typed, validated configuration from ``PULSE_*`` environment variables.

Precedence is explicit argument > environment > default. Every variable name lives in
:data:`ENV`; secrets are :class:`Secret` values that print as ``**********`` so they
cannot leak through logs, metrics or ``pulse config``.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from streams.activity import COMMUNITY_RE
from streams.badges import Badge, CatalogError, default_catalog, load_catalog
from streams.downloads import PROJECT_RE
from streams.downloads import normalize as normalize_project
from streams.keys import PREFIX_RE
from streams.moderation import ModerationPolicy
from streams.policy import Policy, Retention
from streams.scoring import parse_points, scoring_table
from streams.segments import SegmentPolicy
from streams.windows import GRANULARITY_NAME, LONGEST_DAILY_DAYS, WINDOWS, on_day_boards

MASK: Final = "**********"
# The state cache holds at least this many batches' members: a member is evicted only
# once the batches that touched it are written, and two batches are in flight (the
# worker's, and `pulse rebuild` evaluating one while Redis applies the one before).
CACHE_BATCHES: Final = 4


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the variable."""


class Secret:
    """A string that never shows itself in ``str``, ``repr`` or JSON output."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# PULSE_* names read by the deploy scripts, not by pulse, and set in the same shells.
OTHER_VARIABLES: Final = frozenset({"PULSE_LOCAL_DIR", "PULSE_PROMETHEUS_URL"})
OTHER_PREFIXES: Final = ("PULSE_FAUST_",)


def check_variable_names(env: Mapping[str, str]) -> None:
    """Refuse an unknown ``PULSE_*`` variable: a typo would otherwise be ignored silently."""
    known = set(ENV.values())
    for name in sorted(env):
        if not name.startswith("PULSE_") or name in known or name in OTHER_VARIABLES:
            continue
        if name.startswith(OTHER_PREFIXES):
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"unknown variable {name}{hint}")


ENV: Final[dict[str, str]] = {
    "kafka_bootstrap_servers": "PULSE_KAFKA_BOOTSTRAP_SERVERS",
    "kafka_security_protocol": "PULSE_KAFKA_SECURITY_PROTOCOL",
    "kafka_sasl_mechanism": "PULSE_KAFKA_SASL_MECHANISM",
    "kafka_sasl_username": "PULSE_KAFKA_SASL_USERNAME",
    "kafka_sasl_password": "PULSE_KAFKA_SASL_PASSWORD",
    "kafka_ssl_cafile": "PULSE_KAFKA_SSL_CAFILE",
    "kafka_ssl_certfile": "PULSE_KAFKA_SSL_CERTFILE",
    "kafka_ssl_keyfile": "PULSE_KAFKA_SSL_KEYFILE",
    "redis_url": "PULSE_REDIS_URL",
    "redis_key_prefix": "PULSE_REDIS_KEY_PREFIX",
    "app_id": "PULSE_APP_ID",
    "activity_topics": "PULSE_TOPIC_ACTIVITY",
    "dlq_topic": "PULSE_TOPIC_DLQ",
    "awards_topic": "PULSE_TOPIC_AWARDS",
    "segments_topic": "PULSE_TOPIC_SEGMENTS",
    "moderation_topic": "PULSE_TOPIC_MODERATION",
    "segment_intermediate": "PULSE_SEGMENT_INTERMEDIATE_POINTS",
    "segment_advanced": "PULSE_SEGMENT_ADVANCED_POINTS",
    "segment_grace_days": "PULSE_SEGMENT_DOWNGRADE_GRACE_DAYS",
    "newcomer_days": "PULSE_NEWCOMER_DAYS",
    "segment_sweep_seconds": "PULSE_SEGMENT_SWEEP_SECONDS",
    "flood_messages": "PULSE_FLOOD_MESSAGES",
    "flood_window": "PULSE_FLOOD_WINDOW_SECONDS",
    "crosspost_channels": "PULSE_CROSSPOST_CHANNELS",
    "crosspost_window": "PULSE_CROSSPOST_WINDOW_SECONDS",
    "badges_file": "PULSE_BADGES_FILE",
    "topic_partitions": "PULSE_TOPIC_PARTITIONS",
    "web_bind": "PULSE_WEB_BIND",
    "web_port": "PULSE_WEB_PORT",
    "public_url": "PULSE_PUBLIC_URL",
    "communities_file": "PULSE_COMMUNITIES_FILE",
    "log_level": "PULSE_LOG_LEVEL",
    "data_dir": "PULSE_DATA_DIR",
    "batch_size": "PULSE_BATCH_SIZE",
    "state_cache_members": "PULSE_STATE_CACHE_MEMBERS",
    "batch_within": "PULSE_BATCH_WITHIN_SECONDS",
    "shutdown_wait": "PULSE_SHUTDOWN_WAIT_FOR_BATCHES",
    "max_future_skew": "PULSE_MAX_FUTURE_SKEW_SECONDS",
    "max_message_bytes": "PULSE_MAX_MESSAGE_BYTES",
    "points": "PULSE_POINTS",
    "retention_day_days": "PULSE_RETENTION_DAY_DAYS",
    "retention_week_days": "PULSE_RETENTION_WEEK_DAYS",
    "retention_month_days": "PULSE_RETENTION_MONTH_DAYS",
    "retention_window_days": "PULSE_RETENTION_WINDOW_DAYS",
    "dedupe_ttl_days": "PULSE_DEDUPE_TTL_DAYS",
    "github_webhook_secret": "PULSE_GITHUB_WEBHOOK_SECRET",
    "discourse_webhook_secret": "PULSE_DISCOURSE_WEBHOOK_SECRET",
    "ingest_bind": "PULSE_INGEST_BIND",
    "ingest_port": "PULSE_INGEST_PORT",
    "ingest_max_body_bytes": "PULSE_INGEST_MAX_BODY_BYTES",
    "ingest_topics": "PULSE_INGEST_TOPICS",
    "github_communities": "PULSE_GITHUB_COMMUNITIES",
    "github_member_id": "PULSE_GITHUB_MEMBER_ID",
    "github_releases": "PULSE_GITHUB_RELEASES",
    "discord_communities": "PULSE_DISCORD_COMMUNITIES",
    "discord_channels": "PULSE_DISCORD_CHANNELS",
    "discourse_communities": "PULSE_DISCOURSE_COMMUNITIES",
    "pypi_packages": "PULSE_PYPI_PACKAGES",
}

SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TOPIC_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def parse_flag(name: str, text: str) -> bool:
    """A yes/no setting: 1/true/yes or 0/false/no, any case."""
    flag = text.lower()
    if flag not in ("1", "true", "yes", "0", "false", "no"):
        raise ConfigError(f"{ENV[name]} must be true or false, got {text!r}")
    return flag in ("1", "true", "yes")


def _ingest_values(
    raw: Callable[[str], str | None], integer: Callable[[str, int, int], int | None]
) -> dict[str, Any]:
    """The webhook ingest and normalizer settings among the environment values."""
    values: dict[str, Any] = {}
    for name in ("github_webhook_secret", "discourse_webhook_secret"):
        if (text := raw(name)) is not None:
            values[name] = Secret(text)
    if (text := raw("ingest_bind")) is not None:
        values["ingest_bind"] = text
    if (port := integer("ingest_port", 1, 65535)) is not None:
        values["ingest_port"] = port
    if (size := integer("ingest_max_body_bytes", 1024, 25 * 1024 * 1024)) is not None:
        values["ingest_max_body_bytes"] = size
    if (text := raw("github_member_id")) is not None:
        values["github_member_id"] = text.lower()
    if (text := raw("github_releases")) is not None:
        values["github_releases"] = parse_flag("github_releases", text)

    def community(value: str) -> bool:
        return COMMUNITY_RE.fullmatch(value) is not None

    for name in ("github_communities", "discord_communities", "discourse_communities"):
        if (text := raw(name)) is not None:
            values[name] = parse_mapping(name, text, community, "a community name")
    if (text := raw("pypi_packages")) is not None:
        packages = parse_mapping("pypi_packages", text, community, "a community name")
        for name in packages:
            if PROJECT_RE.fullmatch(name) is None:
                raise ConfigError(f"{ENV['pypi_packages']}: {name!r} is not a PyPI project name")
        values["pypi_packages"] = {normalize_project(k): v for k, v in packages.items()}
    if (text := raw("discord_channels")) is not None:
        values["discord_channels"] = parse_mapping(
            "discord_channels",
            text,
            lambda v: len(v) <= 128 and v.isprintable(),
            "a channel name (printable, at most 128 characters)",
        )
    if (text := raw("ingest_topics")) is not None:
        values["ingest_topics"] = parse_mapping(
            "ingest_topics",
            text,
            lambda v: len(v) <= 249 and set(v) <= TOPIC_CHARS,
            "a valid Kafka topic name",
        )
    return values


# Platforms whose normalized events can be routed to their own input topic.
INGEST_PLATFORMS: Final = ("github", "discord", "discourse", "pypi", "conference", "feedback")


def parse_mapping(name: str, text: str, check: Callable[[str], bool], what: str) -> dict[str, str]:
    """``key=value,key=value`` (keys folded to lower case) from the variable ``ENV[name]``."""
    mapping: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not key or not value:
            raise ConfigError(f"{ENV[name]}: {item.strip()!r} is not key=value")
        if not check(value):
            raise ConfigError(f"{ENV[name]}: {value!r} is not {what}")
        mapping[key] = value
    return mapping


def _read_file(name: str, path: str, parse: Callable[[str], Any], refused: type[Exception]) -> Any:
    """The file a ``PULSE_*_FILE`` variable names, parsed; a ConfigError naming the
    variable when it cannot be read or ``parse`` raises ``refused``."""
    try:
        with open(path, encoding="utf-8") as handle:
            return parse(handle.read())
    except OSError as exc:
        raise ConfigError(f"{ENV[name]}: cannot read {path}: {exc.strerror}") from None
    except refused as exc:
        raise ConfigError(f"{ENV[name]} {path}: {exc}") from None


@dataclass(frozen=True, slots=True)
class CommunityProfile:
    """How a community presents itself: the pages' title and the credentials' issuer."""

    name: str
    url: str | None = None


def load_profiles(text: str) -> dict[str, CommunityProfile]:
    """``PULSE_COMMUNITIES_FILE``: a TOML table per community with ``name`` and an
    optional ``url``. Raises ValueError naming the place of the first problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"not valid TOML: {exc}") from None
    out = {}
    for community, table in data.items():
        if COMMUNITY_RE.fullmatch(community) is None:
            raise ValueError(f"[{community}]: not a community name ([a-z0-9._-], 1..64)")
        if not isinstance(table, dict):
            raise ValueError(f"[{community}] must be a table with name and url")
        unknown = set(table) - {"name", "url"}
        if unknown:
            raise ValueError(f"[{community}]: unknown key {sorted(unknown)[0]!r} (name, url)")
        title, url = table.get("name", community), table.get("url")
        if not isinstance(title, str) or not 0 < len(title) <= 100 or not title.isprintable():
            raise ValueError(f"[{community}] name must be 1..100 printable characters")
        if url is not None and not (
            isinstance(url, str) and url.startswith(("http://", "https://"))
        ):
            raise ValueError(f"[{community}] url must be an http(s) URL")
        out[community] = CommunityProfile(title, url)
    return out


@dataclass(frozen=True)
class Settings:
    """The effective configuration of one process."""

    kafka_bootstrap_servers: tuple[str, ...] = ("127.0.0.1:9092",)
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: Secret = field(default_factory=lambda: Secret(""))
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    redis_url: Secret = field(default_factory=lambda: Secret("redis://127.0.0.1:6379/0"))
    redis_key_prefix: str = "pulse"
    app_id: str = "community-pulse"
    activity_topics: tuple[str, ...] = ("pulse.activity",)
    dlq_topic: str = "pulse.activity.dlq"
    awards_topic: str = "pulse.badges.awarded"
    segments_topic: str = "pulse.members.segment-changed"
    moderation_topic: str = "pulse.moderation.flagged"
    segments: SegmentPolicy = field(default_factory=SegmentPolicy)
    moderation: ModerationPolicy = field(default_factory=ModerationPolicy)
    segment_sweep_seconds: float = 300.0
    badges_file: str | None = None
    catalog: tuple[Badge, ...] = field(default_factory=default_catalog)
    topic_partitions: int = 12
    web_bind: str = "127.0.0.1"
    web_port: int = 6066
    # The address people reach the pages at (credentials and links carry it); empty:
    # the server's own http://bind:port.
    public_url: str = ""
    communities_file: str | None = None
    # Community -> how it presents itself on the pages and as a credential issuer.
    profiles: Mapping[str, CommunityProfile] = field(default_factory=dict)
    log_level: str = "INFO"
    data_dir: str = "pulse-data"
    batch_size: int = 2000
    # Members whose engine state a worker keeps in memory (LRU); the rest are reloaded.
    # About 4 KB each in the benchmark's workload: 20,000 keep a worker within 300 MB.
    state_cache_members: int = 20_000
    batch_within: float = 0.05
    # On SIGTERM, finish the batches taken from Kafka before exiting. False exits at
    # once; unapplied batches are then redelivered.
    shutdown_wait: bool = True
    max_future_skew: float = 300.0
    max_message_bytes: int = 65536
    points: Mapping[str, int] = field(default_factory=scoring_table)
    retention: Retention = field(default_factory=Retention)
    github_webhook_secret: Secret = field(default_factory=lambda: Secret(""))
    discourse_webhook_secret: Secret = field(default_factory=lambda: Secret(""))
    ingest_bind: str = "127.0.0.1"
    ingest_port: int = 6067
    ingest_max_body_bytes: int = 1_048_576
    ingest_topics: Mapping[str, str] = field(default_factory=dict)
    github_communities: Mapping[str, str] = field(default_factory=dict)
    github_member_id: str = "login"
    github_releases: bool = False
    discord_communities: Mapping[str, str] = field(default_factory=dict)
    discord_channels: Mapping[str, str] = field(default_factory=dict)
    discourse_communities: Mapping[str, str] = field(default_factory=dict)
    # PyPI project (PEP 503 normal form) -> community, for download health.
    pypi_packages: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``) and explicit overrides."""
        env = os.environ if environ is None else environ
        check_variable_names(env)
        values: dict[str, Any] = {}

        def raw(name: str) -> str | None:
            value = env.get(ENV[name])
            return None if value is None or value.strip() == "" else value.strip()

        def integer(name: str, low: int, high: int) -> int | None:
            text = raw(name)
            if text is None:
                return None
            try:
                number = int(text)
            except ValueError:
                raise ConfigError(f"{ENV[name]} must be an integer, got {text!r}") from None
            if not low <= number <= high:
                raise ConfigError(f"{ENV[name]} must be between {low} and {high}, got {number}")
            return number

        def number(name: str, low: float, high: float) -> float | None:
            text = raw(name)
            if text is None:
                return None
            try:
                value = float(text)
            except ValueError:
                raise ConfigError(f"{ENV[name]} must be a number, got {text!r}") from None
            if not low <= value <= high:
                raise ConfigError(f"{ENV[name]} must be between {low:g} and {high:g}")
            return value

        if (text := raw("kafka_bootstrap_servers")) is not None:
            values["kafka_bootstrap_servers"] = tuple(
                s.strip() for s in text.split(",") if s.strip()
            )
        for name in ("kafka_security_protocol", "kafka_sasl_mechanism", "log_level"):
            if (text := raw(name)) is not None:
                values[name] = text.upper()
        for name in (
            "kafka_sasl_username",
            "kafka_ssl_cafile",
            "kafka_ssl_certfile",
            "kafka_ssl_keyfile",
            "redis_key_prefix",
            "app_id",
            "dlq_topic",
            "awards_topic",
            "segments_topic",
            "moderation_topic",
            "web_bind",
            "data_dir",
        ):
            if (text := raw(name)) is not None:
                values[name] = text
        if (text := raw("kafka_sasl_password")) is not None:
            values["kafka_sasl_password"] = Secret(text)
        if (text := raw("redis_url")) is not None:
            values["redis_url"] = Secret(text)
        if (text := raw("activity_topics")) is not None:
            values["activity_topics"] = tuple(t.strip() for t in text.split(",") if t.strip())
        for name, low, high in (
            ("topic_partitions", 1, 1024),
            ("web_port", 1, 65535),
            ("batch_size", 1, 100_000),
            ("state_cache_members", 1_000, 100_000_000),
            ("max_message_bytes", 256, 10_000_000),
        ):
            if (parsed := integer(name, low, high)) is not None:
                values[name] = parsed
        if (seconds := number("batch_within", 0.001, 60)) is not None:
            values["batch_within"] = seconds
        if (text := raw("shutdown_wait")) is not None:
            values["shutdown_wait"] = parse_flag("shutdown_wait", text)
        if (seconds := number("max_future_skew", 0, 366 * 86400)) is not None:
            values["max_future_skew"] = seconds
        if (text := raw("points")) is not None:
            try:
                values["points"] = scoring_table(parse_points(text))
            except ValueError as exc:
                raise ConfigError(f"{ENV['points']}: {exc}") from None
        retention: dict[str, int] = {}
        for name, attr, shortest in (
            # The daily window buckets are the day leaderboards (streams/windows.py).
            ("retention_day_days", "day_seconds", LONGEST_DAILY_DAYS),
            ("retention_week_days", "week_seconds", 1),
            ("retention_month_days", "month_seconds", 1),
            ("retention_window_days", "window_seconds", 1),
            ("dedupe_ttl_days", "dedupe_seconds", 1),
        ):
            if (days := integer(name, shortest, 3650)) is not None:
                retention[attr] = days * 86400
        if retention:
            values["retention"] = Retention(**retention)
        seg: dict[str, int] = {}
        for name, attr, low, high, scale in (
            ("segment_intermediate", "intermediate_at", 1, 10**9, 1),
            ("segment_advanced", "advanced_at", 1, 10**9, 1),
            ("segment_grace_days", "downgrade_grace", 0, 365, 86400),
            ("newcomer_days", "newcomer_for", 0, 365, 86400),
        ):
            if (value := integer(name, low, high)) is not None:
                seg[attr] = value * scale
        if seg:
            try:
                values["segments"] = SegmentPolicy(**seg)
            except ValueError as exc:
                raise ConfigError(
                    f"{ENV['segment_intermediate']}/{ENV['segment_advanced']}: {exc}"
                ) from None
        mod: dict[str, int] = {}
        for name, attr, low, high in (
            ("flood_messages", "flood_messages", 1, 10_000),
            ("flood_window", "flood_window", 1, 86400),
            ("crosspost_channels", "crosspost_channels", 1, 1000),
            ("crosspost_window", "crosspost_window", 1, 86400),
        ):
            if (value := integer(name, low, high)) is not None:
                mod[attr] = value
        if mod:
            values["moderation"] = ModerationPolicy(**mod)
        if (seconds := number("segment_sweep_seconds", 1, 86400)) is not None:
            values["segment_sweep_seconds"] = seconds
        if (path := raw("badges_file")) is not None:
            values["badges_file"] = path
            values["catalog"] = _read_file("badges_file", path, load_catalog, CatalogError)
        if (url := raw("public_url")) is not None:
            if not url.startswith(("http://", "https://")) or urlsplit(url).hostname is None:
                raise ConfigError(
                    f"{ENV['public_url']} must be an http(s) URL such as "
                    f"https://pulse.example.org, got {url!r}"
                )
            values["public_url"] = url.rstrip("/")
        if (path := raw("communities_file")) is not None:
            values["communities_file"] = path
            values["profiles"] = _read_file("communities_file", path, load_profiles, ValueError)
        values.update(_ingest_values(raw, integer))
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first unusable value."""
        if not self.kafka_bootstrap_servers:
            raise ConfigError(f"{ENV['kafka_bootstrap_servers']} must name at least one broker")
        for server in self.kafka_bootstrap_servers:
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"{ENV['kafka_bootstrap_servers']}: {server!r} is not host:port")
        if self.kafka_security_protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"{ENV['kafka_security_protocol']} must be one of {', '.join(SECURITY_PROTOCOLS)}"
            )
        if self.kafka_security_protocol.startswith("SASL_"):
            if self.kafka_sasl_mechanism not in SASL_MECHANISMS:
                raise ConfigError(
                    f"{ENV['kafka_sasl_mechanism']} must be one of {', '.join(SASL_MECHANISMS)}"
                    f" when {ENV['kafka_security_protocol']}={self.kafka_security_protocol}"
                )
            if not self.kafka_sasl_username or not self.kafka_sasl_password:
                raise ConfigError(
                    f"{ENV['kafka_sasl_username']} and {ENV['kafka_sasl_password']} are required"
                    f" when {ENV['kafka_security_protocol']}={self.kafka_security_protocol}"
                )
        for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise ConfigError(f"{ENV[name]}: no such file {path!r}")
        url = urlsplit(self.redis_url.reveal())
        if url.scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(
                f"{ENV['redis_url']} must start with redis://, rediss:// (TLS) or unix://"
            )
        try:
            url.port  # noqa: B018 - urlsplit checks the port only when it is read
        except ValueError:
            raise ConfigError(
                f"{ENV['redis_url']} has a port that is not a number from 0 to 65535"
            ) from None
        if url.scheme != "unix" and not url.hostname:
            raise ConfigError(
                f"{ENV['redis_url']} must name a host, e.g. redis://:PASSWORD@127.0.0.1:6379/0"
            )
        if PREFIX_RE.fullmatch(self.redis_key_prefix) is None:
            raise ConfigError(
                f"{ENV['redis_key_prefix']} must be 1..32 characters of [A-Za-z0-9_.-]"
            )
        outputs = (self.awards_topic, self.segments_topic, self.moderation_topic)
        for topic in (*self.activity_topics, self.dlq_topic, *outputs):
            if not topic or len(topic) > 249 or not set(topic) <= TOPIC_CHARS:
                raise ConfigError(
                    f"topic name {topic!r} is not a valid Kafka topic name (check the "
                    f"PULSE_TOPIC_* variables: 1..249 characters of [A-Za-z0-9._-])"
                )
        if not self.activity_topics:
            raise ConfigError(f"{ENV['activity_topics']} must name at least one topic")
        if self.state_cache_members < CACHE_BATCHES * self.batch_size:
            raise ConfigError(
                f"{ENV['state_cache_members']} ({self.state_cache_members}) must be at least "
                f"{CACHE_BATCHES} x {ENV['batch_size']} ({CACHE_BATCHES * self.batch_size})"
            )
        if self.dlq_topic in self.activity_topics:
            raise ConfigError(
                f"{ENV['dlq_topic']} must differ from the input topics ({ENV['activity_topics']})"
            )
        if len({*self.activity_topics, self.dlq_topic, *outputs}) != len(self.activity_topics) + 4:
            raise ConfigError(
                "input, dead-letter, award, segment and moderation topics must all differ "
                "(check the PULSE_TOPIC_* variables)"
            )
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"{ENV['log_level']} must be one of {', '.join(LOG_LEVELS)}")
        if not self.app_id or not set(self.app_id) <= TOPIC_CHARS:
            raise ConfigError(f"{ENV['app_id']} must be letters, digits, '.', '_' or '-'")
        for platform, topic in self.ingest_topics.items():
            if platform not in INGEST_PLATFORMS:
                raise ConfigError(
                    f"{ENV['ingest_topics']}: unknown platform {platform!r} "
                    f"(one of {', '.join(INGEST_PLATFORMS)})"
                )
            if topic == self.dlq_topic:
                raise ConfigError(f"{ENV['ingest_topics']}: {platform} must not publish to the DLQ")
        if self.github_member_id not in ("login", "id"):
            raise ConfigError(f"{ENV['github_member_id']} must be login or id")

    def ingest_topic(self, platform: str) -> str:
        """The topic normalized events of ``platform`` go to (default: the first input)."""
        return self.ingest_topics.get(platform, self.activity_topics[0])

    @property
    def policy(self) -> Policy:
        """What the evaluator needs: scoring, retention, badges, segments, moderation."""
        return Policy(self.points, self.retention, self.catalog, self.segments, self.moderation)

    @property
    def redis_url_masked(self) -> str:
        url = urlsplit(self.redis_url.reveal())
        if url.password is None:
            return url.geturl()
        user = url.username or ""
        netloc = f"{user}:{MASK}@{url.hostname}"
        if url.port is not None:
            netloc += f":{url.port}"
        return urlunsplit((url.scheme, netloc, url.path, url.query, url.fragment))

    def public(self) -> dict[str, Any]:
        """The effective configuration as JSON-ready data, secrets masked."""
        r = self.retention
        return {
            "kafka": {
                "bootstrap_servers": list(self.kafka_bootstrap_servers),
                "security_protocol": self.kafka_security_protocol,
                "sasl_mechanism": self.kafka_sasl_mechanism,
                "sasl_username": self.kafka_sasl_username,
                "sasl_password": MASK if self.kafka_sasl_password else None,
                "ssl_cafile": self.kafka_ssl_cafile,
                "ssl_certfile": self.kafka_ssl_certfile,
                "ssl_keyfile": self.kafka_ssl_keyfile,
                "consumer_group": self.app_id,
            },
            "redis": {"url": self.redis_url_masked, "key_prefix": self.redis_key_prefix},
            "topics": {
                "activity": list(self.activity_topics),
                "dead_letter": self.dlq_topic,
                "badges_awarded": self.awards_topic,
                "segment_changed": self.segments_topic,
                "moderation_flagged": self.moderation_topic,
                "partitions": self.topic_partitions,
            },
            "web": {
                "bind": self.web_bind,
                "port": self.web_port,
                "metrics_path": "/metrics",
                "public_url": self.public_url or "(the server's own http://bind:port)",
                "communities_file": self.communities_file,
                "communities": {
                    c: {"name": p.name, "url": p.url} for c, p in sorted(self.profiles.items())
                },
            },
            "log_level": self.log_level,
            "data_dir": self.data_dir,
            "batching": {"max_events": self.batch_size, "within_seconds": self.batch_within},
            "state_cache_members": self.state_cache_members,
            "shutdown_waits_for_batches": self.shutdown_wait,
            "validation": {
                "max_future_skew_seconds": self.max_future_skew,
                "max_message_bytes": self.max_message_bytes,
            },
            "scoring": {"points": dict(self.points)},
            "segments": {
                **self.segments.public(),
                "sweep_interval_seconds": self.segment_sweep_seconds,
            },
            "moderation": self.moderation.public(),
            "badges": {
                "file": self.badges_file or "(built-in default catalog)",
                "catalog": [badge.public() for badge in self.catalog],
            },
            "windows": {
                w.name: {
                    "seconds": w.seconds,
                    "granularity_seconds": w.granularity,
                    "buckets": w.seconds // w.granularity,
                    "bucket_keys": "lb:day"
                    if on_day_boards(w)
                    else f"win:{GRANULARITY_NAME[w.granularity]}",
                }
                for w in WINDOWS
            },
            "retention": {
                "leaderboard_day_seconds": r.day_seconds,
                "leaderboard_week_seconds": r.week_seconds,
                "leaderboard_month_seconds": r.month_seconds,
                "window_bucket_seconds": r.window_seconds,
                "event_id_memory_seconds": r.dedupe_seconds,
                "counted_from": "the end of the bucket's period",
            },
            "ingest": {
                "bind": self.ingest_bind,
                "port": self.ingest_port,
                "max_body_bytes": self.ingest_max_body_bytes,
                "topics": {p: self.ingest_topic(p) for p in INGEST_PLATFORMS},
                "github": {
                    "webhook_secret": MASK if self.github_webhook_secret else None,
                    "communities": dict(self.github_communities),
                    "member_id": self.github_member_id,
                    "releases_as_packages": self.github_releases,
                },
                "discord": {
                    "communities": dict(self.discord_communities),
                    "channels": dict(self.discord_channels),
                },
                "discourse": {
                    "webhook_secret": MASK if self.discourse_webhook_secret else None,
                    "communities": dict(self.discourse_communities),
                },
            },
            "pypi_downloads": {"packages": dict(self.pypi_packages)},
        }
