"""Progress of a long command, on a terminal only.

``pulse produce``, ``ingest``, ``import``, ``simulate``, ``rebuild``, ``badges backtest``
and ``dlq replay`` can run for minutes. On a terminal they redraw one line on stderr,
at most a few times a second::

    rebuild  41,250/100,000 [#########...........]  41%  3,412/s  ETA 0:17

and clear it before their one-line summary. When stderr is not a terminal (a pipe, a
log file, CI) they print nothing extra: their output stays what scripts parse.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

WIDTH = 20
REDRAW_SECONDS = 0.2


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """A progress line for ``what``: ``total`` items (``None``: unknown), ``advance``d
    as they are done. Use it as a context manager; it draws only when ``stream`` is a
    terminal (or ``enabled`` says so)."""

    def __init__(
        self,
        what: str,
        total: int | None = None,
        *,
        unit: str = "",
        stream: TextIO | None = None,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.total = total
        self.unit = unit
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = self._stream.isatty() if enabled is None else enabled
        self._clock = clock
        self._started = clock()
        self._drawn_at = float("-inf")
        self._width = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self._enabled and self._clock() - self._drawn_at >= REDRAW_SECONDS:
            self._draw()

    def line(self) -> str:
        """The line as it would be drawn now."""
        elapsed = max(self._clock() - self._started, 1e-9)
        rate = self.done / elapsed
        unit = f" {self.unit}" if self.unit else ""
        if self.total:
            share = min(1.0, self.done / self.total)
            filled = round(share * WIDTH)
            bar = "#" * filled + "." * (WIDTH - filled)
            left = (self.total - self.done) / rate if rate > 0 else None
            eta = f"  ETA {_duration(left)}" if left is not None else ""
            return (
                f"{self.what}  {self.done:,}/{self.total:,}{unit} [{bar}] {share:4.0%}"
                f"  {rate:,.0f}/s{eta}"
            )
        return f"{self.what}  {self.done:,}{unit}  {rate:,.0f}/s  {_duration(elapsed)}"

    def _draw(self) -> None:
        text = self.line()
        self._stream.write("\r" + text.ljust(self._width))
        self._stream.flush()
        self._width = len(text)
        self._drawn_at = self._clock()

    def close(self) -> None:
        """Clear the line (the command prints its own summary next)."""
        if self._enabled and self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
            self._width = 0
