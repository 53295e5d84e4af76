"""Rate limits on the real ingress and a real Redis: per client across routes, a failed-auth
budget that locks a client out, budgets shared by ingress processes, trusted proxies only.

Other addresses are real: Linux answers the whole of 127.0.0.0/8, so a client session bound to
127.0.0.2 is another peer as far as the ingress can tell. Each test has its own Redis key prefix
and deletes its keys afterwards; Redis outages are a TCP proxy cut, never the machine's Redis.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY
from pydantic import SecretStr

from bench.standins.tcp_proxy import TcpProxy
from colmena.config import SettingsError, load_settings
from colmena.config.rate_limit_settings import PRESETS, RATE_GROUPS, RateRule, parse_rule
from colmena.gateways import sample_events as events
from colmena.http.client_address import client_address
from colmena.http.ratelimit import group_of
from colmena.http.ratelimit_store import MemoryStore, RedisStore, Take
from tests.bots_support import ADMIN_TOKEN, add_tenant, bearer
from tests.conftest import wait_for
from tests.fuzz_support import capture_logs
from tests.payments_support import MP_SECRET, STRIPE_SECRET, stripe_post_args

REDIS_URL = os.environ.get("COLMENA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
FAILED_AUTH_BUDGET = 10
# Slow refill (one attempt back every 6 minutes): no test runs long enough to earn one back.
FAILED_AUTH_RULE = f"{FAILED_AUTH_BUDGET}/h burst {FAILED_AUTH_BUDGET}"
OTHER_ADDRESS = "127.0.0.2"

WRONG_TOKEN_ROUTES = [  # 12 routes of three audiences: tenant API, admin, downloads
    ("GET", "/api/v1/bot/status"),
    ("POST", "/api/v1/bot/start"),
    ("POST", "/api/v1/bot/stop"),
    ("GET", "/api/v1/bot/config"),
    ("PUT", "/api/v1/bot/config"),
    ("GET", "/api/v1/bot/logs"),
    ("GET", f"/api/v1/commands/{uuid.uuid4()}"),
    ("GET", "/api/v1/keys"),
    ("DELETE", "/api/v1/keys/binance"),
    ("GET", "/api/v1/admin/bots"),
    ("POST", "/api/v1/admin/bots/t-nobody/stop"),
    ("POST", "/downloads/{forged}"),
]


def security_events(reason: str) -> float:
    return REGISTRY.get_sample_value("colmena_security_events_total", {"reason": reason}) or 0.0


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """This test's own Redis keys; every one of them is deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
def shared(settings, redis_prefix):
    """Settings of an ingress whose budgets live in Redis, with every credential configured."""
    return settings.model_copy(
        update={
            "redis_url": SecretStr(REDIS_URL),
            "redis_prefix": redis_prefix,
            # Past the 0.25 s default a busy CI machine sometimes stalls Redis's answer; the
            # process then limits on its own, which these tests of shared budgets do not expect.
            "redis_timeout_s": 5.0,
            "rate_limit_preset": "burst",
            "rate_limit_failed_auth": FAILED_AUTH_RULE,
            "bot_admin_token": SecretStr(ADMIN_TOKEN),
            "stripe_webhook_secrets": SecretStr(STRIPE_SECRET),
            "mercadopago_webhook_secret": SecretStr(MP_SECRET),
        }
    )


@pytest.fixture
async def from_address() -> AsyncIterator[Callable[[TestClient, str], aiohttp.ClientSession]]:
    """A session to a test server whose connections leave from another loopback address."""
    sessions: list[aiohttp.ClientSession] = []

    def make(client: TestClient, address: str) -> aiohttp.ClientSession:
        session = aiohttp.ClientSession(
            base_url=str(client.make_url("/")),
            connector=aiohttp.TCPConnector(local_addr=(address, 0)),
        )
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        await session.close()


