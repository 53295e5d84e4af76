"""The dev control routes: the in-process broker's queues, for the commands of a second terminal.

Mounted only by `colmena dev` on its in-process broker, as the sub-app `/dev` with its own
Bearer-token middleware; the token is in the dev runtime file (mode 0600), so only the user who
started dev can use them. `colmena status` and `colmena dlq` call them through
`colmena.runtime.queue_admin.DevControlQueueAdmin`. Dead letters travel in full (their bytes in
base64), so a second terminal can show the undecodable ones raw and export them.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from colmena.http.errors import ApiError
from colmena.runtime.queue_admin import InProcessQueueAdmin, depth_json, letter_json
from colmena.runtime.queues import DOMAIN_QUEUES

ADMIN = web.AppKey("dev_queue_admin", InProcessQueueAdmin)
TOKEN = web.AppKey("dev_control_token", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
    if not hmac.compare_digest(given, request.app[TOKEN].encode()):
        raise ApiError(401, "unauthorized", "the dev control token is missing or wrong")
    return await handler(request)


async def _queues(request: web.Request) -> tuple[list[str], dict[str, Any]]:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        raise ApiError(400, "invalid_json", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "the body is a JSON object")
    queues = body.get("queues", list(DOMAIN_QUEUES))
    if not isinstance(queues, list) or not set(queues) <= set(DOMAIN_QUEUES):
        raise ApiError(400, "unknown_queue", f"queues is a list of: {', '.join(DOMAIN_QUEUES)}")
    return queues, body


async def queue_depths(request: web.Request) -> web.Response:
    queues, _ = await _queues(request)
    depths = await request.app[ADMIN].depths(queues)
    return web.json_response({"queues": [depth_json(depth) for depth in depths]})


async def dead_letters(request: web.Request) -> web.Response:
    queues, _ = await _queues(request)
    letters = await request.app[ADMIN].dead_letters(queues)
    return web.json_response({"dead_letters": [letter_json(letter) for letter in letters]})


async def requeue_dead_letters(request: web.Request) -> web.Response:
    queues, body = await _queues(request)
    message_id = body.get("message_id")
    if message_id is not None and not isinstance(message_id, str):
        raise ApiError(400, "invalid_message_id", "message_id is a string")
    done = await request.app[ADMIN].requeue(queues, message_id)
    return web.json_response(
        {
            "requeued": [letter_json(letter) for letter in done.moved],
            "skipped": [letter_json(letter) for letter in done.skipped],
        }
    )


async def delete_dead_letter(request: web.Request) -> web.Response:
    _, body = await _queues(request)
    queue, ident = body.get("queue"), body.get("id")
    if queue not in DOMAIN_QUEUES:
        raise ApiError(400, "unknown_queue", f"queue is one of: {', '.join(DOMAIN_QUEUES)}")
    if not isinstance(ident, str) or not ident:
        raise ApiError(400, "invalid_id", "id is a message id or a position in the queue")
    deleted = await request.app[ADMIN].delete(queue, ident)
    return web.json_response({"deleted": None if deleted is None else letter_json(deleted)})


def control_app(admin: InProcessQueueAdmin, token: str) -> web.Application:
    """The `/dev` sub-app; the parent's middlewares (errors, limits) apply to it too."""
    app = web.Application(middlewares=[require_token])
    app[ADMIN] = admin
    app[TOKEN] = token
    app.router.add_post("/queues", queue_depths)
    app.router.add_post("/dead-letters", dead_letters)
    app.router.add_post("/dead-letters/requeue", requeue_dead_letters)
    app.router.add_post("/dead-letters/delete", delete_dead_letter)
    return app
