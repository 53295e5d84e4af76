"""What each rate source shows right now, as the observations the rate rules judge.

The one place that knows which gateway serves which `Source` and how the settings tune it. A
scrape is handed `fetch` as a collaborator, so the code that keeps the values imports no gateway.

`colmena dev` serves recorded sandboxes of both sources; `with_sandboxes` points the settings of
a process (dev itself, or an operator command reading dev's stack file) at them and marks those
sources, so whatever a scrape keeps from them is stored as sandbox data.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from urllib.parse import urlsplit

from colmena.config import Settings
from colmena.config.rates_settings import BINANCE_P2P_PUBLIC_URL
from colmena.domain.rates import Observation, Source, binance_observation
from colmena.gateways import bcv, binance

# The adv/search endpoint's path: the Binance sandbox serves it under its mount point.
BINANCE_SEARCH_PATH = urlsplit(BINANCE_P2P_PUBLIC_URL).path
# The URL setting of each source, and where its sandbox answers below the sandbox's base URL.
SANDBOX_URLS = {
    Source.BCV: ("bcv_url", "/"),
    Source.BINANCE: ("binance_p2p_url", BINANCE_SEARCH_PATH),
}


def with_sandboxes(settings: Settings, sandboxes: Mapping[str, str]) -> Settings:
    """`settings` with each source that has a sandbox in `sandboxes` (base URL by source name)
    and no URL configured (COLMENA_BCV_URL, COLMENA_BINANCE_P2P_URL) pointed at the sandbox and
    listed in `rates_sandbox_sources`. A configured URL always wins."""
    update: dict[str, object] = {}
    marked = list(settings.rates_sandbox_sources)
    for source, (setting, path) in SANDBOX_URLS.items():
        base = sandboxes.get(source.value)
        if base is None or setting in settings.model_fields_set:
            continue
        update[setting] = base.rstrip("/") + path
        if source.value not in marked:
            marked.append(source.value)
    if not update:
        return settings
    return settings.model_copy(update={**update, "rates_sandbox_sources": marked})


async def fetch(source: Source, settings: Settings, today: date) -> list[Observation]:
    """What `source` shows now, gateway retries included; a Binance reading is valid `today`
    (Caracas). A refusal or an empty book raises `colmena.domain.rates.RateSourceError`."""
    if source is Source.BCV:
        page = await bcv.scrape_bcv(
            settings.bcv_url,
            ca_bundle=settings.bcv_ca_bundle or bcv.DEFAULT_CA_BUNDLE,
            timeout=settings.rates_timeout_s,
            attempts=settings.rates_attempts,
            backoff=settings.rates_backoff_s,
            max_backoff=settings.rates_max_backoff_s,
        )
        return [Observation(pair, value, page.effective_date) for pair, value in page.rates.items()]
    book = await binance.fetch_p2p_book(
        settings.binance_p2p_url,
        pay_types=settings.binance_pay_types,
        timeout=settings.rates_timeout_s,
        attempts=settings.rates_attempts,
        backoff=settings.rates_backoff_s,
        max_backoff=settings.rates_max_backoff_s,
    )
    observation = binance_observation(
        book[binance.Side.BUY], book[binance.Side.SELL], top_n=settings.binance_top_n, today=today
    )
    return [observation]
