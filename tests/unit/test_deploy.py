"""Deployment files that cannot run here (no Docker engine) are checked for consistency:
docker-compose.yml, the Dockerfile, Prometheus config and rules, Grafana provisioning and
dashboards. The alert rules' behaviour is tested in test_alerts.py; the dashboards'
queries against a real Prometheus in tests/integration/test_prometheus.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client import CollectorRegistry

from agents.dependencies import DependencyHealth
from agents.health import CommunityHealthCollector
from agents.metrics import PulseMetrics
from agents.settings import ENV, Settings

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"

# The metric names promised to dashboards, alerts and the README (issue 5). A rename in
# the code must show up here, not as an empty panel.
CONTRACT = {
    "pulse_community_events_total",
    "pulse_events_invalid_total",
    "pulse_community_events_duplicate_total",
    "pulse_community_events_late_total",
    "pulse_processing_latency_seconds_bucket",
    "pulse_batch_size_bucket",
    "pulse_batch_duration_seconds_bucket",
    "pulse_redis_errors_total",
    "pulse_dlq_errors_total",
    "pulse_community_badges_awarded_total",
    "pulse_publish_errors_total",
    "pulse_community_moderation_flags_total",
    "pulse_community_segment_changes_total",
    "pulse_event_time_lag_seconds",
    "pulse_consumer_lag_messages",
    "pulse_community_members",
    "pulse_community_active_members",
    "pulse_community_new_members",
    "pulse_community_inactive_members",
    "pulse_community_engagement_ratio",
    "pulse_community_contributions_per_active_member",
    "pulse_community_first_response_seconds_bucket",
    "pulse_community_first_response_seconds_sum",
    "pulse_community_first_response_seconds_count",
    "pulse_community_feedback_rating_avg",
    "pulse_community_feedback_responses",
    "pulse_community_segment_members",
    "pulse_kafka_up",
    "pulse_redis_up",
}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(ROOT / "docker-compose.yml")
    assert isinstance(data, dict)
    return data


class NoCommunities:
    """A Reader stand-in with no community: the collector still yields every family."""

    def communities(self) -> list[str]:
        return []


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panel_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def exported_metric_names() -> set[str]:
    """Sample names the worker's /metrics registry exports: its own series and the
    community-health collector's."""
    registry = CollectorRegistry()
    PulseMetrics(registry)
    DependencyHealth(registry)
    registry.register(CommunityHealthCollector(NoCommunities))  # type: ignore[arg-type]
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {
        family.name + suffix for family in registry.collect() for suffix in suffixes[family.type]
    }


def test_compose_has_the_whole_deployment(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "kafka",
        "redis",
        "worker",
        "ingest",
        "web",
        "prometheus",
        "alertmanager",
        "grafana",
    }
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        assert "healthcheck" in service, f"{name} has no healthcheck"
    # Scalable: `docker compose up --scale worker=3` needs a worker without a host port.
    assert "ports" not in compose["services"]["worker"]
    assert compose["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == (
        "broker,controller"
    )