async def wrong_token(
    client: TestClient | aiohttp.ClientSession, attempt: int, **kwargs: Any
) -> aiohttp.ClientResponse:
    """One request with a wrong credential, on one of the 12 routes in turn."""
    method, path = WRONG_TOKEN_ROUTES[attempt % len(WRONG_TOKEN_ROUTES)]
    path = path.format(forged=secrets.token_urlsafe(32))
    token = "cmt_" + secrets.token_urlsafe(32)[:43] if attempt % 2 else f"wrong-{attempt}"
    headers = {**bearer(token), **kwargs.pop("headers", {})}
    response = await client.request(method, path, headers=headers, **kwargs)
    await response.read()
    return response


async def statuses(send: Callable[[int], Awaitable[aiohttp.ClientResponse]], n: int) -> list[int]:
    return [(await send(attempt)).status for attempt in range(n)]


# --- the failed-authentication budget ---------------------------------------------------------


async def test_300_wrong_tokens_over_12_routes_are_locked_out_right_after_the_budget(
    make_client, shared
) -> None:
    client = await make_client(shared)
    lockouts, refusals = security_events("auth_lockout"), security_events("locked_out")
    with capture_logs() as logs:
        answers = [await wrong_token(client, attempt) for attempt in range(300)]
    codes = [answer.status for answer in answers]
    assert all(code in (401, 404) for code in codes[:FAILED_AUTH_BUDGET]), codes
    assert codes[FAILED_AUTH_BUDGET:] == [429] * (300 - FAILED_AUTH_BUDGET)
    refused = answers[FAILED_AUTH_BUDGET]
    # One attempt comes back every 6 minutes; Retry-After says when.
    assert 300 < int(refused.headers["Retry-After"]) <= 360
    assert security_events("auth_lockout") == lockouts + 1
    assert security_events("locked_out") == refusals + 300 - FAILED_AUTH_BUDGET
    lines = [json.loads(line) for line in logs.text().splitlines() if line.startswith("{")]
    locked = [line for line in lines if "locked out after failed" in line["event"]]
    assert len(locked) == 1 and locked[0]["client"] == "127.0.0.1"


async def test_a_locked_out_client_gets_json_429_even_with_a_valid_token(
    make_client, shared, db
) -> None:
    _, token = await add_tenant(db)
    client = await make_client(shared)
    assert (await client.get("/api/v1/bot/status", headers=bearer(token))).status == 200
    await statuses(lambda attempt: wrong_token(client, attempt), FAILED_AUTH_BUDGET)
    refused = await client.get("/api/v1/bot/status", headers=bearer(token))
    assert refused.status == 429
    assert (await refused.json())["error"]["code"] == "locked_out"
    assert (await client.get("/healthz")).status == 200  # probes are never throttled


async def test_another_address_is_not_affected_by_a_locked_out_one(
    make_client, shared, db, from_address
) -> None:
    _, token = await add_tenant(db)
    client = await make_client(shared)
    await statuses(lambda attempt: wrong_token(client, attempt), FAILED_AUTH_BUDGET + 5)
    assert (await client.get("/api/v1/bot/status", headers=bearer(token))).status == 429
    other = from_address(client, OTHER_ADDRESS)
    assert (await other.get("/api/v1/bot/status", headers=bearer(token))).status == 200
    assert (await wrong_token(other, 0)).status == 401  # its own budget is untouched


async def test_two_ingress_processes_share_one_budget_through_redis(make_client, shared) -> None:
    first, second = await make_client(shared), await make_client(shared)
    both = (first, second)
    codes = await statuses(lambda i: wrong_token(both[i % 2], i), FAILED_AUTH_BUDGET)
    assert all(code in (401, 404) for code in codes), codes
    assert (await wrong_token(first, 1)).status == 429
    assert (await wrong_token(second, 1)).status == 429


async def test_group_budgets_are_shared_by_two_ingress_processes(make_client, shared) -> None:
    limited = shared.model_copy(update={"rate_limit_public": "4/h burst 4"})
    first, second = await make_client(limited), await make_client(limited)
    spent = [
        (await app.get("/api/v1/openapi.json")).status for app in (first, second, first, second)
    ]
    assert spent == [200] * 4
    for app in (first, second):
        refused = await app.get("/licenses/public-key")  # same group, same budget
        assert refused.status == 429
        assert (await refused.json())["error"]["code"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) > 800  # one request back every 15 minutes


# --- addresses behind a proxy -----------------------------------------------------------------


