"""Provider webhooks: verify on the raw bytes, commit to the inbox, then answer.

Rule 1 of DESIGN.md: 2xx only after the inbox row and its outbox message are committed; 503 when
PostgreSQL cannot be reached (providers retry); RabbitMQ being down changes nothing here, the
relay publishes later. Rule 2: a failed check is a 401, a counter and a security log line, and
nothing is stored. An event is keyed by signed values only (Stripe's signed event id, Mercado
Pago's signed manifest), so replayed headers with another body are the same event. Bodies and
secrets are never logged.

Mercado Pago's IPN (`?topic=payment&id=...`, no signature) is taken as a hint only: nothing of
the request but its topic and numeric id is kept, the actor fetches the resource from the API
(the authoritative state), and two limits keep strangers from driving those fetches: one stored
hint per id per window (`store.payment_hints`), and a global budget of hints per minute, beyond
which the answer is 429 (Mercado Pago retries later; the payment's signed webhook and the
reconciliation job do not depend on hints).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import time
from collections import deque
from typing import Any

import asyncpg
import structlog
from aiohttp import web
from prometheus_client import Counter

from colmena.config.metrics import SECURITY_EVENTS, WEBHOOKS
from colmena.domain import finite_json
from colmena.gateways import mercadopago, stripe
from colmena.http.context import RESOURCES, SETTINGS
from colmena.http.errors import ApiError
from colmena.http.middlewares import client_ip, record_failed_auth
from colmena.http.publishing import AFTER_COMMIT, AfterCommitPublisher
from colmena.runtime.resources import Resources
from colmena.store import inbox, payment_hints

log = structlog.get_logger(__name__)

DB_TIMEOUT_S = 5.0
# Events per statement at most (`InboxWriter`).
BATCH = 100
# Events queued that end a batch's wait (`InboxWriter`): a commit shared by this many already
# costs each little, and when every client waits on its answer no more may come.
ENOUGH = 16
IPN_TOPICS = ("payment", "merchant_order")
# Mercado Pago's payment and merchant order ids are integers.
_IPN_ID = re.compile(r"[0-9]{1,20}")
# TargetServerAttributeNotMatched: every host of a multi-host URL answered, none is writable
# (a failover under way, or a primary fenced read-only).
DATABASE_DOWN = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.TargetServerAttributeNotMatched,
    asyncio.TimeoutError,
)


def reject_webhook(
    request: web.Request, provider: str, status: int, outcome: str, message: str, reason: str
) -> ApiError:
    """Count and log a refused webhook as a security event; the caller raises what it returns."""
    _count(provider, outcome)
    SECURITY_EVENTS.labels(reason=f"webhook_{outcome}").inc()
    log.warning(
        "security: webhook rejected",
        provider=provider,
        outcome=outcome,
        reason=reason,
        client=client_ip(request),
    )
    return ApiError(status, outcome, message)


async def webhook_body(request: web.Request, provider: str) -> bytes:
    if request.content_type != "application/json":
        raise reject_webhook(
            request,
            provider,
            415,
            "unsupported_media_type",
            "send application/json",
            request.content_type,
        )
    return await request.read()


def _count(provider: str, outcome: str) -> None:
    _webhook_counter(provider, outcome).inc()


@functools.cache
def _webhook_counter(provider: str, outcome: str) -> Counter:
    """The counter child of one (provider, outcome): both are the callers' constants, so the
    cache is bounded, and `.labels()` (a lock and a dict) is paid once, not per webhook."""
    return WEBHOOKS.labels(provider=provider, outcome=outcome)


def json_text(body: bytes, payload: Any) -> str:
    """The JSON text to store for a parsed body: the body itself, as `json.loads` read it (a
    UTF-8 byte-order mark dropped), so nothing is encoded again; re-encoded only for a body
    `json.loads` took in another Unicode encoding."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return json.dumps(payload)
    return text.removeprefix("\ufeff")


