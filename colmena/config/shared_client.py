"""The key of a process-wide client: how to make it from settings, and how to close it.

Declared by the module that builds the client (the mailer, the PAC gateway, the CSD signer),
and handed to `colmena.runtime.resources.Resources.shared`, the one owner that creates each
client once per process and closes it on shutdown. The key lives here, below every layer that
builds a client, so a gateway can declare its own without importing the runtime above it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from colmena.config.settings import Settings

ClientT = TypeVar("ClientT")


@dataclass(frozen=True, eq=False)
class SharedClient(Generic[ClientT]):
    """How to make (from settings) and close one process-wide client; the key is the object."""

    name: str
    create: Callable[[Settings], ClientT]
    close: Callable[[ClientT], Awaitable[None] | None] | None = None
