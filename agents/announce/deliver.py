"""One POST, and what to do about its answer.

- 2xx: delivered.
- 429: wait as the answer says (``Retry-After`` seconds, or Discord's JSON
  ``retry_after``), then try again.
- 5xx, a timeout, a refused or dropped connection: try again after a backoff (0.5 s,
  doubling, at most 30 s).
- Any other 4xx: permanent; the message goes to the dead-letter topic with the reason.
After ``max_attempts`` tries that all asked to try again, it is dead-lettered too.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from agents.announce.render import Request

MAX_WAIT_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Answer:
    """``done``: delivered; ``wait`` not None: try again after that many seconds;
    otherwise permanent. ``reason``: for logs, metrics and dead letters."""

    done: bool
    wait: float | None
    reason: str


def backoff(attempt: int) -> float:
    return float(min(30.0, 0.5 * 2 ** (attempt - 1)))


def _retry_after(headers: object, body: bytes) -> float | None:
    value = getattr(headers, "get", lambda _k: None)("Retry-After")
    try:
        if value is not None:
            return max(0.0, float(value))
    except ValueError:
        pass
    try:
        document = orjson.loads(body)
        wait = document.get("retry_after") if isinstance(document, dict) else None
        if isinstance(wait, int | float) and not isinstance(wait, bool):
            return max(0.0, float(wait))
    except orjson.JSONDecodeError:
        pass
    return None


def classify(status: int, headers: object, body: bytes, attempt: int) -> Answer:
    if 200 <= status < 300:
        return Answer(True, None, "ok")
    if status == 429:
        wait = _retry_after(headers, body)
        return Answer(
            False,
            min(MAX_WAIT_SECONDS, wait if wait is not None else backoff(attempt)),
            "rate_limited",
        )
    if status >= 500:
        return Answer(False, backoff(attempt), f"http_{status}")
    return Answer(False, None, f"http_{status}")


def post(request: Request, timeout: float, attempt: int) -> Answer:
    outgoing = urllib.request.Request(  # noqa: S310 - http(s) checked when the config loads
        request.url, data=request.body, headers=request.headers, method="POST"
    )
    try:
        with urllib.request.urlopen(outgoing, timeout=timeout) as response:  # noqa: S310
            return classify(response.status, response.headers, response.read(65536), attempt)
    except urllib.error.HTTPError as exc:
        return classify(exc.code, exc.headers, exc.read(65536), attempt)
    except (TimeoutError, urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        kind = (
            "timeout"
            if isinstance(reason, TimeoutError) or "timed out" in str(reason)
            else "connection"
        )
        return Answer(False, backoff(attempt), kind)


def deliver(
    request: Request,
    max_attempts: int,
    timeout: float,
    on_retry: Callable[[str], None] = lambda _reason: None,
    sleep: Callable[[float], None] = time.sleep,
    send: Callable[[Request, float, int], Answer] = post,
) -> Answer:
    """Try until delivered, refused for good, or ``max_attempts`` tries asked to wait."""
    answer = Answer(False, None, "not tried")
    for attempt in range(1, max_attempts + 1):
        answer = send(request, timeout, attempt)
        if answer.done or answer.wait is None:
            return answer
        if attempt < max_attempts:
            on_retry(answer.reason)
            sleep(answer.wait)
    return Answer(False, None, f"retries_exhausted: {answer.reason}")
