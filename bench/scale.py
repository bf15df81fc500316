"""S5: memory and throughput as members, communities and badge rules grow; rebuild time.

- members: for each member count, a workload in which every member acts at least once
  (the rest Zipf-skewed), run through one worker; then the worker's resident memory
  (with its member-state cache at ``PULSE_STATE_CACHE_MEMBERS``), Redis memory of the
  run's keys by kind (``MEMORY USAGE``; the engine ``state`` field of the member hashes
  as a kind of its own, with what it is made of), events/s, and the result checked
  against the input.
- communities / badge rules: the same, at a fixed member count, with more communities
  (more, smaller Lua calls per batch) or a larger badge catalog (``PULSE_BADGES_FILE``:
  the default catalog plus tiered count rules).
- rebuild: ``pulse rebuild --from-beginning`` after the worker stopped, over the
  workload whose member pool is S1's (the target compares it with S1's events/s) and
  over the largest one; timed, and extrapolated linearly to a 10M-event replay.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench import procs
from bench.runs import Context, run_ours
from bench.stack import (
    create_topic,
    delete_prefix,
    memory_by_category,
    preload,
    state_sections,
    used_memory,
    verify,
)
from bench.workload import DEFAULT_COMMUNITIES, Spec, Workload, build
from streams.activity import ACTIVITY_TYPES


def events_for(members: int, base: int) -> int:
    """Enough events that every member appears (80% cover events at most)."""
    return max(base, int(members * 1.25))


def spec_for(members: int, events: int, communities: int = len(DEFAULT_COMMUNITIES)) -> Spec:
    names: tuple[str, ...] = DEFAULT_COMMUNITIES
    if communities != len(DEFAULT_COMMUNITIES):
        names = tuple(f"community-{i:03d}" for i in range(communities))
    return Spec(
        events=events,
        members=members,
        communities=names,
        seed=5,
        cover_all_members=True,
        id_prefix=f"s5m{members}c{communities}",
    )


def badge_catalog(path: Path, extra_rules: int) -> Path:
    from streams.badges import DEFAULT_CATALOG_TOML

    lines = [DEFAULT_CATALOG_TOML]
    for i in range(extra_rules):
        kind = ACTIVITY_TYPES[i % len(ACTIVITY_TYPES)]
        lines.append(
            f'\n[badges.bench-{i:03d}]\nname = "Bench {i}"\ndescription = "Bench rule {i}."\n'
            f"tiers = {{ bronze = {5 + i}, silver = {50 + i}, gold = {500 + i} }}\n"
            f'when = [{{ kind = "count", type = "{kind}" }}]\n'
        )
    path.write_text("".join(lines))
    return path


def _one(
    ctx: Context,
    scenario: str,
    workload: Workload,
    extra_env: dict[str, str] | None = None,
    measure_memory: bool = True,
) -> dict[str, Any]:
    topic = ctx.names.topic(f"{scenario}.activity")
    create_topic(ctx.stack, topic)
    preload_s = preload(ctx.stack, topic, workload.messages)
    redis = ctx.stack.redis()
    before = used_memory(redis)
    # Bounded, but long enough for 1.25M events at 500 events/s (the 1M-member point).
    bounded = dataclasses.replace(ctx, timeout=max(ctx.timeout, workload.expected.events / 500))
    result = run_ours(
        bounded, scenario, topic, workload.expected, extra_env=extra_env, keep_keys=True
    )
    result["preload_s"] = round(preload_s, 1)
    result["members"] = workload.expected.members
    result["communities"] = len(workload.spec.communities)
    if measure_memory:
        result["redis_used_memory_delta_mb"] = round((used_memory(redis) - before) / 2**20, 1)
        memory = memory_by_category(redis, ctx.names.prefix(scenario))
        result["redis_keys"] = memory["keys"]
        result["redis_mb"] = round(memory["bytes"] / 2**20, 1)
        result["redis_mb_by_kind"] = {
            k: round(v["bytes"] / 2**20, 2) for k, v in memory["by_kind"].items()
        }
        result["redis_bytes_per_member"] = round(memory["bytes"] / workload.expected.members)
        result["memory_sampled_one_in"] = memory["sampled_one_in"]
        result["largest_member_state_bytes"] = memory["largest_member_state_bytes"]
        result["member_state"] = state_sections(redis, ctx.names.prefix(scenario))
    result["topic"] = topic
    return result


def rebuild(ctx: Context, scenario: str, workload: Workload) -> dict[str, Any]:
    """Time ``pulse rebuild --from-beginning`` over the scenario's topic and keys."""
    probe = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "agents", "rebuild", "--help"],
        capture_output=True,
        cwd=procs.ROOT,
        timeout=60,
        check=False,
    )
    if probe.returncode != 0:
        return {"skipped": "TODO: `pulse rebuild` is not available yet (agents/rebuild.py)"}
    topic = ctx.names.topic(f"{scenario}.activity")
    env = procs.worker_env(ctx.stack, ctx.names, scenario, topic, procs.free_port(), ctx.worker_env)
    argv = [sys.executable, "-m", "agents", "rebuild", "--from-beginning", "--json"]
    for community in workload.spec.communities:
        argv += ["--community", community]
    started = time.monotonic()
    limit = max(1800.0, workload.expected.events / 400)
    try:
        done = subprocess.run(  # noqa: S603
            argv, env=env, capture_output=True, cwd=procs.ROOT, timeout=limit, check=False
        )
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {limit:.0f} s", "events": workload.expected.events}
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        return {
            "failed": f"exit {done.returncode}",
            "stderr": done.stderr.decode(errors="replace")[-800:],
        }
    events = workload.expected.events
    out: dict[str, Any] = {"seconds": round(elapsed, 1), "events": events}
    out["members"] = workload.expected.members
    try:
        report = orjson.loads(done.stdout)
        wanted = ("records_read", "seconds", "records_per_second", "deleted_keys")
        out["report"] = {k: report[k] for k in wanted if k in report}
    except orjson.JSONDecodeError:
        out["stdout"] = done.stdout.decode(errors="replace")[-400:]
    rate = events / elapsed
    # Wall time of the command, interpreter start-up and imports included.
    out["events_per_s"] = round(rate, 1)
    # The command's own time (the wipe, the awards scan and the replay): what it reports,
    # and what compares with S1, whose rate leaves the worker's start-up out.
    own = float(out.get("report", {}).get("seconds") or 0)
    out["replay_events_per_s"] = round(events / own, 1) if own > 0 else None
    out["extrapolated_10m_events_minutes"] = round(10_000_000 / rate / 60, 1)
    prefix = ctx.names.prefix(scenario)
    out["verified"] = verify(ctx.stack.redis(), prefix, workload.expected, "rebuild")
    return out


