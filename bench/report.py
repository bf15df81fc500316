"""The machine-readable result (``bench/results/latest.json``) and the Markdown table.

``render`` turns a result into the table of ``docs/performance.md``; with
``--write-docs`` the harness replaces the part of that file between the
``bench:results`` markers, so the documented numbers are always a real run's.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
from collections.abc import Callable
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


def _median_field(
    rounds: list[dict[str, Any]], get: Callable[[dict[str, Any]], Any], digits: int = 1
) -> dict[str, float | None]:
    """Per scenario, the median over rounds of ``get(entry)`` (rounds without it left out)."""
    values: dict[str, list[float]] = {}
    for r in rounds:
        for key, entry in r.items():
            if not isinstance(entry, dict):
                continue
            value = get(entry)
            if isinstance(value, int | float) and math.isfinite(value):
                values.setdefault(key, []).append(float(value))
    return {k: round(statistics.median(v), digits) for k, v in values.items() if v}


CPU_PARTS = ("worker", "redis", "broker", "total")


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
    cpu: dict[str, dict[str, float | None]] = {}
    for part in CPU_PARTS:

        def get(entry: dict[str, Any], part: str = part) -> Any:
            return (entry.get("cpu_us_per_event") or {}).get(part)

        for key, value in _median_field(rounds, get).items():
            cpu.setdefault(key, {})[part] = value
    return {
        "median_events_per_s": medians,
        "ratios": ratios,
        # Worker + Redis + broker CPU per event (µs), each part's median and the total's.
        "median_cpu_us_per_event": cpu,
        "median_redis_commands_per_event": _median_field(
            rounds, lambda e: e.get("redis_commands_per_event"), 2
        ),
        "median_redis_cpu_us_per_event": _median_field(
            rounds, lambda e: e.get("redis_cpu_us_per_event")
        ),
    }


# The targets (see targets()).
RSS_MEMBERS = 1_000_000
RSS_LIMIT_MB = 300.0


def _s5_rebuild(result: dict[str, Any]) -> dict[str, Any] | None:
    """The S5 member workload with a rebuild whose member pool is nearest S1's."""
    s5 = result.get("s5")
    if not isinstance(s5, dict):
        return None
    pool = (result.get("workload") or {}).get("member_pool") or 0
    rebuilt = [
        e
        for e in s5.get("members") or []
        if isinstance(e.get("rebuild"), dict) and "events_per_s" in e["rebuild"]
    ]
    return min(rebuilt, key=lambda e: abs(e["members"] - pool)) if rebuilt else None


def _rss_target(result: dict[str, Any]) -> tuple[float | None, bool | None, str | None]:
    s5 = result.get("s5")
    if not isinstance(s5, dict):
        return None, None, None
    entries = [e for e in s5.get("members") or [] if e.get("members")]
    if not entries:
        return None, None, None
    default_cap = bool(s5.get("state_cache_default", True))
    at_target = [e for e in entries if e["members"] >= RSS_MEMBERS]
    if at_target:
        value = max(max(e["worker_peak_rss_mb"]) for e in at_target)
        if not default_cap:
            return value, None, f"cache cap overridden ({s5.get('state_cache_members')})"
        return value, value <= RSS_LIMIT_MB, None
    largest = max(entries, key=lambda e: e["members"])
    value = max(largest["worker_peak_rss_mb"])
    return value, None, f"1M members not run; at the largest, {largest['members']:,} members"


