"""The nodes of one RabbitMQ cluster, as colmena's own connections dial them.

Every node of a cluster serves every queue, so a connection may go to any of them. `BrokerNodes`
says which to try first (the one that answered last; after a connection to it was lost, the
next one) and whether a node's failure is news: an operator wants one warning when a node stops
answering, not one per reconnect. Nodes are named host:port in logs, never by their URL, which
carries the password.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

import structlog

from colmena.config.settings import BrokerUrls, amqp_urls

log = structlog.get_logger(__name__)

Opened = TypeVar("Opened")


def node_label(url: str) -> str:
    """host:port of an amqp URL, the way logs name a node."""
    parts = urlsplit(url)
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    host = parts.hostname or "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class BrokerNodes:
    """One process component's view of the cluster: an order to dial in, and who is down."""

    def __init__(self, urls: BrokerUrls) -> None:
        self.urls = amqp_urls(urls)
        self._first = 0
        self._down: set[str] = set()

    def in_order(self) -> list[str]:
        """Every node, the one to try first at the head."""
        return self.urls[self._first :] + self.urls[: self._first]

    def answered(self, url: str) -> bool:
        """Note that `url` answered, so it is tried first; True if it had been failing."""
        self._first = self.urls.index(url)
        if url in self._down:
            self._down.discard(url)
            return True
        return False

    def failed(self, url: str) -> bool:
        """Note that `url` did not answer; True if that is news (it had not been failing)."""
        if url in self._down:
            return False
        self._down.add(url)
        return True

    def lost(self, url: str) -> None:
        """A connection to `url` was lost: dial the next node first."""
        self._first = (self.urls.index(url) + 1) % len(self.urls)

    async def dial(
        self,
        open_node: Callable[[str], Awaitable[Opened]],
        unreachable: tuple[type[BaseException], ...],
    ) -> tuple[str, Opened] | None:
        """The first node, in order, that `open_node` opens, and what it opened; None when none
        answers. A node that stops or starts answering is logged once; an error that is not
        `unreachable` propagates."""
        for url in self.in_order():
            try:
                opened = await open_node(url)
            except unreachable as exc:
                if self.failed(url):
                    log.warning(
                        "broker node unreachable, using the others",
                        node=node_label(url),
                        error=str(exc) or type(exc).__name__,
                    )
                continue
            if self.answered(url):
                log.info("broker node answers again", node=node_label(url))
            return url, opened
        return None

    def labels(self) -> str:
        return ", ".join(node_label(url) for url in self.urls)
