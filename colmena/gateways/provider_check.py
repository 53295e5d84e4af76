"""`--provider-check`: the providers' own records of a range against colmena's payments.

The provider is read over a window one day wider on each side than the range: a payment made
at 23:59:59 may be stamped the next second by the other side. Only the range itself is judged,
each way: a provider payment created in the range must be in colmena (whenever colmena
recorded it), and a colmena payment created in the range must be somewhere in the provider's
wider window. Memory is one page of the provider plus the set of ids it listed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from colmena.config import Settings
from colmena.domain.reconciliation import (
    Disagreement,
    compare_with_provider,
    missing_at_provider,
)
from colmena.gateways.mercadopago import MercadoPagoClient
from colmena.gateways.provider_records import (
    Page,
    ProviderRecordsError,
    mercadopago_pages,
    stripe_pages,
)
from colmena.store import reconciliation as store

MARGIN = timedelta(days=1)
CHECKABLE = ("stripe", "mercadopago")
Pages = Callable[[datetime, datetime], Iterator[Page]]


@dataclass(frozen=True)
class ProviderCheck:
    checked: tuple[str, ...]
    skipped: dict[str, str]  # provider -> why it was not checked
    disagreements: list[Disagreement]


def configured_sources(settings: Settings) -> tuple[dict[str, Pages], dict[str, str]]:
    """The providers whose records can be read with these settings, and why others cannot."""
    sources: dict[str, Pages] = {}
    skipped: dict[str, str] = {}
    stripe_key = settings.stripe_secret_key
    if stripe_key is not None:
        sources["stripe"] = lambda start, end: stripe_pages(
            api_key=stripe_key.get_secret_value(),
            api_base=settings.stripe_api_url,
            timeout_s=settings.stripe_timeout_s,
            start=start,
            end=end,
        )
    else:
        skipped["stripe"] = "COLMENA_STRIPE_SECRET_KEY is not set"
    token = settings.mercadopago_access_token
    if token is not None:
        client = MercadoPagoClient(
            access_token=token.get_secret_value(),
            base_url=settings.mercadopago_api_url,
            timeout_s=settings.mercadopago_timeout_s,
        )
        sources["mercadopago"] = lambda start, end: mercadopago_pages(client, start=start, end=end)
    else:
        skipped["mercadopago"] = "COLMENA_MERCADOPAGO_ACCESS_TOKEN is not set"
    return sources, skipped


async def check_provider(
    conn: asyncpg.Connection,
    provider: str,
    pages: Pages,
    start: datetime,
    end: datetime,
    *,
    fetch: int,
) -> list[Disagreement]:
    """Every disagreement between `provider`'s records and colmena's for [start, end)."""
    found: list[Disagreement] = []
    listed: set[str] = set()
    iterator = pages(start - MARGIN, end + MARGIN)
    while (page := await asyncio.to_thread(next, iterator, None)) is not None:
        listed.update(record.provider_payment_id for record in page)
        judged = [record for record in page if start <= record.created_at < end]
        held = await store.held_by_ids(conn, provider, [r.provider_payment_id for r in judged])
        for record in judged:
            found.extend(compare_with_provider(record, held.get(record.provider_payment_id)))
    async for provider_payment_id, row in store.held_between(
        conn, provider, start, end, fetch=fetch
    ):
        if provider_payment_id not in listed:
            found.append(missing_at_provider(provider, provider_payment_id, row))
    return found


async def run_provider_check(
    conn: asyncpg.Connection,
    settings: Settings,
    start: datetime,
    end: datetime,
    *,
    provider: str | None,
) -> ProviderCheck:
    """Check each configured provider (or only `provider`); ProviderRecordsError when none
    can be read, or when the one asked for is not configured."""
    sources, skipped = configured_sources(settings)
    wanted = [provider] if provider is not None else list(CHECKABLE)
    for name in wanted:
        if name not in CHECKABLE:
            raise ProviderRecordsError(f"{name} has no provider records to check against")
    usable = [name for name in wanted if name in sources]
    if not usable:
        reasons = "; ".join(f"{name}: {skipped[name]}" for name in wanted)
        raise ProviderRecordsError(f"no provider can be checked ({reasons})")
    found: list[Disagreement] = []
    for name in usable:
        found.extend(
            await check_provider(
                conn, name, sources[name], start, end, fetch=settings.report_fetch_rows
            )
        )
    return ProviderCheck(
        checked=tuple(usable),
        skipped={name: skipped[name] for name in wanted if name in skipped},
        disagreements=found,
    )
