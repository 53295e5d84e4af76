"""ops/: Prometheus config and alert rules pass promtool (syntax and unit tests), and Grafana's
provisioning points at the dashboard and datasource the compose stack mounts."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).parent.parent
PROMETHEUS = ROOT / "ops" / "prometheus"
GRAFANA = ROOT / "ops" / "grafana"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary is not None, (
        "promtool is needed (Debian's prometheus package; .ci/run installs it)"
    )
    return subprocess.run(
        [binary, *args], check=False, cwd=PROMETHEUS, capture_output=True, text=True, timeout=60
    )


def test_prometheus_config_and_every_rule_file_are_valid() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    rule_files = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["rule_files"]
    on_disk = {
        path.relative_to(PROMETHEUS).as_posix()
        for path in PROMETHEUS.rglob("*.yml")
        if "groups" in (yaml.safe_load(path.read_text()) or {})
    }
    assert set(rule_files) == on_disk, "every rules file must be loaded by prometheus.yml"
    result = promtool("check", "rules", *rule_files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests_pass() -> None:
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_issue_alerts_exist() -> None:
    alerts = {
        rule["alert"]
        for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    assert {
        "ColmenaWebhookRejectionSpike",
        "ColmenaWebhookProcessingFailures",
        "ColmenaPaymentApprovalRateLow",
        "ColmenaDeadLetters",
        "ColmenaOutboxBacklogOld",
        "ColmenaRateSourceStale",
        "ColmenaBotsInCrashloop",
        "ColmenaCsdExpiring",
        "ColmenaIngressDown",
    } <= alerts


def test_grafana_provisions_the_dashboard_on_the_prometheus_datasource() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = dict(volume.split(":")[:2] for volume in compose["services"]["grafana"]["volumes"])
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    providers = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "colmena.yml").read_text()
    )
    dashboard_dir = providers["providers"][0]["options"]["path"]
    assert mounts["./ops/grafana/dashboards"] == dashboard_dir
    assert mounts["./ops/grafana/provisioning"] == "/etc/grafana/provisioning"
    uid = datasources["datasources"][0]["uid"]
    dashboard = json.loads((GRAFANA / "dashboards" / "colmena.json").read_text())
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert len(titles) == len(set(titles))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == uid, panel["title"]
            assert panel["targets"], panel["title"]


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    dashboard = json.loads((GRAFANA / "dashboards" / "colmena.json").read_text())
    rules = [
        {"record": f"dashboard:query_{index}", "expr": target["expr"]}
        for index, target in enumerate(
            t for panel in dashboard["panels"] for t in panel.get("targets", [])
        )
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
