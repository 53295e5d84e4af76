"""Follow-ups a worker runs itself: the outbox rows an actor's transaction wrote for actors this
same worker consumes, run right after the message that wrote them instead of crossing RabbitMQ.

The loop worker opens a `LocalFollowUps` for each message it runs; `publish_now` (what actors
call after their commit) hands it the rows it takes, and publishes the rest. The worker then
runs the taken rows in the same task, once the message is acknowledged, and marks each row
published when its actor returned. The outbox row stays the backstop: until that mark, the
relay sees an unpublished row and, after its grace, publishes it, so a worker that dies (or
stops) between commit and mark loses nothing; at worst the follow-up runs twice, which its
idempotent actor absorbs (DESIGN.md rule 3).

Only a few rows per message are taken (`budget`): a message whose transaction fans out to many
follow-ups leaves the rest to RabbitMQ, where every worker shares them, and none waits in this
task long enough for the relay's grace to run out.

An actor may also leave, after its commit, a row as that commit wrote it (`leave_committed`),
and a follow-up run here may start from it (`committed`) instead of reading it again. It is a
snapshot, not a lock: anything may have changed the row since, so a follow-up that trusts it
writes only under a condition that the row is still as the snapshot has it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from contextvars import ContextVar
from typing import TypeVar

from colmena.store.outbox import OutboxMessage

LOCAL_RUNS_PER_MESSAGE = 4

Row = TypeVar("Row")

_OPEN: ContextVar[LocalFollowUps | None] = ContextVar("colmena_local_follow_ups", default=None)


class LocalFollowUps:
    """The rows taken while one message (and the follow-ups run after it) ran, in order."""

    def __init__(
        self, runs_here: Callable[[OutboxMessage], bool], *, budget: int = LOCAL_RUNS_PER_MESSAGE
    ) -> None:
        self._runs_here = runs_here
        self._budget = budget
        self._taken: list[OutboxMessage] = []
        self._next = 0
        self.committed: dict[tuple[type, Hashable], object] = {}

    def open(self) -> None:
        """Take rows in the current task (each asyncio task has its own context)."""
        _OPEN.set(self)

    def take(self, rows: Sequence[OutboxMessage]) -> list[OutboxMessage]:
        """Keep the rows this worker runs, while the budget lasts; returns the others."""
        others = []
        for row in rows:
            if len(self._taken) < self._budget and self._runs_here(row):
                self._taken.append(row)
            else:
                others.append(row)
        return others

    def next(self) -> OutboxMessage | None:
        """The next taken row to run, rows taken by the follow-ups themselves included."""
        if self._next == len(self._taken):
            return None
        self._next += 1
        return self._taken[self._next - 1]

    def rest(self) -> list[OutboxMessage]:
        """The taken rows not yet run, which are no longer to run here (the worker stops)."""
        rest, self._next = self._taken[self._next :], len(self._taken)
        return rest


def keep_local(rows: Sequence[OutboxMessage]) -> Sequence[OutboxMessage]:
    """The rows still to publish: all of them, unless a loop worker runs this task's message and
    takes some to run itself."""
    local = _OPEN.get()
    return rows if local is None else local.take(rows)


def leave_committed(key: Hashable, row: object) -> None:
    """Leave ``row``, as a transaction that just committed wrote it, to the follow-ups this
    loop worker runs after the current message; nothing outside a loop worker."""
    local = _OPEN.get()
    if local is not None:
        local.committed[type(row), key] = row


def committed(kind: type[Row], key: Hashable) -> Row | None:
    """The ``kind`` row left under ``key`` by the message (or follow-up) run before in this
    task, if any: a snapshot of a commit, which may have changed since."""
    local = _OPEN.get()
    row = None if local is None else local.committed.get((kind, key))
    return row if isinstance(row, kind) else None
