"""Dramatiq's Prometheus series (dashboards and alerts read them), as the loop worker feeds them.

Dramatiq's Prometheus middleware updates them from its hooks; the loop worker calls no hook per
message, so it writes the same series itself, through the middleware's own metric objects (it
creates them at process boot, under the multiprocess directory the exposition server reads).
In multiprocess mode every update is a locked write into a memory-mapped file. The in-progress
gauge, which Dramatiq raises and lowers around every message (two writes), is kept as a plain
integer and written once per second by `flush`; the counters and the duration histogram are
written as they happen, so a scrape that sees a message dead-lettered also sees it counted.
Retries are counted once per retry (Dramatiq's hook counted the copy on Q.DQ and again when it
went back to Q).
"""

from __future__ import annotations

from typing import Any

from dramatiq.middleware.prometheus import Prometheus


class _Unmetered:
    """Stands in for every series when the broker has no Prometheus middleware."""

    def inc(self, amount: float = 1) -> None: ...

    def dec(self, amount: float = 1) -> None: ...

    def set(self, value: float) -> None: ...

    def observe(self, amount: float) -> None: ...


UNMETERED = _Unmetered()


class ActorMeter:
    """The series of one queue and actor, their labelled children looked up once."""

    total: Any
    errors: Any
    retries: Any
    rejects: Any
    delayed: Any
    durations: Any
    _running: Any

    def __init__(self, prometheus: Prometheus | None, queue: str, actor: str) -> None:
        self.running = 0
        self._reported_running = 0
        if prometheus is None or not hasattr(prometheus, "total_messages"):
            self.total = self.errors = self.retries = self.rejects = UNMETERED
            self.delayed = self.durations = self._running = UNMETERED
            return
        labels = (queue, actor)
        self.total = prometheus.total_messages.labels(*labels)
        self.errors = prometheus.total_errored_messages.labels(*labels)
        self.retries = prometheus.total_retried_messages.labels(*labels)
        self.rejects = prometheus.total_rejected_messages.labels(*labels)
        self.delayed = prometheus.inprogress_delayed_messages.labels(*labels)
        self.durations = prometheus.message_durations.labels(*labels)
        self._running = prometheus.inprogress_messages.labels(*labels)

    def started(self) -> None:
        self.running += 1

    def finished(self, duration_ms: int) -> None:
        self.running -= 1
        self.total.inc()
        self.durations.observe(duration_ms)

    def flush(self) -> None:
        """Write the in-progress count, if it changed since the last flush."""
        if self.running != self._reported_running:
            self._running.set(self.running)
            self._reported_running = self.running
