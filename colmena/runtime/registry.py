"""The actor registry: `actor(queue=...)` records a plain `async def`, nothing more.

Nothing touches a broker at import time. The entry points import the actor modules
(`colmena.actors.import_all`) and hand `registered_actors()` to `declare_actors`, which declares
them on a broker under the queue prefix: each test (and each deployment sharing a RabbitMQ) gets
its own queue names, and `colmena dev` can swap in the StubBroker.

`_ACTORS` is the one process-wide registry, filled at import by the decorator. A caller that
wants an actor changed (a bench timing one) passes changed specs to `declare_actors` instead of
editing it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

ActorFn = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class ActorSpec:
    fn: ActorFn
    name: str
    queue: str
    options: dict[str, Any] = field(default_factory=dict)


_ACTORS: dict[str, ActorSpec] = {}


def actor(*, queue: str, name: str | None = None, **options: Any) -> Callable[[ActorFn], ActorFn]:
    """Register an `async def fn(resources, *args)` as an actor on `queue`; returns fn unchanged.

    `options` are Dramatiq actor options (`max_retries`, `time_limit`, ...); a name the broker's
    middleware does not know is refused when the actor is declared, as `dramatiq.actor` does.
    """

    def register(fn: ActorFn) -> ActorFn:
        spec = ActorSpec(fn=fn, name=name or fn.__name__, queue=queue, options=options)
        if spec.name in _ACTORS and _ACTORS[spec.name].fn is not fn:
            raise ValueError(f"two actors are named {spec.name!r}")
        _ACTORS[spec.name] = spec
        return fn

    return register


def registered_actors() -> list[ActorSpec]:
    """Every actor registered so far (import the actor modules first)."""
    return list(_ACTORS.values())
