"""The short chaos run (bench/chaos.py) as a test: no accepted webhook lost, no effect twice.

500 signed webhooks for 250 payments (duplicates, refunds in any order) through a real ingress,
scheduler and two worker processes, while workers are SIGKILLed every few seconds and this run's
own connections to RabbitMQ, then to PostgreSQL, are cut for 3 s behind proxies. The machine's
RabbitMQ itself is never restarted: others share it.

The distributed short form (`--distributed`, 600 webhooks) does the same beyond one machine: a
three-node RabbitMQ cluster of its own with quorum queues, a PostgreSQL primary with a
synchronous standby, two ingress, two worker and a scheduler host in network namespaces, while a
RabbitMQ node, the primary (the standby is promoted), an ingress host and a worker host are
SIGKILLed.

The bench runs as its own process (a crash or a hang of it cannot take pytest along) and hands
its report over as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
CHAOS = ROOT / "bench" / "chaos.py"


@pytest.mark.chaos
def test_short_chaos_run_loses_nothing_and_doubles_nothing(tmp_path: Path) -> None:
    report_file = tmp_path / "report.json"
    run = subprocess.run(
        [
            sys.executable,
            str(CHAOS),
            *("--events", "500", "--rate", "40", "--workers", "2", "--kill-every", "4"),
            *("--rabbit-fault", "proxy", "--seed", "7", "--drain-timeout", "180"),
            *("--log-dir", str(tmp_path / "logs"), "--json-report", str(report_file)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(run.stdout)
    assert report_file.exists(), f"no report; exit {run.returncode}:\n{run.stderr[-3000:]}"
    report = json.loads(report_file.read_text())
    assert report["faults"] == [
        "rabbitmq cut behind a proxy for 3 s",
        "postgresql refused connections for 3 s",
    ]
    assert report["worker_kills"] >= 2, "the workers were not killed during the run"
    assert report["accepted"] == report["offered"] == 500
    assert report["lost"] == 0
    assert report["wrong_state"] == 0
    assert report["missing_licenses"] == 0
    assert report["live_licenses_for_refunded"] == 0
    assert report["duplicate_licenses"] == 0
    assert report["duplicate_follow_ups"] == 0
    assert report["dead_letters"] == 0
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.mark.chaos
def test_short_distributed_chaos_run_loses_nothing_and_doubles_nothing(tmp_path: Path) -> None:
    report_file = tmp_path / "report.json"
    run = subprocess.run(
        [
            sys.executable,
            str(CHAOS),
            *("--distributed", "--events", "600", "--rate", "40", "--seed", "11"),
            *("--drain-timeout", "180", "--log-dir", str(tmp_path / "logs")),
            *("--json-report", str(report_file)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(run.stdout)
    assert report_file.exists(), f"no report; exit {run.returncode}:\n{run.stderr[-3000:]}"
    report = json.loads(report_file.read_text())
    assert report["faults"] == [
        "rabbitmq node 1 SIGKILLed",
        "rabbitmq node 1 restarted",
        "postgresql primary SIGKILLed, standby promoted",
        "ingress host 1 SIGKILLed",
        "worker host 1 SIGKILLed",
        "ingress host 1 and worker host 1 started again",
    ]
    assert report["accepted"] == report["offered"] == 600
    assert report["lost"] == 0
    assert report["wrong_state"] == 0
    assert report["missing_licenses"] == 0
    assert report["live_licenses_for_refunded"] == 0
    assert report["duplicate_licenses"] == 0
    assert report["duplicate_follow_ups"] == 0
    assert report["dead_letters"] == 0
    assert run.returncode == 0, run.stderr[-3000:]