async def test_x_forwarded_for_is_believed_from_a_trusted_proxy(make_client, shared) -> None:
    client = await make_client(shared.model_copy(update={"trusted_proxies": "127.0.0.1/32"}))
    attacker = {"X-Forwarded-For": "198.51.100.7"}
    codes = await statuses(lambda i: wrong_token(client, i, headers=attacker), FAILED_AUTH_BUDGET)
    assert all(code in (401, 404) for code in codes), codes
    assert (await wrong_token(client, 0, headers=attacker)).status == 429
    # A forged hop to the left of the proxy's own changes nothing: right-most untrusted wins.
    forged = {"X-Forwarded-For": "203.0.113.9, 198.51.100.7"}
    assert (await wrong_token(client, 0, headers=forged)).status == 429
    # Another client behind the same proxy has its own budget.
    assert (await wrong_token(client, 0, headers={"X-Forwarded-For": "198.51.100.8"})).status == (
        401
    )


async def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(
    make_client, shared, from_address
) -> None:
    client = await make_client(shared.model_copy(update={"trusted_proxies": "127.0.0.1/32"}))
    direct = from_address(client, OTHER_ADDRESS)  # not a proxy: it rotates the header in vain

    def rotating(i: int) -> Awaitable[aiohttp.ClientResponse]:
        return wrong_token(direct, i, headers={"X-Forwarded-For": f"198.51.100.{i + 1}"})

    codes = await statuses(rotating, FAILED_AUTH_BUDGET + 3)
    assert codes[FAILED_AUTH_BUDGET:] == [429] * 3
    # Without any trusted proxy, not even 127.0.0.1's header counts.
    untrusting = await make_client(shared)
    codes = await statuses(
        lambda i: wrong_token(untrusting, i, headers={"X-Forwarded-For": f"198.51.100.{i + 1}"}),
        FAILED_AUTH_BUDGET + 1,
    )
    assert codes[-1] == 429


def test_client_address_takes_the_right_most_untrusted_hop() -> None:
    proxies = load_settings(trusted_proxies="10.0.0.0/8, ::1", _env_file=None)
    trusted = proxies.trusted_proxy_networks()
    assert client_address("10.0.0.5", ["1.2.3.4"], trusted) == "1.2.3.4"
    assert client_address("10.0.0.5", ["6.6.6.6, 1.2.3.4"], trusted) == "1.2.3.4"
    assert client_address("10.0.0.5", ["1.2.3.4, 10.0.0.9"], trusted) == "1.2.3.4"
    assert client_address("10.0.0.5", ["6.6.6.6", "1.2.3.4, 10.1.1.1"], trusted) == "1.2.3.4"
    assert client_address("5.5.5.5", ["1.2.3.4"], trusted) == "5.5.5.5"
    assert client_address("10.0.0.5", ["not an address"], trusted) == "10.0.0.5"
    assert client_address("10.0.0.5", [], trusted) == "10.0.0.5"
    assert client_address("::1", ["2001:db8::1"], trusted) == "2001:db8::1"
    assert client_address("::ffff:10.0.0.5", ["1.2.3.4"], trusted) == "1.2.3.4"
    assert client_address("10.0.0.5", ["1.2.3.4"], ()) == "10.0.0.5"
    assert client_address(None, ["1.2.3.4"], trusted) == "unknown"
    with pytest.raises(SettingsError, match="COLMENA_TRUSTED_PROXIES"):
        load_settings(trusted_proxies="10.0.0.0/8, nonsense", _env_file=None)


# --- webhooks ---------------------------------------------------------------------------------


async def test_a_webhook_burst_within_its_bucket_passes(make_client, shared) -> None:
    client = await make_client(shared)
    burst = parse_rule(PRESETS["burst"]["webhooks"])
    assert burst is not None
    assert [await post_stripe(client) for _ in range(burst.burst)] == [200] * burst.burst


async def test_each_provider_has_its_own_webhook_bucket(make_client, shared) -> None:
    client = await make_client(shared.model_copy(update={"rate_limit_webhooks": "3/h burst 3"}))
    assert [(await post_stripe(client)) for _ in range(3)] == [200] * 3
    assert await post_stripe(client) == 429
    # Mercado Pago's bucket is untouched: its request is read (and refused for its signature).
    assert (await bad_mercadopago(client)).status == 401


