"""Dead letters: every queue's, with the actor, the reason and the first bytes; one in full;
requeue one; requeue a filtered set after a dry run that counts it.

The letters are read and moved by the same `QueueAdmin` as `colmena dlq` (browsed without being
acknowledged, so reading moves nothing), with the reason the worker recorded in PostgreSQL in
place of the traceback's last line. A letter that is not a Dramatiq message is listed raw (its
size and its first bytes escaped) and is never requeued: no actor could run it. Every requeued
letter gets an audit row (`deadletter.requeue`) naming the admin.

The bulk requeue posts its filter twice: the first answer is the dry run (how many letters the
filter takes now, and which), the second, confirmed, requeues what the filter takes at that
moment and says how many moved and how many were left in place.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiMapping

from colmena.http.console.core import HtmlError, form, see_other, translate
from colmena.http.console.operator_broker import BrokerUnavailable, broker_of
from colmena.http.console.operator_common import ADMIN, audited, connection, record, show
from colmena.runtime.deadletters import DeadLetter
from colmena.runtime.queues import DOMAIN_QUEUES
from colmena.store import deadletters as reasons_store

LIST_PATH = f"{ADMIN}/dead-letters"
MAX_FILTER = 200
MAX_BULK = 1000
SHOWN = 200


@dataclass(frozen=True)
class Filter:
    """Which letters: one queue or all, an actor, a piece of the reason (any case)."""

    queue: str | None = None
    actor: str | None = None
    reason: str | None = None

    def takes(self, letter: DeadLetter) -> bool:
        if self.queue is not None and letter.queue != self.queue:
            return False
        if self.actor is not None and letter.actor != self.actor:
            return False
        return self.reason is None or self.reason.casefold() in letter.error.casefold()

    @property
    def queues(self) -> list[str]:
        return [self.queue] if self.queue is not None else list(DOMAIN_QUEUES)

    def query(self) -> str:
        return urlencode(self.fields())

    def fields(self) -> list[tuple[str, str]]:
        return [
            (name, value)
            for name, value in (
                ("queue", self.queue),
                ("actor", self.actor),
                ("reason", self.reason),
            )
            if value
        ]


def _filter(values: MultiMapping[str]) -> Filter:
    found: dict[str, str | None] = {}
    for name in ("queue", "actor", "reason"):
        value = values.get(name, "").strip()
        if len(value) > MAX_FILTER or "\x00" in value:
            raise HtmlError(400, "That filter is too long or not text")
        found[name] = value or None
    if found["queue"] is not None and found["queue"] not in DOMAIN_QUEUES:
        raise HtmlError(400, "Unknown queue")
    return Filter(**found)


def _unavailable(request: web.Request, exc: BrokerUnavailable) -> HtmlError:
    return HtmlError(503, f"{translate(request, 'The broker did not answer')}: {exc}")


async def _letters(request: web.Request, chosen: Filter) -> list[DeadLetter]:
    """The filter's letters, oldest first per queue, each with its recorded reason."""
    try:
        letters = await broker_of(request).dead_letters(chosen.queues)
    except BrokerUnavailable as exc:
        raise _unavailable(request, exc) from None
    ids = [letter.message_id for letter in letters if not letter.undecodable]
    async with connection(request) as conn:
        known = await reasons_store.reasons(conn, ids)
    with_reasons = [
        replace(letter, error=known[letter.message_id])
        if not letter.undecodable and letter.message_id in known
        else letter
        for letter in letters
    ]
    return [letter for letter in with_reasons if chosen.takes(letter)]


async def dead_letters(request: web.Request) -> web.Response:
    chosen = _filter(request.query)
    letters = await _letters(request, chosen)
    counts = {queue: 0 for queue in chosen.queues}
    for letter in letters:
        counts[letter.queue] += 1
    return show(
        request,
        "deadletters.html",
        {
            "letters": letters[:SHOWN],
            "total": len(letters),
            "shown": min(len(letters), SHOWN),
            "counts": counts,
            "filter": chosen,
            "queues": DOMAIN_QUEUES,
            "actors": sorted({letter.actor for letter in letters if letter.actor}),
        },
    )


def _ident(request: web.Request) -> tuple[str, str]:
    queue, ident = request.match_info["queue"], request.match_info["ident"]
    if queue not in DOMAIN_QUEUES or len(ident) > MAX_FILTER:
        raise HtmlError(404, "No such dead letter")
    return queue, ident


async def _one(request: web.Request) -> DeadLetter:
    queue, ident = _ident(request)
    for letter in await _letters(request, Filter(queue=queue)):
        if letter.matches(ident):
            return letter
    raise HtmlError(404, "No such dead letter")


async def dead_letter(request: web.Request) -> web.Response:
    letter = await _one(request)
    return show(request, "deadletter.html", {"letter": letter})


async def _audit_requeued(request: web.Request, moved: list[DeadLetter]) -> None:
    async with audited(request) as conn:
        for letter in moved:
            await record(
                conn,
                request,
                action="deadletter.requeue",
                subject_kind="dead_letter",
                subject_id=letter.message_id,
                before={"queue": letter.queue, "actor": letter.actor, "reason": letter.error},
            )


async def requeue_one(request: web.Request) -> web.Response:
    await form(request)
    letter = await _one(request)
    if letter.undecodable:
        raise HtmlError(409, "This dead letter is not a Dramatiq message: it cannot be requeued")
    try:
        done = await broker_of(request).requeue(letter.queue, letter.message_id)
    except BrokerUnavailable as exc:
        raise _unavailable(request, exc) from None
    await _audit_requeued(request, done.moved)
    if not done.moved:
        return see_other(
            request, LIST_PATH, notice=translate(request, "That dead letter was already gone")
        )
    notice = translate(request, "Requeued {count} dead letter(s)").format(count=len(done.moved))
    return see_other(request, f"{LIST_PATH}?queue={letter.queue}", notice=notice)


async def requeue_bulk(request: web.Request) -> web.Response:
    """First post: the dry run. Confirmed post: requeue what the filter takes now."""
    posted = await form(request)
    chosen = _filter(posted)
    letters = await _letters(request, chosen)
    movable = [letter for letter in letters if not letter.undecodable]
    if posted.get("confirmed") != "yes":
        return show(
            request,
            "deadletters_bulk.html",
            {
                "filter": chosen,
                "movable": movable,
                "undecodable": len(letters) - len(movable),
                "too_many": len(movable) > MAX_BULK,
                "limit": MAX_BULK,
            },
        )
    moved: list[DeadLetter] = []
    skipped = len(letters) - len(movable)
    broker = broker_of(request)
    requeued_ids: set[tuple[str, str]] = set()
    try:
        for letter in movable[:MAX_BULK]:
            if (letter.queue, letter.message_id) in requeued_ids:
                continue
            requeued_ids.add((letter.queue, letter.message_id))
            done = await broker.requeue(letter.queue, letter.message_id)
            moved += done.moved
    except BrokerUnavailable as exc:
        await _audit_requeued(request, moved)
        stopped = translate(request, "The broker stopped answering after {count} requeued")
        raise HtmlError(503, f"{stopped.format(count=len(moved))}: {exc}") from None
    await _audit_requeued(request, moved)
    notice = translate(
        request, "Requeued {moved} dead letter(s); {skipped} undecodable left in place"
    ).format(moved=len(moved), skipped=skipped)
    query = chosen.query()
    return see_other(request, LIST_PATH + (f"?{query}" if query else ""), notice=notice)