def run(
    ctx: Context,
    member_counts: list[int],
    base_events: int,
    community_counts: list[int],
    badge_extras: list[int],
    variant_members: int,
    variant_events: int,
    do_rebuild: bool,
) -> dict[str, Any]:
    from agents.settings import ENV, Settings

    cap = ctx.worker_env.get(ENV["state_cache_members"])
    results: dict[str, Any] = {
        "members": [],
        "communities": [],
        "badge_rules": [],
        "state_cache_members": int(cap) if cap else Settings().state_cache_members,
        "state_cache_default": cap is None,
    }
    redis = ctx.stack.redis()
    rebuilt: set[int] = set()
    if do_rebuild and member_counts:
        # S1's member pool (or the nearest count), and the largest.
        rebuilt = {
            min(member_counts, key=lambda m: abs(m - variant_members)),
            max(member_counts),
        }
    for members in member_counts:
        scenario = f"s5m{members}"
        workload = build(spec_for(members, events_for(members, base_events)), time.time())
        one = _one(ctx, scenario, workload)
        if members in rebuilt:
            one["rebuild"] = rebuild(ctx, scenario, workload)
        delete_prefix(redis, ctx.names.prefix(scenario))
        results["members"].append(one)
        del workload
    for communities in community_counts:
        scenario = f"s5c{communities}"
        workload = build(spec_for(variant_members, variant_events, communities), time.time())
        results["communities"].append(_one(ctx, scenario, workload, measure_memory=False))
        delete_prefix(redis, ctx.names.prefix(scenario))
    if badge_extras:
        workload = build(spec_for(variant_members, variant_events), time.time())
        for extra in badge_extras:
            scenario = f"s5b{extra}"
            path = badge_catalog(ctx.log_dir / f"badges-{extra}.toml", extra)
            env = {"PULSE_BADGES_FILE": str(path)} if extra else {}
            one = _one(ctx, scenario, workload, extra_env=env, measure_memory=False)
            one["badge_rules"] = 8 + extra
            results["badge_rules"].append(one)
            delete_prefix(redis, ctx.names.prefix(scenario))
    return results
