"""Web console settings: how long a signed-in browser stays signed in.

A session ends after COLMENA_CONSOLE_IDLE_MINUTES without a request (idle timeout) and, whatever
its use, COLMENA_CONSOLE_ABSOLUTE_HOURS after its login (absolute timeout): OWASP's session
management guidance, with its suggested ranges for an application that moves money. An idle
timeout longer than the absolute one is simply never reached.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class ConsoleSettings(BaseModel):
    console_idle_minutes: float = Field(
        default=30, gt=0, le=24 * 60, description="console sign-out after this long without use"
    )
    console_absolute_hours: float = Field(
        default=12, gt=0, le=24 * 30, description="console sign-out this long after login"
    )

    @property
    def console_idle_s(self) -> float:
        return self.console_idle_minutes * 60

    @property
    def console_absolute_s(self) -> float:
        return self.console_absolute_hours * 3600
