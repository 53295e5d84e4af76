"""The runtime refuses what would fail silently, and says why a message died.

A misspelt actor option, two actors or two scheduled jobs of one name are refused when declared;
a dead-lettered message is logged at ERROR with its actor, the exception, its message and hint.
"""

from __future__ import annotations

import json

import dramatiq
import pytest
from apscheduler.triggers.interval import IntervalTrigger
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Retries

from colmena.config import Settings
from colmena.errors import PermanentError
from colmena.runtime.broker import DeadLetterAlarm, create_broker, declare_actors
from colmena.runtime.publisher import BrokerPublisher
from colmena.runtime.registry import ActorSpec, actor
from colmena.runtime.resources import Resources
from colmena.runtime.scheduler import scheduled
from tests.fuzz_support import capture_logs


async def _noop(_resources: Resources) -> None:
    return None


async def _other(_resources: Resources) -> None:
    return None


def test_an_unknown_actor_option_is_refused(settings: Settings) -> None:
    broker = create_broker(settings)
    resources = Resources(
        settings, database_url="postgresql:///unused", publisher=BrokerPublisher(broker, "")
    )
    misspelt = ActorSpec(fn=_noop, name="misspelt", queue="q", options={"max_retires": 3})
    with pytest.raises(ValueError, match="actor 'misspelt' has unknown option"):
        declare_actors(broker, settings, resources, [misspelt])

    declare_actors(broker, settings, resources, [ActorSpec(_noop, "fine", "q", {"max_retries": 3})])
    assert broker.get_actor("fine").options["max_retries"] == 3


def test_two_actors_of_one_name_are_refused() -> None:
    actor(queue="q", name="test_registry_twin")(_noop)
    with pytest.raises(ValueError, match="two actors are named 'test_registry_twin'"):
        actor(queue="q", name="test_registry_twin")(_other)


def test_two_jobs_of_one_name_are_refused() -> None:
    trigger = IntervalTrigger(seconds=60)
    scheduled("test-registry-job", trigger)(_noop)
    scheduled("test-registry-job", trigger)(_noop)
    with pytest.raises(ValueError, match="two scheduled jobs are named 'test-registry-job'"):
        scheduled("test-registry-job", trigger)(_other)


class NotConfigured(PermanentError):
    hint = "set COLMENA_EXAMPLE"


def test_a_dead_letter_is_logged_with_its_reason_and_hint() -> None:
    broker = StubBroker(middleware=[Retries(max_retries=0), DeadLetterAlarm()])

    def refuses() -> None:
        raise NotConfigured("example is not configured")

    dramatiq.Actor(
        refuses, broker=broker, actor_name="refuses", queue_name="t_q", priority=0, options={}
    )
    worker = dramatiq.Worker(broker, worker_threads=1)
    worker.start()
    try:
        with capture_logs() as logs:
            message = broker.get_actor("refuses").send()
            broker.join("t_q", fail_fast=False)
            lines = [json.loads(line) for line in logs.since(0).splitlines()]
    finally:
        worker.stop()

    [line] = [entry for entry in lines if entry.get("event") == "message dead-lettered"]
    assert {key: line[key] for key in line if key not in ("timestamp", "logger")} == {
        "event": "message dead-lettered",
        "level": "error",
        "message_id": message.message_id,
        "actor": "refuses",
        "queue": "t_q",
        "retries": 1,
        "reason": "NotConfigured",
        "error": "example is not configured",
        "hint": "set COLMENA_EXAMPLE",
    }
