"""colmena's one error root, and the one marker the retry machinery reads.

Every error colmena raises on purpose derives from `ColmenaError`. Whether retrying can help is
said once, by the attribute `retryable` (a class sets it; an instance may, say from an HTTP
status), and read in one place (`is_permanent`): the worker's retry policy dead-letters a
permanent failure at once and backs off on any other, and a gateway's own retry loop reads the
same attribute. Each gateway has its own root (`PacError`, `MercadoPagoError`, ...) whose
subclasses set the marker, so an actor lets a gateway error propagate instead of translating it.
This module imports nothing of colmena's, so every layer may use it.
"""

from __future__ import annotations


class ColmenaError(Exception):
    """Root of every error colmena raises on purpose. Retryable unless a subclass says not.

    `hint` says, in one line, what an operator can do about it ("set COLMENA_SMTP_HOST"); the
    dead-letter log line carries it, so `colmena dev` shows it on the console.
    """

    retryable: bool = True
    hint: str | None = None


class PermanentError(ColmenaError):
    """A failure that retrying cannot fix: the message goes straight to the dead letters."""

    retryable = False


class TransientError(ColmenaError):
    """A failure that may pass (a timeout, a 5xx, a lock held elsewhere): retry with backoff.

    `retry_after_s`, when an instance knows it (a lease that runs out then), is when the next
    attempt may succeed: the worker retries then instead of after the backoff, so waiting for
    it spends one retry, not all of them.
    """

    retryable = True

    def __init__(self, *args: object, retry_after_s: float | None = None) -> None:
        super().__init__(*args)
        self.retry_after_s = retry_after_s


class StartupError(PermanentError):
    """A process cannot start: a dependency is missing or wrong, a port is taken. The CLI prints
    it as one line and exits 2; a traceback is only for bugs."""


def is_permanent(exc: BaseException) -> bool:
    """Whether retrying `exc` cannot help: only an error that says so is permanent."""
    return isinstance(exc, ColmenaError) and not exc.retryable
