"""Log lines: JSON in production, context carried, secrets redacted at any depth."""

from __future__ import annotations

import json
import logging
from typing import NamedTuple

import structlog

from colmena.config.logging import configure_logging, redact_secrets


class Credentials(NamedTuple):
    user: str
    api_key: str
    extra: dict[str, str]


class Pair(tuple[str, str]):
    """A tuple subclass whose constructor takes two arguments, not one iterable."""

    def __new__(cls, left: str, right: str) -> Pair:
        return super().__new__(cls, (left, right))


def test_redaction_reaches_nested_keys() -> None:
    event = {
        "event": "x",
        "Authorization": "Bearer abc",
        "nested": {"api_key": "k", "items": [{"client_secret": "s", "amount": 5}]},
        "webhook_signature": "sig",
        "note": "fine",
    }
    out = redact_secrets(None, "info", event)
    assert out["Authorization"] == "[redacted]"
    assert out["nested"]["api_key"] == "[redacted]"
    assert out["nested"]["items"][0] == {"client_secret": "[redacted]", "amount": 5}
    assert out["webhook_signature"] == "[redacted]"
    assert out["note"] == "fine"


def test_tuple_subclasses_are_redacted_without_raising() -> None:
    event = {
        "event": "x",
        "login": Credentials("ana", "k-123", {"password": "hunter2", "note": "fine"}),
        "pair": Pair("a", "b"),
        "nested": [({"token": "t"},)],
    }

    out = redact_secrets(None, "info", event)

    assert out["login"] == {
        "user": "ana",
        "api_key": "[redacted]",
        "extra": {"password": "[redacted]", "note": "fine"},
    }
    assert out["pair"] == ("a", "b")
    assert out["nested"] == [({"token": "[redacted]"},)]
    assert "hunter2" not in json.dumps(out) and "k-123" not in json.dumps(out)


def test_a_named_tuple_in_a_log_call_is_rendered_redacted(capsys) -> None:
    configure_logging(dev=False)
    try:
        structlog.get_logger("test").info(
            "login", who=Credentials("ana", "k-123", {"password": "hunter2"})
        )
        [line] = [json.loads(line) for line in capsys.readouterr().err.strip().splitlines()]
    finally:
        structlog.reset_defaults()
    assert line["who"] == {
        "user": "ana",
        "api_key": "[redacted]",
        "extra": {"password": "[redacted]"},
    }


def test_production_lines_are_json_with_context_and_no_secret(capsys) -> None:
    configure_logging(dev=False)
    try:
        with structlog.contextvars.bound_contextvars(request_id="r-1"):
            structlog.get_logger("test").info("hello", password="hunter2", tenant_id="t1")
        logging.getLogger("dramatiq").warning("stdlib line")
        lines = [json.loads(line) for line in capsys.readouterr().err.strip().splitlines()]
    finally:
        structlog.reset_defaults()
    assert lines[0]["event"] == "hello"
    assert lines[0]["request_id"] == "r-1"
    assert lines[0]["tenant_id"] == "t1"
    assert lines[0]["password"] == "[redacted]"
    assert "hunter2" not in json.dumps(lines)
    assert lines[1]["event"] == "stdlib line"


class Watched(dict[str, str]):
    """A log value that records whether any processor looked into it."""

    looked = False

    def items(self):
        type(self).looked = True
        return super().items()


def test_a_call_below_the_level_is_dropped_before_the_chain(capsys) -> None:
    previous_level = logging.getLogger().level
    configure_logging(dev=False, level="WARNING")
    try:
        log = structlog.get_logger("test")
        log.info("access line", detail=Watched(route="/x"))
        assert not Watched.looked, "nothing of a dropped call is processed"
        log.warning("kept", detail=Watched(route="/y"))
        lines = [json.loads(line) for line in capsys.readouterr().err.strip().splitlines()]
    finally:
        structlog.reset_defaults()
        logging.getLogger().setLevel(previous_level)
    assert [line["event"] for line in lines] == ["kept"]
    assert Watched.looked and lines[0]["detail"] == {"route": "/y"}
