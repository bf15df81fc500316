"""The machine-readable result (``bench/results/latest.json``) and the Markdown table.

``render`` turns a result into the table of ``docs/performance.md``; with
``--write-docs`` the harness replaces the part of that file between the
``bench:results`` markers, so the documented numbers are always a real run's.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench.stack import Stack

ROOT = Path(__file__).resolve().parents[1]
START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"

PACKAGES = (
    "faust-streaming",
    "mode-streaming",
    "aiokafka",
    "redis",
    "hiredis",
    "orjson",
    "prometheus-client",
    "quixstreams",
    "confluent-kafka",
    "pyinstrument",
)


def machine(stack: Stack) -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            mem_kb = int(line.split()[1])
    versions: dict[str, str] = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    try:
        import confluent_kafka

        versions["librdkafka"] = confluent_kafka.libversion()[0]
    except ImportError:
        pass
    try:
        versions["redis-server"] = str(stack.redis().info("server")["redis_version"])
    except Exception:  # noqa: BLE001
        versions["redis-server"] = "unknown"
    versions["kafka-broker"] = _kafka_version()
    persistence: dict[str, Any] = {}
    try:
        client: Any = stack.redis()
        for name in ("appendonly", "appendfsync", "save", "maxmemory"):
            persistence.update(client.config_get(name))
    except Exception:  # noqa: BLE001 - CONFIG may be disabled on a managed Redis
        persistence = {"unknown": True}
    commit = subprocess.run(  # noqa: S603
        ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(  # noqa: S603
        ["git", "status", "--porcelain", "--", "agents", "streams"],  # noqa: S607
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "versions": versions,
        # AOF fsync and RDB snapshots (a fork per snapshot) cost Redis CPU during a run.
        "redis_persistence": persistence,
        "commit": commit + ("+uncommitted changes in agents/ or streams/" if dirty else ""),
    }


def _kafka_version() -> str:
    for jar in sorted((ROOT / ".local").glob("**/kafka_2.*-*.jar")):
        name = jar.name.removesuffix(".jar")
        if "-" in name and not name.endswith(("-sources", "-test", "-javadoc")):
            return name.split("-", 1)[1]
    pom = ROOT / "deploy/local/pom.xml"
    if pom.exists():
        text = pom.read_text()
        marker = "<kafka.version>"
        if marker in text:
            return text.split(marker, 1)[1].split("<", 1)[0]
    return "unknown"


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def _rate(entry: Any) -> float | None:
    if isinstance(entry, dict) and "events_per_s" in entry:
        return float(entry["events_per_s"])
    return None


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds, and ratios computed within each round, then their medians."""
    keys = sorted({k for r in rounds for k in r})
    medians = {k: median([v for r in rounds if (v := _rate(r.get(k))) is not None]) for k in keys}
    pairs = {
        "s1_over_s0_consume": ("s1", "s0_consume"),
        "s1_over_s0_redis": ("s1", "s0_redis"),
        "s2_over_s1": ("s2", "s1"),
        "s1_over_quix": ("s1", "s3_quix"),
        "s1_over_faust_naive": ("s1", "s3_faust_naive"),
        "s1_over_inprocess": ("s1", "inprocess"),
    }
    ratios: dict[str, float | None] = {}
    for name, (a, b) in pairs.items():
        values = []
        for r in rounds:
            x, y = _rate(r.get(a)), _rate(r.get(b))
            if x is not None and y:
                values.append(x / y)
        ratios[name] = round(statistics.median(values), 2) if values else None
    return {"median_events_per_s": medians, "ratios": ratios}


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, checked against this result (None: not measured)."""
    med = result["summary"]["median_events_per_s"]
    ratios = result["summary"]["ratios"]
    s1 = med.get("s1")
    s4 = result.get("s4", {}).get("load_50", {})
    p99 = s4.get("visible", {}).get("p99_ms") if isinstance(s4, dict) else None

    def check(value: float | None, ok: bool) -> dict[str, Any]:
        return {"value": value, "met": None if value is None else ok}

    return {
        "s1 >= 30000 events/s": check(s1, s1 is not None and s1 >= 30000),
        "s1 >= 50% of S0 consume": check(
            ratios.get("s1_over_s0_consume"), (ratios.get("s1_over_s0_consume") or 0) >= 0.5
        ),
        "s2 >= 1.7x s1": check(ratios.get("s2_over_s1"), (ratios.get("s2_over_s1") or 0) >= 1.7),
        "s1 >= 2x quix": check(ratios.get("s1_over_quix"), (ratios.get("s1_over_quix") or 0) >= 2),
        "s1 >= 5x faust naive": check(
            ratios.get("s1_over_faust_naive"), (ratios.get("s1_over_faust_naive") or 0) >= 5
        ),
        "p99 visible <= 250 ms at 50% load": check(p99, p99 is not None and p99 <= 250),
    }


def _by_round(rounds: list[dict[str, Any]], field: str) -> dict[str, list[float]]:
    """Per scenario, ``field`` of each round that measured it."""
    values: dict[str, list[float]] = {}
    for r in rounds:
        for key, entry in r.items():
            if isinstance(entry, dict) and field in entry:
                values.setdefault(key, []).append(float(entry[field]))
    return values


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}"
    return str(value)


def render(result: dict[str, Any]) -> str:
    m = result["machine"]
    med = result["summary"]["median_events_per_s"]
    ratios = result["summary"]["ratios"]
    rounds = len(result["rounds"])
    lines = [
        f"Run `{result['run_id']}` ({result['mode']} mode, {rounds} round(s), "
        f"{result['workload']['events']:,} events of {result['workload']['mean_bytes']:.0f} "
        f"bytes, {result['workload']['members']:,} members, "
        f"{len(result['workload']['communities'])} communities, 12 partitions, "
        f"batch {result['config']['batch_size']}), {result['started_at']}, commit "
        f"`{m['commit']}`. Load average at start/end: {result['load_start']} / "
        f"{result.get('load_end', '-')}.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, Linux {m['kernel']}. "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        "",
        "| scenario | events/s (median) | ÷ S0 consume | S1 ÷ this | notes |",
        "|---|---:|---:|---:|---|",
    ]
    s0 = med.get("s0_consume")
    s1 = med.get("s1")
    notes = {
        "s0_consume": "bare aiokafka + orjson.loads",
        "s0_redis": "same increments, pre-encoded RESP, one socket",
        "inprocess": "our batch pipeline in-process (no Kafka, no Faust)",
        "s1": "community-pulse, 1 worker, everything on",
        "s2": "community-pulse, 2 workers",
        "s3_quix": f"Quix Streams {m['versions'].get('quixstreams')} (state + Redis sink)",
        "s3_faust_naive": "Faust, one Redis round trip per event",
    }
    for key in ("s0_consume", "s0_redis", "inprocess", "s1", "s2", "s3_quix", "s3_faust_naive"):
        if key not in med:
            continue
        value = med[key]
        vs0 = f"{value / s0:.2f}" if value and s0 else "-"
        vs1 = f"{s1 / value:.2f}x" if value and s1 and key != "s1" else "-"
        lines.append(f"| {key} | {_fmt(value)} | {vs0} | {vs1} | {notes[key]} |")
    lines += [
        "",
        "Ratios (median of per-round ratios): "
        + ", ".join(f"{k} {_fmt(v, 2)}" for k, v in ratios.items()),
        "",
    ]
    for field, text in (
        (
            "reference_loop_ms",
            "How fast a core was, just before each scenario (ms for a fixed piece of Python, "
            "lower is faster), by round",
        ),
        ("machine_steal_cores", "Cores taken by the hypervisor (steal) during each, by round"),
    ):
        measured = _by_round(result["rounds"], field)
        if measured:
            rows = (f"{k} {' / '.join(_fmt(v, 2) for v in vs)}" for k, vs in measured.items())
            lines += [f"{text}: " + "; ".join(rows) + ".", ""]
    s4 = result.get("s4")
    if isinstance(s4, dict) and s4:
        lines += [
            "| S4 load | target / achieved events/s | visible p50 / p99 / p99.9 ms "
            "| award p50 / p99 / p99.9 ms | reference ms / steal cores |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, entry in s4.items():
            if not isinstance(entry, dict) or "visible" not in entry:
                continue
            v = entry["visible"]
            a = entry.get("award")
            award = (
                f"{_fmt(a['p50_ms'], 1)} / {_fmt(a['p99_ms'], 1)} / {_fmt(a['p99_9_ms'], 1)}"
                if isinstance(a, dict)
                else str(a)
            )
            lines.append(
                f"| {name} | {_fmt(entry['target_rate'])} / {_fmt(entry['achieved_rate'])} | "
                f"{_fmt(v['p50_ms'], 1)} / {_fmt(v['p99_ms'], 1)} / {_fmt(v['p99_9_ms'], 1)} "
                f"| {award} | {_fmt(entry.get('reference_loop_ms'), 1)} / "
                f"{_fmt(entry.get('machine_steal_cores'), 2)} |"
            )
        lines.append("")
    s5 = result.get("s5")
    if isinstance(s5, dict) and s5.get("members"):
        lines += [
            "| S5 members | events | events/s | worker peak RSS MB | Redis MB (run's keys) "
            "| leaderboards + windows MB per 100k members | by kind (MB) |",
            "|---:|---:|---:|---:|---:|---:|---|",
        ]
        for e in s5["members"]:
            k = e.get("redis_mb_by_kind", {})
            lbwin = (k.get("leaderboards") or 0) + (k.get("windows") or 0)
            kinds = ", ".join(
                f"{name} {mb:.1f}"
                for name, mb in sorted(k.items(), key=lambda kv: -kv[1])
                if mb >= 0.05
            )
            lines.append(
                f"| {_fmt(e['members'])} | {_fmt(e['events'])} | {_fmt(e['events_per_s'])} | "
                f"{_fmt(e['worker_peak_rss_mb'][0], 1)} | {_fmt(e.get('redis_mb'), 1)} | "
                f"{_fmt(lbwin * 100_000 / max(1, e['members']), 1)} | {kinds} |"
            )
        lines.append("")
        for e in s5["members"]:
            rb = e.get("rebuild")
            if rb:
                if "events_per_s" in rb:
                    lines.append(
                        "Rebuild (`pulse rebuild --from-beginning`) of "
                        f"{_fmt(rb['events'])} events: "
                        f"{rb['seconds']} s, {_fmt(rb['events_per_s'])} events/s; a 10M-event "
                        f"replay extrapolates to {rb['extrapolated_10m_events_minutes']} min."
                    )
                else:
                    lines.append(f"Rebuild: {rb}")
                lines.append("")
        for label, key, col in (
            ("communities", "communities", "communities"),
            ("badge rules", "badge_rules", "badge_rules"),
        ):
            rows = s5.get(key) or []
            if rows:
                lines.append(
                    f"Events/s by {label}: "
                    + ", ".join(f"{e[col]} -> {_fmt(e['events_per_s'])}" for e in rows)
                    + "."
                )
        lines.append("")
    t = result.get("targets", {})
    if t:
        lines += ["| target | value | met |", "|---|---:|---|"]
        for name, entry in t.items():
            met = {True: "yes", False: "**no**", None: "not measured"}[entry["met"]]
            lines.append(f"| {name} | {_fmt(entry['value'], 2)} | {met} |")
        lines.append("")
    return "\n".join(lines)


def write_docs(doc: Path, table: str) -> bool:
    if not doc.exists():
        return False
    text = doc.read_text()
    if START not in text or END not in text:
        return False
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    doc.write_text(f"{head}{START}\n{table}\n{END}{tail}")
    return True
