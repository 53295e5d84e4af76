"""Exchange-rate scraping settings: where to fetch, and what counts as a believable rate.

The defaults scrape the real BCV and Binance endpoints and work as they are in `colmena dev`.
The bounds are deliberately wide (years of inflation fit inside them): they catch a misplaced
decimal separator or a parse of the wrong number, while the percentage gate catches the rest.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

BCV_PUBLIC_URL = "https://www.bcv.org.ve/"
BINANCE_P2P_PUBLIC_URL = "https://p2p.binance.com/bapi/c2c/v2/friendly/c2c/adv/search"

# VES per unit of each pair colmena scrapes; a value outside is rejected, never published.
DEFAULT_RATE_BOUNDS: dict[str, tuple[Decimal, Decimal]] = {
    "USD/VES": (Decimal(1), Decimal(1000000)),
    "EUR/VES": (Decimal(1), Decimal(1000000)),
    "USDT/VES": (Decimal(1), Decimal(1000000)),
    "CNY/VES": (Decimal("0.1"), Decimal(200000)),
    "TRY/VES": (Decimal("0.01"), Decimal(100000)),
    "RUB/VES": (Decimal("0.01"), Decimal(50000)),
}


class RatesSettings(BaseModel):
    bcv_url: str = Field(
        default=BCV_PUBLIC_URL, description="BCV home page holding the official rates"
    )
    bcv_ca_bundle: Path | None = Field(
        default=None,
        description=(
            "CA bundle that completes bcv.org.ve's chain; unset: the one shipped in colmena"
        ),
    )
    binance_p2p_url: str = Field(
        default=BINANCE_P2P_PUBLIC_URL, description="Binance P2P adv/search endpoint"
    )
    binance_pay_types: list[str] = Field(
        default_factory=list,
        description='JSON list of payment methods to filter by, e.g. ["PagoMovil"]',
    )
    binance_top_n: int = Field(
        default=10, ge=1, le=100, description="adverts (by volume) in the median"
    )
    rates_max_change_pct: Decimal = Field(
        default=Decimal(20), gt=0, le=1000, description="a larger move is stored as suspect"
    )
    rates_confirm_tolerance_pct: Decimal = Field(
        default=Decimal(5),
        ge=0,
        le=100,
        description="how close the next scrape must be to confirm a suspect",
    )
    rates_bounds: dict[str, tuple[Decimal, Decimal]] = Field(
        default_factory=lambda: dict(DEFAULT_RATE_BOUNDS),
        description=(
            'JSON {"PAIR": [min, max]}; replaces the defaults, a pair missing here is rejected'
        ),
    )
    rates_timeout_s: float = Field(default=30.0, gt=0, le=120, description="per HTTP attempt")
    rates_attempts: int = Field(default=3, ge=1, le=10, description="HTTP attempts per scrape")
    rates_backoff_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="first retry delay, doubled each time and stretched by a random 1-2x",
    )
    rates_max_backoff_s: float = Field(
        default=30.0, gt=0, le=300, description="longest wait between two HTTP attempts"
    )
    rates_stale_after: int = Field(
        default=3, ge=1, le=100, description="consecutive failed scrapes -> stale"
    )
    rates_tick_expiry_s: float = Field(
        default=900.0,
        gt=0,
        description="a scheduled scrape published later than this is skipped, not replayed",
    )
    rates_api_cache_s: float = Field(
        default=5.0, ge=0, le=300, description="rates API in-process cache TTL"
    )
    rates_sandbox_sources: list[str] = Field(
        default_factory=list,
        description=(
            "sources scraped from `colmena dev`'s recorded sandbox (dev sets it): their values "
            "are stored and shown marked as sandbox data"
        ),
    )

    @field_validator("rates_bounds")
    @classmethod
    def _check_bounds(
        cls, value: dict[str, tuple[Decimal, Decimal]]
    ) -> dict[str, tuple[Decimal, Decimal]]:
        for pair, (lower, upper) in value.items():
            if not (lower.is_finite() and upper.is_finite() and 0 < lower < upper):
                raise ValueError(f"bounds of {pair} must be finite with 0 < min < max")
        return value

    def rate_bounds(self, pair: str) -> tuple[Decimal, Decimal] | None:
        """(min, max) for a pair, None when unconfigured (the value is then rejected)."""
        return self.rates_bounds.get(pair)