async def test_bad_webhook_signatures_spend_the_failed_auth_budget(make_client, shared) -> None:
    client = await make_client(shared)
    codes = [(await bad_mercadopago(client)).status for _ in range(FAILED_AUTH_BUDGET + 1)]
    assert codes == [401] * FAILED_AUTH_BUDGET + [429]
    locked = await client.post("/webhooks/stripe", **stripe_post_args(stripe_event()))
    assert locked.status == 429
    assert (await locked.json())["error"]["code"] == "locked_out"


async def bad_mercadopago(client: TestClient) -> aiohttp.ClientResponse:
    headers = {"Content-Type": "application/json", "x-signature": "ts=1,v1=00"}
    response = await client.post(
        "/webhooks/mercadopago", params={"data.id": "1"}, data=b"{}", headers=headers
    )
    await response.read()
    return response


def stripe_event() -> dict[str, Any]:
    return events.stripe_event("payment_intent.succeeded", events.payment_intent())


async def post_stripe(client: TestClient) -> int:
    response = await client.post("/webhooks/stripe", **stripe_post_args(stripe_event()))
    await response.read()
    return response.status


# --- Redis down: fail open to the process's own budgets ---------------------------------------


async def test_redis_down_falls_back_to_per_process_budgets_then_shares_again(
    make_client, shared, redis_prefix
) -> None:
    proxy = TcpProxy("127.0.0.1", 6379)
    port = await proxy.start()
    client = await make_client(
        shared.model_copy(update={"redis_url": SecretStr(f"redis://127.0.0.1:{port}/0")})
    )
    direct = aioredis.Redis.from_url(REDIS_URL)
    try:
        assert (await wrong_token(client, 0)).status == 401
        assert await direct.exists(f"{redis_prefix}ratelimit:{{127.0.0.1}}:failed_auth")
        downs = security_events("rate_limit_store_down")
        await proxy.cut()
        # Requests are still answered, and the process still locks the client out on its own.
        codes = await statuses(lambda i: wrong_token(client, i), FAILED_AUTH_BUDGET + 1)
        assert all(code in (401, 404) for code in codes[:FAILED_AUTH_BUDGET]), codes
        assert codes[FAILED_AUTH_BUDGET] == 429
        assert security_events("rate_limit_store_down") == downs + 1  # once per outage
        await proxy.restore()
        group_key = f"{redis_prefix}ratelimit:{{127.0.0.1}}:public"

        async def shared_again() -> bool:
            await (await client.get("/api/v1/openapi.json")).read()
            return bool(await direct.exists(group_key))

        await wait_for(shared_again, timeout=20)
        # Redis held one failure; the outage's failures were this process's own.
        assert (await wrong_token(client, 1)).status in (401, 404)
    finally:
        await direct.aclose()
        await proxy.cut()


async def test_a_redis_that_refuses_commands_is_down_too(make_client, shared) -> None:
    """A Redis that answers but refuses (protected mode, NOAUTH, out of memory) is no budget
    store either: the ingress limits per process, never answers 500."""

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            for _ in range(max(1, chunk.count(b"\r\n*") + chunk.startswith(b"*"))):
                writer.write(b"-DENIED Redis is running in protected mode\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = await make_client(
            shared.model_copy(update={"redis_url": SecretStr(f"redis://127.0.0.1:{port}/0")})
        )
        downs = security_events("rate_limit_store_down")
        codes = await statuses(lambda i: wrong_token(client, i), FAILED_AUTH_BUDGET + 1)
        assert all(code in (401, 404) for code in codes[:FAILED_AUTH_BUDGET]), codes
        assert codes[FAILED_AUTH_BUDGET] == 429
        assert security_events("rate_limit_store_down") == downs + 1
    finally:
        server.close()
        await server.wait_closed()


