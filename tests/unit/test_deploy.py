"""Deployment files that cannot run here (no Docker engine) are checked for consistency:
docker-compose.yml, the Dockerfile, Prometheus config and rules, Grafana provisioning."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from agents.metrics import PulseMetrics
from agents.settings import ENV, Settings

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(ROOT / "docker-compose.yml")
    assert isinstance(data, dict)
    return data


def exported_metric_names() -> set[str]:
    registry = CollectorRegistry()
    PulseMetrics(registry)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {
        family.name + suffix for family in registry.collect() for suffix in suffixes[family.type]
    }


def test_compose_has_the_whole_deployment(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"kafka", "redis", "worker", "prometheus", "grafana"}
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
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
    targets = [
        t
        for job in prometheus["scrape_configs"]
        if job["job_name"] == "community-pulse"
        for group in job["static_configs"]
        for t in group["targets"]
    ]
    assert targets == [f"worker:{settings.web_port}"]


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


def test_alerts_and_dashboard_use_only_metrics_the_worker_exports() -> None:
    exported = exported_metric_names() | {"up"}
    texts = [
        rule["expr"]
        for group in load_yaml(DEPLOY / "prometheus" / "alerts.yml")["groups"]
        for rule in group["rules"]
    ]
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "community-pulse.json").read_text())
    texts += [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    assert len(texts) >= 8
    for text in texts:
        for name in re.findall(r"\b(pulse_[a-z_]+|up)\b", text):
            assert name in exported, f"{name} in {text!r} is not exported"


def test_grafana_datasource_matches_the_dashboard() -> None:
    source = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    uid = source["datasources"][0]["uid"]
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "community-pulse.json").read_text())
    uids = {panel["datasource"]["uid"] for panel in dashboard["panels"] if "datasource" in panel}
    assert uids == {uid}


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool comes with Prometheus (deploy/local/stack.sh install)",
)
@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.local.yml"])
def test_promtool_accepts_config_and_rules(config: str) -> None:
    result = subprocess.run(
        ["promtool", "check", "config", str(DEPLOY / "prometheus" / config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
