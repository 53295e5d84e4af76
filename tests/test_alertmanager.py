"""ops/alertmanager: the shipped config passes amtool, routes each severity where it says, and a
real Alertmanager on loopback (Debian's prometheus-alertmanager) delivers a critical alert by
email (an SMTP stand-in), to Slack and to the Teams bridge (a local receiver), with the shipped
routes and receivers; only the endpoints and the first wait are changed for the test."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.conftest import wait_for
from tests.ops_support import free_port
from tests.standins.smtp import SmtpStandin
from tests.standins.webhook_receiver import WebhookReceiver

ROOT = Path(__file__).parent.parent
CONFIG = ROOT / "ops" / "alertmanager" / "alertmanager.yml"
SHIPPED = yaml.safe_load(CONFIG.read_text())


def tool(name: str) -> str:
    binary = shutil.which(name)
    assert binary is not None, (
        f"{name} is needed (Debian's prometheus-alertmanager package; .ci/run installs it)"
    )
    return binary


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("amtool"), *args], check=False, capture_output=True, text=True, timeout=60
    )


def test_the_shipped_config_is_valid_and_prometheus_sends_to_it() -> None:
    result = amtool("check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 receivers" in result.stdout
    prometheus = yaml.safe_load((ROOT / "ops" / "prometheus" / "prometheus.yml").read_text())
    [target] = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert target == "alertmanager:9093"


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=ColmenaNoIngress", "severity=critical"], "ops-urgent"),
        (["alertname=ColmenaDeadLetters", "severity=warning"], "ops-chat"),
        (["alertname=Unlabelled"], "ops-email"),
    ],
)
def test_each_severity_is_routed_where_the_config_says(labels: list[str], receiver: str) -> None:
    result = amtool("config", "routes", "test", f"--config.file={CONFIG}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_every_receiver_emails_and_the_chat_ones_reach_slack_and_teams() -> None:
    receivers = {r["name"]: r for r in SHIPPED["receivers"]}
    assert all("email_configs" in r for r in receivers.values())
    for name in ("ops-chat", "ops-urgent"):
        assert receivers[name]["slack_configs"][0]["api_url_file"].startswith("/etc/alertmanager/")
        assert receivers[name]["webhook_configs"][0]["send_resolved"] is True
    assert SHIPPED["global"]["smtp_auth_password_file"].startswith("/etc/alertmanager/secrets/")
    assert "smtp_auth_password" not in SHIPPED["global"]  # the password lives in a file


@pytest.fixture
def smtp() -> Iterator[SmtpStandin]:
    with SmtpStandin() as standin:
        yield standin


def _local_config(tmp_path: Path, smtp: SmtpStandin, hooks_url: str) -> Path:
    """The shipped config, pointed at the stand-ins, with no first wait. The stand-in SMTP
    server takes mail without AUTH: Alertmanager only authenticates over TLS (amtool checks the
    shipped AUTH settings)."""
    config: dict[str, Any] = json.loads(json.dumps(SHIPPED))
    for name in ("smtp_auth_username", "smtp_auth_password_file"):
        del config["global"][name]
    slack = tmp_path / "slack_webhook_url"
    slack.write_text(f"{hooks_url}/slack")
    config["global"].update(smtp_smarthost=f"{smtp.host}:{smtp.port}", smtp_require_tls=False)
    for route in config["route"]["routes"]:
        route["group_wait"] = "0s"
    for receiver in config["receivers"]:
        for slack_config in receiver.get("slack_configs", []):
            slack_config["api_url_file"] = str(slack)
        for webhook in receiver.get("webhook_configs", []):
            webhook["url"] = f"{hooks_url}/teams"
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    return path


async def test_a_critical_alert_reaches_email_slack_and_teams(tmp_path: Path, smtp) -> None:
    hooks = WebhookReceiver()
    hooks_url = await hooks.start()
    port = free_port()
    log = tmp_path / "alertmanager.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                tool("prometheus-alertmanager"),
                f"--config.file={_local_config(tmp_path, smtp, hooks_url)}",
                f"--storage.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                if process.poll() is not None:
                    raise AssertionError(log.read_text(errors="replace"))
                try:
                    async with session.get(f"{base}/-/ready") as answer:
                        return answer.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(ready, timeout=30)
            alert = {
                "labels": {"alertname": "ColmenaNoIngress", "severity": "critical"},
                "annotations": {"summary": "no ingress answers"},
            }
            async with session.post(f"{base}/api/v2/alerts", json=[alert]) as answer:
                assert answer.status == 200, await answer.text()

            async def delivered() -> bool:
                return bool(hooks.at("/slack") and hooks.at("/teams") and smtp.messages)

            await wait_for(delivered, timeout=30)
    finally:
        process.terminate()
        process.wait(timeout=30)
        await hooks.stop()
    teams = json.loads(hooks.at("/teams")[0].body)
    assert teams["status"] == "firing" and teams["receiver"] == "ops-urgent"
    assert teams["commonLabels"]["alertname"] == "ColmenaNoIngress"
    slack = json.loads(hooks.at("/slack")[0].body)
    assert slack["channel"] == "#colmena-alerts"
    assert "ColmenaNoIngress (critical)" in slack["attachments"][0]["title"]
    [mail] = smtp.messages
    assert sorted(mail.rcpt_tos) == ["oncall@example.com", "ops@example.com"]
    assert "ColmenaNoIngress" in mail.message["Subject"]
