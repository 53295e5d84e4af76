"""A plan that shrinks under a running bot: what cannot be fitted stops the bot.

`fit_to_plan` already turns live mode off and drops extra symbols. Capital is different: it is
the stake the bot trades, and lowering it is the tenant's decision, so a bot whose capital is
over the new plan's limit is set to stopped with its config kept. The tenant API refuses to
start it again (409 config_over_plan) until a config that fits is stored (PUT /api/v1/bot/config
answers 422 for one that does not).
"""

from __future__ import annotations

import asyncpg
import structlog

from colmena.domain.tenants import capital_over_plan
from colmena.store import tenants as store

log = structlog.get_logger(__name__)


async def stop_over_capital(conn: asyncpg.Connection, bot: store.BotRow, plan: store.Plan) -> bool:
    """Stop the tenant's bot (in the caller's transaction) when its capital exceeds `plan`'s
    limit; whether it did. The caller's reconcile message carries the stop out."""
    capital = capital_over_plan(bot.config, plan.limits())
    if capital is None or bot.desired == "stopped":
        return False
    await store.set_desired(conn, bot.tenant_id, "stopped", reset_restarts=False)
    log.warning(
        "bot stopped: its capital is over the new plan's limit",
        tenant_id=bot.tenant_id,
        plan=plan.name,
        capital=str(capital),
        max_capital=str(plan.max_capital),
    )
    return True
