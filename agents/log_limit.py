"""Quiet logs during an outage: one line per second per dependency, with a count.

Kafka and Redis clients log every failed connection attempt; during an outage that is
dozens of lines a second which bury everything else. :class:`DependencyLogLimit` is a
handler filter: records from a dependency's loggers pass at most once per ``interval``
seconds, and the next line that passes says how many were held back since the last one.
Records of any other logger pass untouched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

# Logger name prefixes, per dependency.
DEPENDENCIES: Mapping[str, tuple[str, ...]] = {
    "kafka": ("kafka", "aiokafka", "faust.transport", "faust.tables"),
    "redis": ("redis",),
}


def dependency_of(logger_name: str) -> str | None:
    """The dependency whose client logged under ``logger_name``, if any."""
    for dependency, prefixes in DEPENDENCIES.items():
        for prefix in prefixes:
            if logger_name == prefix or logger_name.startswith(prefix + "."):
                return dependency
    return None


class DependencyLogLimit(logging.Filter):
    """Pass at most one record per ``interval`` seconds per dependency."""

    def __init__(self, interval: float = 1.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        # One decision per record, however many handlers share this filter.
        decided: bool | None = getattr(record, "pulse_log_limit", None)
        if decided is not None:
            return decided
        passes = self._decide(record)
        record.pulse_log_limit = passes
        return passes

    def _decide(self, record: logging.LogRecord) -> bool:
        dependency = dependency_of(record.name)
        if dependency is None:
            return True
        now = self._clock()
        last = self._last.get(dependency)
        if last is not None and now - last < self.interval:
            self._held[dependency] = self._held.get(dependency, 0) + 1
            return False
        self._last[dependency] = now
        held = self._held.pop(dependency, 0)
        if held:
            # Rendered once here so every handler shows the same line.
            record.msg = f"{record.getMessage()} [{held} more {dependency} log lines held back]"
            record.args = ()
        return True


def limit_dependency_logs(interval: float = 1.0) -> DependencyLogLimit:
    """Install one shared limit on every handler of the root logger; returns it."""
    limit = DependencyLogLimit(interval)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, DependencyLogLimit) for f in handler.filters):
            handler.addFilter(limit)
    return limit
