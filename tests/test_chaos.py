"""The short chaos run (bench/chaos.py) as a test: no accepted webhook lost, no effect twice.

500 signed webhooks for 250 payments (duplicates, refunds in any order) through a real ingress,
scheduler and two worker processes, while workers are SIGKILLed every few seconds, RabbitMQ is
restarted once and PostgreSQL refuses connections for 3 s.
"""

from __future__ import annotations

import pytest

from bench.chaos import print_report, run_chaos


@pytest.mark.chaos
async def test_short_chaos_run_loses_nothing_and_doubles_nothing(tmp_path) -> None:
    report = await run_chaos(
        events_count=500,
        rate=40.0,
        worker_count=2,
        kill_every_s=4.0,
        rabbit_fault="restart",
        seed=7,
        drain_timeout_s=180.0,
        log_dir=tmp_path / "logs",
    )
    print_report(report)
    assert report.worker_kills >= 2
    assert len(report.faults) == 2
    assert report.accepted == report.offered
    assert report.lost == 0
    assert report.wrong_state == 0
    assert report.missing_licenses == 0
    assert report.live_licenses_for_refunded == 0
    assert report.duplicate_licenses == 0
    assert report.duplicate_follow_ups == 0
    assert report.dead_letters == 0
