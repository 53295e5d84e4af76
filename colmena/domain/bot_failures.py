"""What a tenant is told about a start of its bot that the runtime refused.

The runtime's own message (the engine's, or the supervisor's about the keys file) is for
operators: it can name host paths, the image, the engine's internals, and it is kept for them
(the "bot failed to start" log line, `bots.start_error`). A tenant is told which kind of failure
it was in one of a few fixed sentences, and not one byte of the runtime's text, so nothing
internal can leak through it whatever the engine says. The kinds need no more detail because a
tenant cannot cause or fix any of them: its config is validated before it is stored and its
keys travel as JSON, so a refused start is the operator's image, engine or host, and colmena
retries it with backoff on its own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class StartFailureKind(enum.StrEnum):
    KEYS_NOT_DELIVERED = "keys_not_delivered"
    PROGRAM_CANNOT_RUN = "program_cannot_run"
    ENGINE_REFUSED = "engine_refused"


@dataclass(frozen=True)
class StartFailure:
    """A refused start as a tenant may see it: a stable code and a sentence for people."""

    kind: StartFailureKind
    message: str


_MESSAGES = {
    StartFailureKind.KEYS_NOT_DELIVERED: "the bot could not be given its keys file",
    StartFailureKind.PROGRAM_CANNOT_RUN: "the bot's program could not be run",
    StartFailureKind.ENGINE_REFUSED: "the container engine refused to start the bot",
}
# Phrases of the runtime's message that say the kind, checked in this order (lower case).
# The keys file's failure comes first: its message quotes the shell, whose words overlap.
_PHRASES = (
    (StartFailureKind.KEYS_NOT_DELIVERED, ("keys not delivered",)),
    (
        StartFailureKind.PROGRAM_CANNOT_RUN,
        (
            "executable file not found",
            "no such file or directory",
            "exec format error",
            "permission denied",
        ),
    ),
)


def start_failure(error: str) -> StartFailure:
    """The tenant's view of the runtime's message `error`; unknown messages are the engine's
    refusal, the one kind that claims nothing about the cause."""
    said = error.lower()
    kind = next(
        (kind for kind, phrases in _PHRASES if any(p in said for p in phrases)),
        StartFailureKind.ENGINE_REFUSED,
    )
    return StartFailure(kind, _MESSAGES[kind])
