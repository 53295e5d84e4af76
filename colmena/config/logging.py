"""structlog set-up: JSON lines in production, console in dev, secrets never rendered.

Context (request_id, message_id, actor, tenant_id) travels in contextvars so every line a request
or message causes carries it without passing loggers around.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any

import structlog

SECRET_KEY_PATTERN = re.compile(
    r"secret|token|passw|authorization|api[_-]?key|signature|cookie", re.I
)
REDACTED = "[redacted]"
# structlog's method names and their stdlib levels.
_LEVELS = {name.lower(): number for name, number in logging.getLevelNamesMapping().items()} | {
    "exception": logging.ERROR
}


def _redact(value: Any) -> Any:
    """A copy of `value` with every secret-named key's value replaced, at any depth.

    Containers come back as plain dicts, lists and tuples: rebuilding a subclass by calling its
    type can raise (a NamedTuple takes its fields one by one), and a log call must never raise.
    A NamedTuple becomes a dict of its fields, so a field named like a secret is redacted too.
    """
    if isinstance(value, Mapping):
        return {
            key: REDACTED
            if isinstance(key, str) and SECRET_KEY_PATTERN.search(key)
            else _redact(item)
            for key, item in value.items()
        }
    if isinstance(value, tuple):
        fields = getattr(type(value), "_fields", None)
        if isinstance(fields, tuple) and all(isinstance(name, str) for name in fields):
            return _redact(dict(zip(fields, value, strict=False)))
        return tuple(_redact(item) for item in value)
    if isinstance(value, list):
        return [_redact(item) for item in value]
    return value


def redact_secrets(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Replace the value of any key named like a secret, at any depth of the event."""
    return _redact(event_dict)


class LevelFirstLogger(structlog.stdlib.BoundLogger):
    """structlog's stdlib logger that asks the level before anything else: a call below it (the
    ingress's debug lines at INFO, its access line at WARNING) returns before structlog copies
    the context, builds the event and enters the processor chain only to drop it there. The
    check is `structlog.stdlib.filter_by_level`'s own."""

    def _proxy_to_logger(
        self, method_name: str, event: str | None = None, *event_args: str, **event_kw: Any
    ) -> Any:
        logger = self._logger
        if logger.disabled or _LEVELS[method_name] < logger.getEffectiveLevel():
            return None
        return super()._proxy_to_logger(method_name, event, *event_args, **event_kw)


def configure_logging(*, dev: bool, level: str = "INFO") -> None:
    """Route structlog and stdlib logging (dramatiq, aiohttp, pika) through one renderer."""
    renderer: Any = structlog.dev.ConsoleRenderer() if dev else structlog.processors.JSONRenderer()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    structlog.configure(
        # No level filter in the chain: LevelFirstLogger has dropped a call below the level
        # before the chain would merge context, stamp and redact it.
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=LevelFirstLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in (
        "pika",
        "aiormq",
        "aio_pika",
        "asyncio",
        "docker",
        "urllib3",
        "pgserver",
        "apscheduler",
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
