"""A local stand-in for the Telegram Bot API's `sendMessage`, in its wire format.

`POST /bot<token>/sendMessage` with JSON `{"chat_id", "text"}` answers `{"ok": true, "result":
<Message>}` for a known chat. The errors are Telegram's shapes: an unknown token is 401
`Unauthorized`, an unknown chat 400 `Bad Request: chat not found`, a chat whose user blocked
the bot 403 `Forbidden: bot was blocked by the user`, and flood control 429 `Too Many
Requests: retry after N` with `parameters.retry_after`. Every request is recorded, sent
messages with their chat.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.standins.serving import serve


def _closing(response: web.Response) -> web.Response:
    """No keep-alive: stopping the stand-in then waits for no idle client connection."""
    response.force_close()
    return response


@dataclass
class TelegramStandin:
    token: str
    chats: set[int | str] = field(default_factory=set)
    blocked: set[int | str] = field(default_factory=set)
    flood: dict[int | str, int] = field(default_factory=dict)  # chat -> 429s still to answer
    retry_after: int = 1
    requests: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None

    @staticmethod
    def _error(status: int, description: str, **parameters: Any) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if parameters:
            body["parameters"] = parameters
        return _closing(web.json_response(body, status=status))

    async def _send_message(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return self._error(401, "Unauthorized")
        try:
            body = await request.json()
        except ValueError:
            return self._error(400, "Bad Request: can't parse JSON")
        chat, text = body.get("chat_id"), body.get("text")
        self.requests.append(body)
        if not isinstance(text, str) or not text:
            return self._error(400, "Bad Request: message text is empty")
        if chat in self.blocked:
            return self._error(403, "Forbidden: bot was blocked by the user")
        if chat not in self.chats:
            return self._error(400, "Bad Request: chat not found")
        if self.flood.get(chat, 0) > 0:
            self.flood[chat] -= 1
            return self._error(
                429,
                f"Too Many Requests: retry after {self.retry_after}",
                retry_after=self.retry_after,
            )
        message = {
            "message_id": next(self._ids),
            "date": int(time.time()),
            "chat": {"id": chat, "type": "private" if isinstance(chat, int) else "channel"},
            "text": text,
        }
        self.sent.append({"chat_id": chat, "text": text})
        return _closing(web.json_response({"ok": True, "result": message}))

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/bot{token}/sendMessage", self._send_message)
        self._runner, url = await serve(app)
        return url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
