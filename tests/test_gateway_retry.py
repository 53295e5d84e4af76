"""The gateways' one retry loop and their one error vocabulary.

`with_retries` backs off as Dramatiq's `compute_backoff` does (exponential, stretched by a
random 1-2x, a wait past the cap brought back to 50-100% of it) and retries only an error whose
`retryable` says it may heal. The random source and the sleep are injected: every delay is
checked exactly and nothing here waits.
"""

from __future__ import annotations

from collections.abc import Callable
from unittest import mock

import dramatiq.common
import pytest
from hypothesis import given
from hypothesis import strategies as st

from colmena.domain.rates import AcceptRefused, EmptyBookError
from colmena.errors import ColmenaError, is_permanent
from colmena.gateways.bcv import (
    BcvConnectionError,
    BcvHttpError,
    BcvTimeoutError,
    BcvTlsError,
    MissingRateError,
)
from colmena.gateways.binance import (
    BinanceApiCodeError,
    BinanceForbiddenError,
    BinanceHttpError,
    BinanceResponseError,
    BinanceTimeoutError,
)
from colmena.gateways.mercadopago import (
    MercadoPagoError,
    MercadoPagoNotFound,
    MercadoPagoRejected,
    MercadoPagoSignatureError,
    MercadoPagoUnavailable,
)
from colmena.gateways.retry import backoff_delay, with_retries
from colmena.gateways.stripe import StripeError, StripeEventError, StripeSignatureError


class Scripted:
    """A call that raises the given errors in turn, then answers "ok"; counts its calls."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class Sleeps:
    """An injected sleep that records the delays instead of waiting them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def draws(*values: float) -> tuple[Callable[[float, float], float], list[tuple[float, float]]]:
    """An injected `uniform` answering `values` in turn, and the (low, high) it was asked for."""
    asked: list[tuple[float, float]] = []
    queue = list(values)

    def uniform(low: float, high: float) -> float:
        asked.append((low, high))
        return queue.pop(0)

    return uniform, asked


async def test_delays_double_with_jitter_and_fall_back_under_the_cap() -> None:
    call = Scripted(*(BcvTimeoutError("slow") for _ in range(4)))
    sleep = Sleeps()
    uniform, asked = draws(1.5, 1.25, 1.5, 0.8, 1.0, 0.5)

    answer = await with_retries(
        call,
        attempts=5,
        backoff=1.0,
        max_backoff=5.0,
        event="test_retry",
        uniform=uniform,
        sleep=sleep,
    )

    assert (answer, call.calls) == ("ok", 5)
    # 1 x 1.5; 2 x 1.25; 4 x 1.5 = 6 is past the cap: 5 x 0.8; 8 x 1.0 past it again: 5 x 0.5
    assert sleep.delays == [1.5, 2.5, 4.0, 2.5]
    assert asked == [(1, 2), (1, 2), (1, 2), (0.5, 1), (1, 2), (0.5, 1)]


@given(
    retry=st.integers(min_value=0, max_value=40),
    factor_ms=st.integers(min_value=1, max_value=5000).map(lambda n: n * 4),
    max_ms=st.integers(min_value=1, max_value=100_000).map(lambda n: n * 4),
    stretch=st.sampled_from([1.0, 1.25, 1.5, 1.75]),
    shrink=st.sampled_from([0.5, 0.75, 1.0]),
)
def test_the_schedule_is_dramatiqs_compute_backoff(
    retry: int, factor_ms: int, max_ms: int, stretch: float, shrink: float
) -> None:
    def uniform(low: float, high: float) -> float:
        return stretch if low == 1 else shrink

    # Draws and factors that keep compute_backoff's whole milliseconds exact (it truncates);
    # backoff_delay is unit-free, so it is asked in milliseconds too and must agree exactly.
    with mock.patch.object(dramatiq.common, "uniform", uniform):
        _, expected_ms = dramatiq.common.compute_backoff(
            retry, factor=factor_ms, max_backoff=max_ms
        )

    delay_ms = backoff_delay(retry, backoff=factor_ms, max_backoff=max_ms, uniform=uniform)

    assert delay_ms == expected_ms


@pytest.mark.parametrize(
    "error",
    [
        BcvHttpError(404),
        BcvTlsError("bad chain"),
        MissingRateError("no #dolar"),
        BinanceForbiddenError("403"),
        BinanceApiCodeError("100001", "bad"),
        ValueError("not a ColmenaError: a bug, raised as it is"),
    ],
    ids=repr,
)
async def test_an_error_that_cannot_heal_is_raised_at_once(error: Exception) -> None:
    call = Scripted(error, error, error)
    sleep = Sleeps()

    with pytest.raises(type(error)):
        await with_retries(call, attempts=3, backoff=1.0, event="test_retry", sleep=sleep)

    assert (call.calls, sleep.delays) == (1, [])


async def test_a_retryable_error_is_retried_until_the_attempts_run_out() -> None:
    call = Scripted(BcvHttpError(503), BcvHttpError(503), BcvHttpError(503))
    sleep = Sleeps()

    with pytest.raises(BcvHttpError) as raised:
        await with_retries(call, attempts=3, backoff=0.5, event="test_retry", sleep=sleep)

    assert raised.value.status == 503
    assert call.calls == 3 and len(sleep.delays) == 2
    assert 0.5 <= sleep.delays[0] < 1.0 and 1.0 <= sleep.delays[1] < 2.0


async def test_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="attempts"):
        await with_retries(Scripted(), attempts=0, backoff=0, event="x")


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (BcvHttpError(503), True),
        (BcvHttpError(429), True),
        (BcvHttpError(404), False),
        (BcvTimeoutError("slow"), True),
        (BcvConnectionError("reset"), True),
        (BcvTlsError("bad chain"), False),
        (MissingRateError("no #dolar"), False),
        (BinanceHttpError(502), True),
        (BinanceHttpError(400), False),
        (BinanceTimeoutError("slow"), True),
        (BinanceForbiddenError("403"), False),
        (BinanceResponseError("not JSON"), False),
        (EmptyBookError("empty"), False),
        (MercadoPagoUnavailable("HTTP 503"), True),
        (MercadoPagoNotFound("not found"), False),
        (MercadoPagoRejected("HTTP 401"), False),
        (MercadoPagoSignatureError("signature mismatch"), False),
        (StripeSignatureError("no matching signature"), False),
        (StripeEventError("body is not JSON"), False),
        (AcceptRefused("rejected"), False),
    ],
    ids=repr,
)
def test_every_gateway_error_says_whether_it_may_heal(error: Exception, retryable: bool) -> None:
    assert isinstance(error, ColmenaError)
    assert error.retryable is retryable
    assert is_permanent(error) is not retryable


def test_each_provider_has_one_root() -> None:
    assert issubclass(MercadoPagoSignatureError, MercadoPagoError)
    assert all(
        issubclass(error, MercadoPagoError)
        for error in (MercadoPagoUnavailable, MercadoPagoNotFound, MercadoPagoRejected)
    )
    assert issubclass(StripeSignatureError, StripeError)
    assert issubclass(StripeEventError, StripeError)
