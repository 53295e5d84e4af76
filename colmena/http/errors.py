"""The one shape every error takes over HTTP: {"error": {"code": ..., "message": ...}}."""

from __future__ import annotations

from typing import Any

from aiohttp import web


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    body: dict[str, Any] = {"error": {"code": code, "message": message, **extra}}
    return web.json_response(body, status=status)


class ApiError(Exception):
    """Raise from a handler to answer with a JSON error; the error middleware renders it.

    `close` ends the connection after the answer, for a client that should reconnect (and
    pay for it) before it asks again.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        close: bool = False,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status_code = status
        self.code = code
        self.error_message = message
        self.headers = headers or {}
        self.close = close
        self.extra = extra
