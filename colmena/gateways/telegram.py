"""colmena's own Telegram bot: one `sendMessage` per notification, in the Bot API's wire format.

`POST {COLMENA_TELEGRAM_API_URL}/bot<token>/sendMessage` with JSON `{"chat_id", "text"}`; the
API answers `{"ok": true, "result": <Message>}` or `{"ok": false, "error_code": ...,
"description": ..., "parameters": {"retry_after": N, "migrate_to_chat_id": ...}}`. Flood
control (429) says when to come back (`retry_after`, honoured), 5xx and lost connections are
retried with the usual backoff, and 400/401/403/404 are final: the chat does not exist, the bot
was blocked or removed, or the token is wrong; retrying cannot change them.

The bot token is part of the URL's path, so nothing here ever logs or returns a URL or an
exception's text that could hold one: errors are reduced to their type, status and Telegram's
`description`.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from colmena.config.settings import Settings
from colmena.config.shared_client import SharedClient
from colmena.gateways.tenant_webhooks import Attempt

FINAL_STATUSES = frozenset({400, 401, 403, 404})
MAX_ANSWER_BYTES = 65536


def telegram_session(settings: Settings) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(
            total=settings.notify_timeout_s, sock_connect=settings.notify_connect_timeout_s
        ),
        trust_env=False,
    )


async def _close(session: aiohttp.ClientSession) -> None:
    await session.close()


TELEGRAM_SESSION: SharedClient[aiohttp.ClientSession] = SharedClient(
    "telegram", telegram_session, _close
)


def _answer(raw: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _attempt(status: int, answer: dict[str, Any]) -> Attempt:
    if status == 200 and answer.get("ok") is True:
        return Attempt(True, status=status)
    description = str(answer.get("description") or f"HTTP {status}")[:200]
    parameters = answer.get("parameters")
    parameters = parameters if isinstance(parameters, dict) else {}
    code = answer.get("error_code", status)
    if code == 429 or status == 429:
        retry_after = parameters.get("retry_after")
        wait = float(retry_after) if isinstance(retry_after, int | float) else None
        return Attempt(False, status=status, error=description, retry_after_s=wait)
    if "migrate_to_chat_id" in parameters:
        description = (
            f"{description}; the group is now the supergroup {parameters['migrate_to_chat_id']}: "
            "register that chat id"
        )
    return Attempt(False, status=status, error=description, permanent=status in FINAL_STATUSES)


async def send_message(
    session: aiohttp.ClientSession, *, base_url: str, token: str, chat_id: int | str, text: str
) -> Attempt:
    """Send `text` to `chat_id` as plain text; what the attempt came to."""
    url = f"{base_url.rstrip('/')}/bot{token}/sendMessage"
    try:
        async with session.post(
            url, json={"chat_id": chat_id, "text": text}, allow_redirects=False
        ) as response:
            raw = await response.content.read(MAX_ANSWER_BYTES)
            return _attempt(response.status, _answer(raw))
    except TimeoutError:
        return Attempt(False, error="timed out")
    except aiohttp.ClientError as exc:
        return Attempt(False, error=type(exc).__name__)
