"""A TCP proxy that can choke one direction: the broker stops hearing the client mid-batch.

After `choke(after_bytes)`, the connections open at that moment forward only `after_bytes` more
bytes from client to server and swallow the rest, while server to client keeps flowing. A
publisher behind it gets confirms for the head of a batch (which RabbitMQ received) and none for
the tail (which it never saw) - a publish that fails midway, deterministically. Connections made
after the choke pass everything.
"""

from __future__ import annotations

import asyncio

from bench.standins.tcp_proxy import TcpProxy


class ChokingProxy(TcpProxy):
    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__(target_host, target_port)
        self._budgets: dict[asyncio.StreamWriter, int] = {}

    def choke(self, after_bytes: int) -> None:
        for upstream in self._upstreams:
            self._budgets[upstream] = after_bytes

    def _passed(self, writer: asyncio.StreamWriter, data: bytes) -> bytes:
        budget = self._budgets.get(writer)
        if budget is None:
            return data
        self._budgets[writer] = max(0, budget - len(data))
        return data[:budget]