# Stored events: two answers, encoded once.
_STORED = {
    duplicate: json.dumps({"received": True, "duplicate": duplicate}).encode()
    for duplicate in (False, True)
}


# An event waiting to be committed, the loop time by which its request must have its answer, and
# where that request waits for it (whether the event is new).
Waiting = tuple[inbox.ArrivedEvent, float, asyncio.Future[bool]]


class InboxWriter:
    """Group commit for webhooks: events that arrive while a batch is being committed are
    committed together in the next one, in one statement and one commit; the batch's messages
    then go to the after-commit publisher together.

    Most of what a webhook costs PostgreSQL and asyncpg is per statement and per commit (a round
    trip, parse and plan, a WAL flush, a backend woken up), so a batch divides it by its size.
    A batch is committed ``wait_s`` (COLMENA_INBOX_BATCH_WAIT_MS) after its first event was
    queued, or as soon as ENOUGH are queued: without the wait, at a few hundred webhooks a
    second, most events find no batch in flight and commit alone, each paying a commit of its
    own. The wait delays each answer by at most that much, far inside any provider's timeout.
    One batch at a time gives the largest batches and is enough: a statement of a hundred rows
    takes a few milliseconds, in which an ingress process receives far fewer events.

    Every request answers only once its own event is committed (DESIGN.md rule 1), and by its
    deadline: a batch's statement runs under the earliest deadline of its events, and an event
    whose deadline passed while it was queued is not written (one timer per batch, not one per
    request). A value jsonb cannot hold fails its whole batch (`asyncpg.DataError`): the batch
    is then written event by event, so only that event's request sees the error.
    """

    def __init__(
        self, resources: Resources, after_commit: AfterCommitPublisher, *, wait_s: float
    ) -> None:
        self.resources = resources
        self.after_commit = after_commit
        self.wait_s = wait_s
        self._waiting: deque[Waiting] = deque()
        # Loop time at which the first event of the queue was queued.
        self._gathering_since = 0.0
        self._enough = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    async def record(self, event: inbox.ArrivedEvent, deadline: float) -> bool:
        """Whether the event is new (False: a duplicate), once committed; TimeoutError at
        `deadline` (loop time), when the event may or may not be stored."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        if not self._waiting:
            self._gathering_since = loop.time()
        self._waiting.append((event, deadline, future))
        if len(self._waiting) >= ENOUGH:
            self._enough.set()
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())
        return await future

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                gathering_left = self._gathering_since + self.wait_s - loop.time()
                if gathering_left > 0 and len(self._waiting) < ENOUGH:
                    self._enough.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(gathering_left):
                            await self._enough.wait()
                batch: list[Waiting] = []
                now = loop.time()
                while self._waiting and len(batch) < BATCH:
                    waiting = self._waiting.popleft()
                    _, deadline, future = waiting
                    if deadline <= now:
                        _settle([waiting], TimeoutError())
                    elif not future.done():  # else its request was cancelled
                        batch.append(waiting)
                if batch:
                    await self._commit(batch)
        finally:  # no await since the queue was found empty: nothing can be left behind
            self._writer = None

    async def _commit(self, batch: list[Waiting]) -> None:
        try:
            async with asyncio.timeout_at(min(deadline for _, deadline, _ in batch)):
                async with self.resources.pool.acquire() as conn:
                    results = await inbox.record_with_messages(conn, [event for event, *_ in batch])
        except asyncpg.DataError as exc:
            if len(batch) == 1:
                _settle(batch, exc)
            else:  # one by one, so only the events at fault are refused
                for one in batch:
                    await self._commit([one])
        except Exception as exc:  # the database is down: every request of the batch answers 503
            _settle(batch, exc)
        except BaseException:  # the app is stopping: nobody will answer these requests
            for *_, future in batch:
                future.cancel()
            raise
        else:
            self.after_commit.submit([message for _, message in results])
            for (*_, future), (new, _) in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(new)


def _settle(batch: list[Waiting], exc: Exception) -> None:
    for *_, future in batch:
        if not future.done():
            future.set_exception(exc)


INBOX_WRITER = web.AppKey("inbox_writer", InboxWriter)


async def store_event(
    request: web.Request,
    *,
    provider: str,
    event_key: str,
    kind: str,
    document: str,
    actor: str,
    budget_per_minute: int | None = None,
    carried: bool = False,
) -> web.Response:
    """Commit the event (`document`, its JSON text) and its message; with a budget, refuse (429)
    once that many events of its kind arrived in the last minute (a soft bound: concurrent
    requests may pass it by a few). `carried`: the message published at once carries the
    document (`inbox.ArrivedEvent.carried`).

    PostgreSQL judges what jsonb can hold (it refuses NaN and Infinity, and NUL and unpaired
    surrogates in any string or key): such an event is a 400, since a 503 would have the provider
    send it again forever, and the failed statement stored nothing. Judging in PostgreSQL costs
    the hot path nothing; walking every parsed value first cost more than the insert's encoding.
    """
    event = inbox.ArrivedEvent(provider, event_key, kind, document, "payments", actor, carried)
    deadline = asyncio.get_running_loop().time() + DB_TIMEOUT_S
    try:
        if budget_per_minute is not None:
            async with asyncio.timeout_at(deadline):
                async with request.app[RESOURCES].pool.acquire() as conn:
                    recent = await payment_hints.recent_count(conn, seconds=60)
            if recent >= budget_per_minute:
                raise _over_budget(provider)
        new = await request.app[INBOX_WRITER].record(event, deadline)
    except asyncpg.DataError:
        raise reject_webhook(
            request,
            provider,
            400,
            "malformed",
            "the event holds values that cannot be stored",
            "not storable as jsonb",
        ) from None
    except DATABASE_DOWN as exc:
        _count(provider, "unavailable")
        log.error(
            "webhook not stored: database unavailable", provider=provider, error=type(exc).__name__
        )
        raise ApiError(
            503,
            "unavailable",
            "cannot store the event now; retry later",
            headers={"Retry-After": "30"},
        ) from None
    _count(provider, "accepted" if new else "duplicate")
    log.debug(
        "webhook stored", provider=provider, kind=kind, event_key=event_key, duplicate=not new
    )
    return web.Response(body=_STORED[not new], content_type="application/json")


def _over_budget(provider: str) -> ApiError:
    _count(provider, "over_budget")
    log.warning("unsigned hints over budget: refused for now", provider=provider)
    return ApiError(
        429, "over_budget", "too many notifications; retry later", headers={"Retry-After": "60"}
    )


async def stripe_webhook(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    secrets = settings.stripe_secrets()
    if not secrets:
        _count("stripe", "not_configured")
        raise ApiError(503, "not_configured", "Stripe webhooks are not configured")
    body = await webhook_body(request, "stripe")
    try:
        stripe.verify_signature(
            body,
            request.headers.get("Stripe-Signature"),
            secrets,
            tolerance_s=settings.stripe_tolerance_s,
        )
    except stripe.StripeSignatureError as exc:
        await record_failed_auth(request)
        raise reject_webhook(
            request, "stripe", 401, "invalid_signature", "signature verification failed", str(exc)
        ) from None
    try:
        event = stripe.parse_event(body)
    except stripe.StripeEventError as exc:
        raise reject_webhook(request, "stripe", 400, "malformed", str(exc), str(exc)) from None
    thin = stripe.is_thin(event)
    return await store_event(
        request,
        provider="stripe",
        event_key=event["id"],
        kind=event["type"],
        document=json_text(body, event),
        actor="settle_stripe_thin_event" if thin else "settle_stripe_event",
        # A v1 event is its own state: its message carries it, and is settled without a read.
        carried=not thin,
    )


def _mercadopago_notification(body: bytes) -> dict[str, Any]:
    try:
        payload = finite_json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python parses
        raise ValueError("body is not JSON") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
        raise ValueError("notification has no data object")
    if not isinstance(payload.get("type"), str) or not payload["type"]:
        raise ValueError("notification has no type")
    return payload


def _is_hint(request: web.Request) -> bool:
    """An IPN: unsigned, naming a topic. A signed notification always takes the signed path."""
    settings = request.app[SETTINGS]
    return (
        settings.mercadopago_ipn_enabled
        and "x-signature" not in request.headers
        and "topic" in request.query
    )


async def mercadopago_hint(request: web.Request) -> web.Response:
    """Store an IPN as a hint: its topic and id, nothing of the body, which nobody signed."""
    settings = request.app[SETTINGS]
    if settings.mercadopago_access_token is None:
        _count("mercadopago", "not_configured")
        raise ApiError(503, "not_configured", "Mercado Pago API access is not configured")
    topic, resource_id = request.query.get("topic", ""), request.query.get("id", "")
    if topic not in IPN_TOPICS:
        # Other topics (chargebacks, point integrations) carry nothing colmena acts on.
        _count("mercadopago", "ignored")
        return web.json_response({"received": True, "ignored": "topic not handled"})
    if not _IPN_ID.fullmatch(resource_id):
        raise reject_webhook(
            request, "mercadopago", 400, "malformed", "id must be a number", "IPN id not numeric"
        )
    return await store_event(
        request,
        provider="mercadopago",
        event_key=payment_hints.hint_key(
            topic, resource_id, now_s=time.time(), window_s=settings.mercadopago_ipn_window_s
        ),
        kind=topic,
        document=json.dumps({"type": topic, "data": {"id": resource_id}, "hint": "ipn"}),
        actor="settle_mercadopago_notification",
        budget_per_minute=settings.mercadopago_ipn_budget_per_minute,
    )


async def mercadopago_webhook(request: web.Request) -> web.Response:
    if _is_hint(request):
        return await mercadopago_hint(request)
    settings = request.app[SETTINGS]
    secrets = settings.mercadopago_secrets()
    if not secrets:
        _count("mercadopago", "not_configured")
        raise ApiError(503, "not_configured", "Mercado Pago webhooks are not configured")
    body = await webhook_body(request, "mercadopago")
    data_id = request.query.get("data.id")
    try:
        signed = mercadopago.verify_signature(
            x_signature=request.headers.get("x-signature"),
            x_request_id=request.headers.get("x-request-id"),
            data_id=data_id,
            secrets=secrets,
            tolerance_s=settings.mercadopago_tolerance_s,
        )
    except mercadopago.MercadoPagoSignatureError as exc:
        await record_failed_auth(request)
        raise reject_webhook(
            request,
            "mercadopago",
            401,
            "invalid_signature",
            "signature verification failed",
            exc.reason,
        ) from None
    try:
        payload = _mercadopago_notification(body)
    except ValueError as exc:
        raise reject_webhook(request, "mercadopago", 400, "malformed", str(exc), str(exc)) from None
    body_id = payload["data"].get("id")
    if not data_id or body_id is None or str(body_id) not in (data_id, data_id.lower()):
        raise reject_webhook(
            request,
            "mercadopago",
            400,
            "data_id_mismatch",
            "data.id in the query string must be present and match the body",
            "data.id mismatch",
        )
    # The body is not signed: its own `id` would let a replay of the signed headers with another
    # body store a new event (and cost a payments-API call) each time.
    return await store_event(
        request,
        provider="mercadopago",
        event_key=signed.manifest,
        kind=payload["type"],
        document=json_text(body, payload),
        actor="settle_mercadopago_notification",
    )


def setup(app: web.Application) -> None:
    app[INBOX_WRITER] = InboxWriter(
        app[RESOURCES], app[AFTER_COMMIT], wait_s=app[SETTINGS].inbox_batch_wait_ms / 1000
    )
    app.router.add_post("/webhooks/stripe", stripe_webhook)
    app.router.add_post("/webhooks/mercadopago", mercadopago_webhook)