def s4_p99s(result: dict[str, Any]) -> list[float]:
    """S4's visible p99 at 50 % of S1's rate, one per run (``load_50`` or one per round,
    ``load_50_r1`` ...)."""
    s4 = result.get("s4")
    if not isinstance(s4, dict):
        return []
    return [
        entry["visible"]["p99_ms"]
        for name, entry in s4.items()
        if (name == "load_50" or name.startswith("load_50_r"))
        and isinstance(entry, dict)
        and entry.get("visible", {}).get("p99_ms") is not None
    ]


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, checked against this result (None: not measured)."""
    summary = result["summary"]
    med = summary["median_events_per_s"]
    ratios = summary["ratios"]
    cpu = summary.get("median_cpu_us_per_event") or {}
    commands = summary.get("median_redis_commands_per_event") or {}
    redis_us = summary.get("median_redis_cpu_us_per_event") or {}
    s1 = med.get("s1")
    p99 = median(s4_p99s(result))

    def check(value: float | None, ok: bool, note: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"value": value, "met": None if value is None else ok}
        if note:
            out["note"] = note
        return out

    def at_least(value: float | None, bound: float) -> dict[str, Any]:
        return check(value, value is not None and value >= bound)

    def at_most(value: float | None, bound: float) -> dict[str, Any]:
        return check(value, value is not None and value <= bound)

    rebuilt = _s5_rebuild(result)
    rebuild_ratio = None
    rebuild_note = None
    if rebuilt is not None and s1:
        rb = rebuilt["rebuild"]
        rate = rb.get("replay_events_per_s") or rb["events_per_s"]
        rebuild_ratio = round(rate / s1, 2)
        rebuild_note = f"{rate:,.0f} events/s over {rebuilt['members']:,} members"
    rss, rss_met, rss_note = _rss_target(result)
    rss_row = check(rss, bool(rss_met), rss_note)
    if rss_met is None:
        rss_row["met"] = None  # measured, but not at 1M members with the default cap
    return {
        "S1 >= 1.5x Quix Streams (S1 / s3_quix)": at_least(ratios.get("s1_over_quix"), 1.5),
        "S1 >= 4x naive Faust (S1 / s3_faust_naive)": at_least(
            ratios.get("s1_over_faust_naive"), 4
        ),
        "S1 Redis commands per event <= 12": at_most(commands.get("s1"), 12),
        "S1 Redis CPU per event <= 30 µs": at_most(redis_us.get("s1"), 30),
        "S1 CPU per event, worker + Redis + broker <= 110 µs": at_most(
            (cpu.get("s1") or {}).get("total"), 110
        ),
        "S2 CPU per event, workers + Redis + broker <= 110 µs": at_most(
            (cpu.get("s2") or {}).get("total"), 110
        ),
        "S4 p99 produce-to-visible <= 250 ms at 50% of S1's rate": at_most(p99, 250),
        "pulse rebuild >= 80% of S1's events/s (S5 rebuild / S1)": check(
            rebuild_ratio, rebuild_ratio is not None and rebuild_ratio >= 0.8, rebuild_note
        ),
        "worker peak RSS <= 300 MB at 1M members, default cache cap (S5)": rss_row,
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
    cpu = result["summary"].get("median_cpu_us_per_event") or {}
    commands = result["summary"].get("median_redis_commands_per_event") or {}
    redis_us = result["summary"].get("median_redis_cpu_us_per_event") or {}
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
        "| scenario | events/s (median) | ÷ S0 consume | S1 ÷ this "
        "| CPU µs/event: worker + Redis + broker = total | Redis commands/event "
        "| Redis CPU µs/event | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    s0 = med.get("s0_consume")
    s1 = med.get("s1")
    notes = {
        "s0_consume": "bare aiokafka + orjson.loads",
        "s0_redis": "our writes per batch as plain commands, pre-encoded RESP, one socket",
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
        parts = cpu.get(key) or {}
        split = " + ".join(_fmt(parts.get(p), 1) for p in CPU_PARTS[:-1])
        per_cpu = f"{split} = {_fmt(parts.get('total'), 1)}" if parts else "-"
        lines.append(
            f"| {key} | {_fmt(value)} | {vs0} | {vs1} | {per_cpu} | "
            f"{_fmt(commands.get(key), 2)} | {_fmt(redis_us.get(key), 1)} | {notes[key]} |"
        )
    lines += [
        "",
        "Ratios (median of per-round ratios): "
        + ", ".join(f"{k} {_fmt(v, 2)}" for k, v in ratios.items()),
        "",
        "CPU µs/event is cores used over the measured span x 1e6 / events/s, per process "
        "(worker: all of ours or the peer's; the in-process run has no broker). Redis "
        "commands count those a Lua script runs (INFO commandstats delta over the span, "
        "the benchmark's own INFO and polls left out).",
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
            "| award p50 / p99 / p99.9 ms | CPU µs/event | reference ms / steal cores "
            "| Redis forks |",
            "|---|---:|---:|---:|---:|---:|---:|",
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
                f"| {award} | {_fmt((entry.get('cpu_us_per_event') or {}).get('total'), 1)} "
                f"| {_fmt(entry.get('reference_loop_ms'), 1)} / "
                f"{_fmt(entry.get('machine_steal_cores'), 2)} "
                f"| {_fmt(entry.get('redis_forks'))} |"
            )
        lines.append("")
        p99s = s4_p99s(result)
        if len(p99s) > 1:
            lines += [
                f"S4 at 50 %, visible p99 by round: {' / '.join(_fmt(v, 1) for v in p99s)} ms; "
                f"median {_fmt(median(p99s), 1)} ms (the target's figure).",
                "",
            ]
    s5 = result.get("s5")
    if isinstance(s5, dict) and s5.get("members"):
        lines += _render_s5(s5, s1)
    t = result.get("targets", {})
    if t:
        lines += ["| target | value | met |", "|---|---:|---|"]
        for name, entry in t.items():
            met = {True: "yes", False: "**no**", None: "not measured"}[entry["met"]]
            if entry.get("note"):
                met += f" ({entry['note']})"
            lines.append(f"| {name} | {_fmt(entry['value'], 2)} | {met} |")
        lines.append("")
    return "\n".join(lines)


def _render_s5(s5: dict[str, Any], s1: float | None) -> list[str]:
    cap = s5.get("state_cache_members")
    cap_text = f"{cap:,}" if isinstance(cap, int) else "-"
    if s5.get("state_cache_default") is False:
        cap_text += ", set with --worker-env"
    else:
        cap_text += ", the default"
    lines = [
        f"Worker member-state cache (`PULSE_STATE_CACHE_MEMBERS`): {cap_text}.",
        "",
        "| S5 members | events | events/s | CPU µs/event | worker peak RSS MB "
        "| Redis MB (run's keys) | leaderboards + windows MB per 100k members "
        "| largest member state KB | by kind (MB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for e in s5["members"]:
        k = e.get("redis_mb_by_kind", {})
        lbwin = (k.get("leaderboards") or 0) + (k.get("windows") or 0)
        kinds = ", ".join(
            f"{name} {mb:.1f}"
            for name, mb in sorted(k.items(), key=lambda kv: -kv[1])
            if mb >= 0.05
        )
        largest = e.get("largest_member_state_bytes")
        lines.append(
            f"| {_fmt(e['members'])} | {_fmt(e['events'])} | {_fmt(e['events_per_s'])} | "
            f"{_fmt((e.get('cpu_us_per_event') or {}).get('total'), 1)} | "
            f"{_fmt(e['worker_peak_rss_mb'][0], 1)} | {_fmt(e.get('redis_mb'), 1)} | "
            f"{_fmt(lbwin * 100_000 / max(1, e['members']), 1)} | "
            f"{_fmt(largest / 1024 if largest is not None else None, 1)} | {kinds} |"
        )
    lines.append("")
    for e in s5["members"]:
        state = e.get("member_state")
        if isinstance(state, dict) and state.get("share_pct"):
            shares = ", ".join(f"{k} {v}%" for k, v in state["share_pct"].items())
            lines.append(
                f"Member state at {_fmt(e['members'])} members ({state['sampled']} sampled): "
                f"mean {_fmt(state['mean_bytes'])} B, median {_fmt(state['median_bytes'])} B, "
                f"max sampled {_fmt(state['max_bytes'])} B; JSON bytes by part: {shares}."
            )
    lines.append("")
    for e in s5["members"]:
        rb = e.get("rebuild")
        if not rb:
            continue
        if "events_per_s" in rb:
            replay = rb.get("replay_events_per_s")
            vs = [f"{replay / s1:.2f}x S1"] if replay and s1 else []
            if replay and e.get("events_per_s"):
                vs.append(f"{replay / e['events_per_s']:.2f}x the worker on the same topic")
            lines.append(
                f"Rebuild (`pulse rebuild --from-beginning`) at {_fmt(e['members'])} members, "
                f"{_fmt(rb['events'])} events: {rb['seconds']} s wall, "
                f"{_fmt(rb['events_per_s'])} events/s wall, {_fmt(replay)} events/s by its "
                f"own clock ({', '.join(vs) or '-'}); a 10M-event replay extrapolates to "
                f"{rb['extrapolated_10m_events_minutes']} min."
            )
        else:
            lines.append(f"Rebuild at {_fmt(e['members'])} members: {rb}")
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
    return lines


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