def test_compose_worker_environment_is_understood_by_the_settings(
    compose: dict[str, Any],
) -> None:
    worker = compose["services"]["worker"]
    env = {k: str(v) for k, v in worker["environment"].items()}
    assert set(env) <= set(ENV.values()), set(env) - set(ENV.values())
    resolved = {k: v.replace("${REDIS_PASSWORD:?set REDIS_PASSWORD}", "pw") for k, v in env.items()}
    settings = Settings.from_env(resolved)
    host, port = settings.kafka_bootstrap_servers[0].split(":")
    assert host in compose["services"]
    assert (
        f"PLAINTEXT://{host}:{port}"
        in compose["services"]["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    )
    assert "@redis:6379" in settings.redis_url.reveal()
    assert set(worker["depends_on"]) == {"kafka", "redis"}
    prometheus = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "community-pulse"]
    # Every replica, found through the compose DNS name of the service.
    assert job["dns_sd_configs"] == [
        {"names": ["worker"], "type": "A", "port": settings.web_port, "refresh_interval": "15s"}
    ]
    (manager,) = prometheus["alerting"]["alertmanagers"]
    assert manager["static_configs"][0]["targets"] == ["alertmanager:9093"]


def test_compose_file_is_valid_against_the_compose_specification(
    compose: dict[str, Any],
) -> None:
    schema = json.loads((Path(__file__).parent / "compose_spec" / "compose-spec.json").read_text())
    # The schema names draft-07 by a URL jsonschema does not recognise: say it here.
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(compose)


def test_compose_secrets_are_never_on_a_command_line(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        command = service.get("command", [])
        text = command if isinstance(command, str) else " ".join(map(str, command))
        assert "${" not in text, f"{name} interpolates a variable into its command line"
        for secret in ("PASSWORD", "SECRET"):
            assert secret not in text.upper().replace("REDISCLI_AUTH", ""), name
    redis = compose["services"]["redis"]
    assert "$$REDISCLI_AUTH" in redis["command"][-1]


def test_the_ingest_service_environment_is_understood_by_the_settings(
    compose: dict[str, Any],
) -> None:
    env = {k: str(v) for k, v in compose["services"]["ingest"]["environment"].items()}
    resolved = {k: ("s3cret" if "SECRET" in k else v) for k, v in env.items()}
    resolved = {k: ("" if v.startswith("${") else v) for k, v in resolved.items()}
    settings = Settings.from_env(resolved)
    assert settings.ingest_port == 6067
    assert settings.github_webhook_secret


def test_the_web_service_environment_is_understood_by_the_settings(
    compose: dict[str, Any],
) -> None:
    web = compose["services"]["web"]
    env = {k: str(v) for k, v in web["environment"].items()}
    assert set(env) <= set(ENV.values()), set(env) - set(ENV.values())
    resolved = {
        "PULSE_REDIS_URL": env["PULSE_REDIS_URL"].replace(
            "${REDIS_PASSWORD:?set REDIS_PASSWORD}", "pw"
        ),
        "PULSE_PUBLIC_URL": env["PULSE_PUBLIC_URL"].split(":-", 1)[1].rstrip("}"),
    }
    settings = Settings.from_env(resolved)
    assert "@redis:6379" in settings.redis_url.reveal()
    command = web["command"]
    port = command[command.index("--port") + 1]
    assert web["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert settings.public_url.endswith(f":{port}")
    assert f"127.0.0.1:{port}/" in " ".join(web["healthcheck"]["test"])


def test_compose_mounts_and_build_context_exist(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    build = compose["services"]["worker"]["build"]
    dockerfile = ROOT / build["context"] / build["dockerfile"]
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    assert 'CMD ["pulse", "worker"]' in dockerfile.read_text()


def test_the_worker_exports_every_metric_of_the_contract() -> None:
    missing = CONTRACT - exported_metric_names()
    assert missing == set()


def test_alerts_and_dashboard_use_only_metrics_the_worker_exports() -> None:
    exported = exported_metric_names() | {"up"}
    texts = [
        rule["expr"]
        for group in load_yaml(DEPLOY / "prometheus" / "alerts.yml")["groups"]
        for rule in group["rules"]
    ]
    boards = dashboards()
    assert set(boards) == {"community-health.json", "pipeline.json"}
    for board in boards.values():
        texts += panel_exprs(board)
        for variable in board["templating"]["list"]:
            texts.append(variable["query"]["query"])
    assert len(texts) >= 60
    used: set[str] = set()
    for text in texts:
        for name in re.findall(r"\b(pulse_[a-z_]+|up)\b", text):
            assert name in exported, f"{name} in {text!r} is not exported"
            used.add(name)
    # Every series of the contract is on a dashboard or in an alert.
    assert CONTRACT - used == set()


def test_dashboards_are_well_formed() -> None:
    boards = dashboards()
    titles = {board["title"] for board in boards.values()}
    assert titles == {"Community health", "Pipeline"}
    assert len({board["uid"] for board in boards.values()}) == len(boards)
    for name, board in boards.items():
        panels = board["panels"]
        assert len({p["id"] for p in panels}) == len(panels), f"{name}: duplicate panel ids"
        for panel in panels:
            pos = panel["gridPos"]
            assert pos["x"] >= 0, (name, panel["title"])
            assert pos["x"] + pos["w"] <= 24, (name, panel["title"])
            if panel["type"] == "row":
                continue
            assert panel["targets"], (name, panel["title"])
            assert panel["description"], (name, panel["title"])
            ref_ids = [t["refId"] for t in panel["targets"]]
            assert len(set(ref_ids)) == len(ref_ids), (name, panel["title"])
        (variable,) = board["templating"]["list"]
        assert variable["name"] == "community"
    health = boards["community-health.json"]
    (variable,) = health["templating"]["list"]
    assert variable["query"]["query"] == "label_values(pulse_community_members, community)"
    for expr in panel_exprs(health):
        if "pulse_community_" not in expr:
            continue
        assert 'community="$community"' in expr, expr
        if re.search(r"pulse_community_\w+_total\b", expr):
            # The worker's counters: per worker, so summed, and read as a rate or an
            # increase (a worker's restart resets them).
            assert re.search(r"\b(rate|increase)\(", expr), expr
        else:
            # Every worker exports the same Redis-backed gauges: combined with max(),
            # never summed.
            assert re.search(r"\bsum\b(?! by \(\w+\) \(max)", expr) is None, expr


def test_grafana_datasource_and_home_dashboard_match_the_dashboards(
    compose: dict[str, Any],
) -> None:
    source = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    uid = source["datasources"][0]["uid"]
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    for board in dashboards().values():
        uids = {panel["datasource"]["uid"] for panel in board["panels"] if "datasource" in panel}
        uids |= {t["datasource"]["uid"] for p in board["panels"] for t in p.get("targets", [])}
        assert uids == {uid}
    home = compose["services"]["grafana"]["environment"][
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
    ]
    assert home.startswith("/var/lib/grafana/dashboards/")
    assert (DASHBOARDS / home.removeprefix("/var/lib/grafana/dashboards/")).is_file()