# --- the algorithm and the presets ------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_gcra_allows_the_burst_then_one_per_interval() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    rule = RateRule(count=10, period_s=1.0, burst=3)  # one back every 0.1 s
    take = [Take("k", rule)]
    verdicts = [await store.apply(take) for _ in range(4)]
    assert [v.refused_by for v in verdicts] == [None, None, None, 0]
    assert [v.remaining for v in verdicts[:3]] == [(2,), (1,), (0,)]
    assert verdicts[3].wait_s == pytest.approx(0.1)
    clock.now += 0.1
    assert (await store.apply(take)).refused_by is None
    assert (await store.apply(take)).refused_by == 0


async def test_a_refusal_spends_from_no_budget_and_a_look_spends_nothing() -> None:
    store = MemoryStore(clock=Clock())
    small, large = RateRule(1, 60.0, 1), RateRule(100, 60.0, 100)
    assert (await store.apply([Take("a", small), Take("b", large)])).remaining == (0, 99)
    refused = await store.apply([Take("b", large), Take("a", small)])
    assert refused.refused_by == 1
    assert (await store.apply([Take("b", large, spend=False)])).remaining == (99,)


async def test_memory_store_stays_bounded_under_address_spraying() -> None:
    store = MemoryStore(clock=Clock(), max_keys=50)
    for i in range(500):
        await store.apply([Take(f"client-{i}", RateRule(1, 3600.0, 1))])
    assert len(store._tats) == 50


async def test_redis_store_decides_as_the_memory_store_does(redis_prefix) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    store = RedisStore(client, redis_prefix)
    try:
        rule = RateRule(count=5, period_s=3600.0, burst=5)
        verdicts = [await store.apply([Take("x", rule), Take("y", rule, False)]) for _ in range(6)]
        assert [v.remaining for v in verdicts[:5]] == [(n, 5) for n in (4, 3, 2, 1, 0)]
        assert verdicts[5].refused_by == 0 and 700 < verdicts[5].wait_s <= 720
        assert not await client.exists(redis_prefix + "y")  # looked at, never written
        assert 0 < await client.pttl(redis_prefix + "x") <= 3600 * 1000
    finally:
        await client.aclose()


def test_presets_cover_every_group_and_overrides_win() -> None:
    for preset in ("strict", "burst"):
        active = load_settings(rate_limit_preset=preset, _env_file=None)
        assert all(active.rate_rule(group) is not None for group in RATE_GROUPS)
    strict = load_settings(rate_limit_preset="strict", _env_file=None)
    assert strict.rate_rule("tenant_api") == RateRule(count=5, period_s=60.0, burst=5)
    assert strict.rate_rule("webhooks") == RateRule(count=50, period_s=60.0, burst=50)
    burst = load_settings(rate_limit_preset="burst", rate_limit_admin="off", _env_file=None)
    assert burst.rate_rule("tenant_api") == RateRule(count=10, period_s=1.0, burst=20)
    assert burst.rate_rule("admin") is None
    assert burst.rate_rule("failed_auth") == RateRule(count=10, period_s=600.0, burst=10)
    off = load_settings(rate_limit_preset="off", _env_file=None)
    assert all(off.rate_rule(group) is None for group in RATE_GROUPS)
    with pytest.raises(SettingsError, match="COLMENA_RATE_LIMIT_RATES"):
        load_settings(rate_limit_rates="lots", _env_file=None)
    with pytest.raises(SettingsError, match="COLMENA_REDIS_URL"):
        load_settings(redis_url="http://127.0.0.1:6379", _env_file=None)


def test_route_groups() -> None:
    assert group_of("/healthz") is None and group_of("/metrics") is None
    assert group_of("/webhooks/stripe") == "webhooks"
    assert group_of("/api/v1/admin/bots") == "admin"
    assert group_of("/api/v1/rates/latest") == "rates"
    assert group_of("/api/v1/bot/status") == "tenant_api"
    assert group_of("/downloads/{token}") == "downloads"
    assert group_of("/licenses/{key}/status") == "public"
    assert group_of("/api/v1/openapi.json") == "public"
    assert group_of("unmatched") == "public"
    assert group_of("/console/admin/payments") == "console"
    assert group_of("/console/login") == "console"
    assert group_of("/console/static/{name}") is None and group_of("/dev/queues") is None
