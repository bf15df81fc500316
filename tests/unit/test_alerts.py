"""The Prometheus alert rules (deploy/prometheus/alerts.yml) and their promtool unit tests
(deploy/prometheus/tests/*.yml).

promtool accepts the rules and both Prometheus configs that load them; the unit tests
pass; every alert has a case where it fires and one where it stays quiet; and those cases
notice an alert that always fires or never fires. promtool comes with the Debian
``prometheus`` package (``deploy/local/stack.sh install``, which deploy/local/test.sh runs
first): without it these tests skip on a workstation and fail in CI (``CI=true``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

PROMETHEUS = Path(__file__).parents[2] / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.yml"))
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        hint = "promtool is missing: it comes with `bash deploy/local/stack.sh install`"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{hint} (CI=true: the alert rules must be checked)")
        pytest.skip(hint)
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def seconds(duration: str) -> float:
    """A Prometheus duration ("90s", "1d16h", "1w12h") in seconds."""
    parts = re.findall(r"(\d+)(ms|[smhdwy])", duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(int(n) * UNITS[u] for n, u in parts)


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def cases() -> list[tuple[str, float, bool]]:
    """(alertname, eval time in seconds, expected to fire) for every case of every file."""
    found = []
    for path in TEST_FILES:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                found.append(
                    (case["alertname"], seconds(case["eval_time"]), bool(case["exp_alerts"]))
                )
    return found


def failed_cases(output: str) -> set[tuple[str, float]]:
    """(alertname, eval time) of each failure that ``promtool test rules`` reports."""
    return {
        (name, seconds(time))
        for name, time in re.findall(r"alertname: (\w+), time: ([0-9a-z]+),", output)
    }


def test_promtool_accepts_the_rules(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.local.yml"])
def test_promtool_accepts_config_and_rules(promtool: str, config: str) -> None:
    result = run(promtool, "check", "config", str(PROMETHEUS / config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
    assert "alerts.yml" in result.stdout + result.stderr


def test_the_alert_unit_tests_pass(promtool: str) -> None:
    assert TEST_FILES
    result = run(promtool, "test", "rules", *map(str, TEST_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TEST_FILES), result.stdout


def test_every_alert_has_a_case_that_fires_and_one_that_stays_quiet() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert len(names) == len(alert_rules()), "duplicate alert names"
    tested = cases()
    assert {name for name, _, _ in tested} == names
    for name in names:
        assert (name, True) in {(n, fires) for n, _, fires in tested}, f"{name} never fires"
        assert (name, False) in {(n, fires) for n, _, fires in tested}, f"{name} never quiet"


@pytest.mark.parametrize("mutant", ["always fires", "never fires"])
def test_the_cases_catch_an_alert_that_always_or_never_fires(
    promtool: str, mutant: str, tmp_path: Path
) -> None:
    """Every quiet case fails against an alert that always fires (at once: ``for``
    dropped), and every firing case against one that never does."""
    document = yaml.safe_load(ALERTS.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            rule["expr"] = "vector(1)" if mutant == "always fires" else "vector(1) < 0"
            if mutant == "always fires":
                rule.pop("for", None)
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(document))
    (tmp_path / "tests").mkdir()
    for path in TEST_FILES:
        shutil.copy(path, tmp_path / "tests" / path.name)

    result = run(promtool, "test", "rules", *map(str, sorted((tmp_path / "tests").glob("*.yml"))))

    assert result.returncode != 0
    failed = failed_cases(result.stdout + result.stderr)
    should_fail = {(name, at) for name, at, fires in cases() if fires == (mutant == "never fires")}
    assert should_fail
    assert should_fail <= failed, should_fail - failed
