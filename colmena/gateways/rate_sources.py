"""What each rate source shows right now, as the observations the rate rules judge.

The one place that knows which gateway serves which `Source` and how the settings tune it. A
scrape is handed `fetch` as a collaborator, so the code that keeps the values imports no gateway.
"""

from __future__ import annotations

from datetime import date

from colmena.config import Settings
from colmena.domain.rates import Observation, Source, binance_observation
from colmena.gateways import bcv, binance


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
