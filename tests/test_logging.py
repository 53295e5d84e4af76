"""Log lines: JSON in production, context carried, secrets redacted at any depth."""

from __future__ import annotations

import json
import logging

import structlog

from colmena.config.logging import configure_logging, redact_secrets


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
