"""The announcer's destinations, from a TOML file (``pulse announce --config FILE``).

Example (README, "Announcements")::

    image_url = "https://pulse.example.org/c/{community}/badges/{badge}.svg"

    [[destination]]
    name = "pycon-discord"
    kind = "discord"                 # discord | slack | discourse | webhook
    communities = ["pycon-us"]       # or ["*"]
    events = ["awards", "segments"]  # awards | segments | flags
    url_env = "PYCON_DISCORD_WEBHOOK_URL"

Secrets (webhook URLs, API keys, signing secrets) are never in the file: ``*_env`` names
an environment variable, ``*_file`` a file that holds the value. They are read once, at
start-up, and never printed.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from agents.settings import Secret
from streams.activity import COMMUNITY_RE

KINDS: Final = ("discord", "slack", "discourse", "webhook")
EVENTS: Final = ("awards", "segments", "flags")
NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,47}")
DEFAULT_TEMPLATES: Final = {
    "awards": "{member_id} earned {badge_name}{tier_suffix} in {community}",
    "segments": "{member_id} is now {to} in {community} (was {from})",
    "flags": "{member_id} was flagged for {rule} in #{channel} ({community})",
}
# The fields a template may use, per event kind (anything else is refused at start-up).
TEMPLATE_FIELDS: Final = {
    "awards": {
        "member_id",
        "community",
        "badge",
        "badge_name",
        "tier",
        "tier_suffix",
        "description",
        "awarded_at",
        "image_url",
    },  # fmt: skip
    "segments": {"member_id", "community", "from", "to", "changed_at", "score_30d"},
    "flags": {"member_id", "community", "rule", "channel", "flagged_at"},
}


class AnnounceConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Destination:
    name: str
    kind: str
    communities: frozenset[str]  # empty: every community
    events: frozenset[str]
    url: Secret  # incoming-webhook URL (discord, slack, webhook); the forum's base URL
    templates: Mapping[str, str]
    # discourse: the topic to post into, the API key and the user it posts as.
    topic_id: int | None = None
    api_key: Secret = field(default_factory=lambda: Secret(""))
    api_username: str = ""
    # webhook: the HMAC-SHA256 signing secret.
    secret: Secret = field(default_factory=lambda: Secret(""))

    def wants(self, community: str, event: str) -> bool:
        return event in self.events and (not self.communities or community in self.communities)


@dataclass(frozen=True)
class AnnounceConfig:
    destinations: tuple[Destination, ...]
    image_url: str | None = None
    max_attempts: int = 6
    timeout_seconds: float = 10.0


def _secret(table: Mapping[str, Any], key: str, where: str, env: Mapping[str, str]) -> str:
    """``key_env`` or ``key_file`` of ``table``; "" when neither is given."""
    by_env, by_file = table.get(f"{key}_env"), table.get(f"{key}_file")
    if by_env is not None and by_file is not None:
        raise AnnounceConfigError(f"{where}: give {key}_env or {key}_file, not both")
    if by_env is not None:
        if not isinstance(by_env, str) or by_env not in env or not env[by_env]:
            raise AnnounceConfigError(f"{where}: {key}_env: the variable {by_env!r} is not set")
        return env[by_env].strip()
    if by_file is not None:
        try:
            return Path(str(by_file)).read_text("utf-8").strip()
        except OSError as exc:
            raise AnnounceConfigError(
                f"{where}: {key}_file: cannot read {by_file}: {exc.strerror}"
            ) from None
    if key in table:
        raise AnnounceConfigError(
            f"{where}: {key} must not be written in the file; use {key}_env or {key}_file"
        )
    return ""


def _strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or not value:
        raise AnnounceConfigError(f"{where}: expected a non-empty list of strings")
    return list(value)


def _template(text: object, event: str, where: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise AnnounceConfigError(f"{where}: expected a non-empty string")
    used = set(re.findall(r"{([^{}:!]*)", text.replace("{{", "").replace("}}", "")))
    unknown = used - TEMPLATE_FIELDS[event]
    if unknown:
        raise AnnounceConfigError(
            f"{where}: unknown field(s) {', '.join(sorted(unknown))}; "
            f"use {', '.join(sorted(TEMPLATE_FIELDS[event]))}"
        )
    return text


def _destination(table: object, where: str, env: Mapping[str, str]) -> Destination:
    if not isinstance(table, dict):
        raise AnnounceConfigError(f"{where}: expected a table")
    name = table.get("name")
    if not isinstance(name, str) or NAME_RE.fullmatch(name) is None:
        raise AnnounceConfigError(f"{where}.name: 1..48 characters of [a-z0-9-]")
    where = f"{where} ({name})"
    kind = table.get("kind")
    if kind not in KINDS:
        raise AnnounceConfigError(f"{where}.kind: one of {', '.join(KINDS)}")
    communities = _strings(table.get("communities", ["*"]), f"{where}.communities")
    for community in communities:
        if community != "*" and COMMUNITY_RE.fullmatch(community) is None:
            raise AnnounceConfigError(f"{where}.communities: {community!r} is not a community")
    events = _strings(table.get("events", list(EVENTS)), f"{where}.events")
    if unknown := set(events) - set(EVENTS):
        raise AnnounceConfigError(f"{where}.events: unknown {', '.join(sorted(unknown))}")
    templates = {
        e: _template(table.get(f"{e}_template", DEFAULT_TEMPLATES[e]), e, f"{where}.{e}_template")
        for e in EVENTS
    }
    if kind == "discourse":
        url = table.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise AnnounceConfigError(f"{where}.url: the forum's http(s) base URL")
        topic = table.get("topic_id")
        if isinstance(topic, bool) or not isinstance(topic, int) or topic <= 0:
            raise AnnounceConfigError(f"{where}.topic_id: the topic's number")
        username = table.get("api_username")
        if not isinstance(username, str) or not username:
            raise AnnounceConfigError(f"{where}.api_username: the user the posts are made as")
        api_key = _secret(table, "api_key", where, env)
        if not api_key:
            raise AnnounceConfigError(f"{where}: api_key_env or api_key_file is required")
        return Destination(
            name, kind, frozenset(c for c in communities if c != "*") if "*" not in communities
            else frozenset(), frozenset(events), Secret(url.rstrip("/")), templates,
            topic_id=topic, api_key=Secret(api_key), api_username=username,
        )  # fmt: skip
    url = _secret(table, "url", where, env)
    if not url.startswith(("http://", "https://")):
        raise AnnounceConfigError(f"{where}: url_env or url_file must hold an http(s) URL")
    secret = _secret(table, "secret", where, env) if kind == "webhook" else ""
    if kind == "webhook" and not secret:
        raise AnnounceConfigError(f"{where}: a webhook needs secret_env or secret_file")
    return Destination(
        name, kind, frozenset() if "*" in communities else frozenset(communities),
        frozenset(events), Secret(url), templates, secret=Secret(secret),
    )  # fmt: skip


def load(path: str, env: Mapping[str, str] | None = None) -> AnnounceConfig:
    environ = os.environ if env is None else env
    try:
        document = tomllib.loads(Path(path).read_text("utf-8"))
    except OSError as exc:
        raise AnnounceConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AnnounceConfigError(f"{path}: not TOML: {exc}") from None
    tables = document.get("destination")
    if not isinstance(tables, list) or not tables:
        raise AnnounceConfigError(f"{path}: no [[destination]] table")
    destinations = tuple(
        _destination(t, f"{path}: destination[{i}]", environ) for i, t in enumerate(tables)
    )
    names = [d.name for d in destinations]
    if len(set(names)) != len(names):
        raise AnnounceConfigError(f"{path}: destination names must be unique")
    image_url = document.get("image_url")
    if image_url is not None and not (
        isinstance(image_url, str) and image_url.startswith(("http://", "https://"))
    ):
        raise AnnounceConfigError(f"{path}: image_url must be an http(s) URL template")
    attempts = document.get("max_attempts", 6)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 50:
        raise AnnounceConfigError(f"{path}: max_attempts must be 1..50")
    timeout = document.get("timeout_seconds", 10.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 60:
        raise AnnounceConfigError(f"{path}: timeout_seconds must be in (0, 60]")
    return AnnounceConfig(destinations, image_url, attempts, float(timeout))
