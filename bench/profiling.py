"""Flame summaries of profiles: where the time goes, by area and function.

``summarize_collapsed`` reads py-spy's collapsed stacks (the sampling profiler the
benchmark prefers: no overhead in the profiled process); ``summarize`` reads a
pyinstrument session (the fallback where ptrace is not allowed; its per-call hook
inflates call-heavy code such as redis-py's command packing). Both give: self time grouped by area
(our core, our shell, Faust/mode, the Kafka client, redis-py, prometheus_client, the
asyncio loop, idle time in ``select``), the functions with the most self time, and the
inclusive time of our own functions (``agents/``, ``streams/``).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

AREAS = (
    ("idle (select/epoll)", ("selectors.py",)),
    ("streams (core)", ("/streams/",)),
    ("agents (shell)", ("/agents/",)),
    ("faust/mode", ("/faust/", "/mode/")),
    ("kafka client", ("/aiokafka/", "/kafka/")),
    ("redis-py", ("/redis/",)),
    ("prometheus_client", ("/prometheus_client/",)),
    ("asyncio loop", ("/asyncio/",)),
    ("bench", ("/bench/",)),
)


def area(path: str | None) -> str:
    if not path:
        return "other"
    for name, needles in AREAS:
        if any(needle in path for needle in needles):
            return name
    if "/lib/python3" in path and "site-packages" not in path:
        return "stdlib (other)"
    return "other"


def _label(frame: Any) -> str:
    path = frame.file_path or ""
    for marker in ("/site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{frame.function} ({path}:{frame.line_no})"


def _split_frame(frame: str) -> tuple[str, str]:
    """``name (path:line)`` -> (name, path)."""
    name, _, rest = frame.partition(" (")
    return name, rest.rstrip(")").rpartition(":")[0]


def summarize_collapsed(path: Path, top: int = 20) -> dict[str, Any]:
    """Summarize py-spy ``--format raw`` output (collapsed stacks with sample counts)."""
    by_area: dict[str, float] = defaultdict(float)
    self_time: dict[str, float] = defaultdict(float)
    inclusive: dict[str, float] = defaultdict(float)
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames:
            continue
        leaf_name, leaf_path = _split_frame(frames[-1])
        by_area[area(leaf_path or None)] += count
        self_time[_short_frame(frames[-1])] += count
        seen: set[str] = set()
        for frame in frames:
            _, fpath = _split_frame(frame)
            if ("/agents/" in fpath or "/streams/" in fpath) and "site-packages" not in fpath:
                label = _short_frame(frame)
                if label not in seen:
                    seen.add(label)
                    inclusive[label] += count
    if not total:
        return {}

    def pct(n: float) -> float:
        return round(100 * n / total, 1)

    return {
        "samples": total,
        "by_area_pct": {k: pct(v) for k, v in sorted(by_area.items(), key=lambda kv: -kv[1])},
        "top_self_pct": [
            [name, pct(n)] for name, n in sorted(self_time.items(), key=lambda kv: -kv[1])[:top]
        ],
        "ours_inclusive_pct": [
            [name, pct(n)] for name, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]
        ],
    }


def _short_frame(frame: str) -> str:
    name, _, rest = frame.partition(" (")
    for marker in ("/site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in rest:
            rest = rest.split(marker, 1)[1]
            break
    return f"{name} ({rest}"


def summarize(session: Any, top: int = 20) -> dict[str, Any]:
    root = session.root_frame()
    if root is None:
        return {}
    total = root.time or 1e-9
    by_area: dict[str, float] = defaultdict(float)
    self_time: dict[str, float] = defaultdict(float)
    inclusive: dict[str, float] = defaultdict(float)

    def walk(frame: Any, open_labels: frozenset[str]) -> None:
        if frame.is_synthetic:
            return  # "[self]"/"[await]" frames: already in the parent's total_self_time
        label = _label(frame)
        own = frame.total_self_time
        by_area[area(frame.file_path)] += own
        self_time[label] += own
        path = frame.file_path or ""
        mine = ("/agents/" in path or "/streams/" in path) and "/site-packages/" not in path
        if mine and label not in open_labels:
            inclusive[label] += frame.time
            open_labels = open_labels | {label}
        for child in frame.children:
            walk(child, open_labels)

    walk(root, frozenset())

    def pct(seconds: float) -> float:
        return round(100 * seconds / total, 1)

    return {
        "seconds": round(total, 3),
        "by_area_pct": {k: pct(v) for k, v in sorted(by_area.items(), key=lambda kv: -kv[1])},
        "top_self_pct": [
            [name, pct(sec)] for name, sec in sorted(self_time.items(), key=lambda kv: -kv[1])[:top]
        ],
        "ours_inclusive_pct": [
            [name, pct(sec)] for name, sec in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]
        ],
    }
