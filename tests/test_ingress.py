"""The ingress base on real PostgreSQL and RabbitMQ: health, readiness, metrics, limits, errors."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import SecretStr

from bench.standins.tcp_proxy import TcpProxy
from tests.ops_support import ingress_metrics, value


async def test_healthz_and_readyz(client) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert (await response.json())["status"] == "alive"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Request-Id"]
    ready = await client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["checks"] == {"database": "ok", "broker": "ok"}


async def test_readyz_is_503_when_the_database_is_unreachable(make_client, database_url) -> None:
    target = urlsplit(database_url)
    proxy = TcpProxy(target.hostname, target.port)
    port = await proxy.start()
    proxied = database_url.replace(f"{target.hostname}:{target.port}", f"127.0.0.1:{port}")
    client = await make_client(database_url=proxied)
    assert (await client.get("/readyz")).status == 200
    await proxy.cut()
    response = await client.get("/readyz")
    assert response.status == 503
    body = await response.json()
    assert body["error"]["code"] == "not_ready"
    assert body["error"]["checks"]["database"] == "unreachable"
    await proxy.restore()
    assert (await client.get("/readyz")).status == 200


async def test_readyz_is_503_when_the_broker_is_unreachable(make_client, settings) -> None:
    broken = settings.model_copy(
        update={"broker_url": SecretStr("amqp://guest:guest@127.0.0.1:1/")}
    )
    client = await make_client(broken)
    response = await client.get("/readyz")
    assert response.status == 503
    assert (await response.json())["error"]["checks"] == {"database": "ok", "broker": "unreachable"}


async def test_metrics_are_prometheus_text(client) -> None:
    async def healthz_count() -> float:
        text = await ingress_metrics(client)
        assert "colmena_outbox_pending 0.0" in text
        labels = {"method": "GET", "route": "/healthz", "status": "200"}
        return value(text, "colmena_http_requests_total", **labels) or 0.0

    # The registry is the process's: earlier tests counted too, so only the change is ours.
    before = await healthz_count()
    await client.get("/healthz")
    await client.get("/healthz")
    assert await healthz_count() == before + 2


async def test_oversized_body_is_413_json(client, settings) -> None:
    response = await client.post("/healthz", data=b"x" * (settings.max_body_bytes + 1))
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "body_too_large"


async def test_rate_limit_answers_429_with_retry_after(make_client, settings) -> None:
    client = await make_client(settings.model_copy(update={"rate_limit_public": "2/min"}))
    statuses = [(await client.get("/api/v1/openapi.json")).status for _ in range(3)]
    assert statuses == [200, 200, 429]
    limited = await client.get("/licenses/public-key")  # the same group spends the same budget
    assert limited.status == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 30
    assert (await limited.json())["error"]["code"] == "rate_limited"
    assert [(await client.get("/healthz")).status for _ in range(5)] == [200] * 5  # exempt


async def test_unknown_route_and_wrong_method_are_json(client) -> None:
    missing = await client.get("/nope")
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "not_found"
    wrong = await client.delete("/healthz")
    assert wrong.status == 405
    assert (await wrong.json())["error"]["code"] == "method_not_allowed"


async def test_hostile_request_id_is_replaced(client) -> None:
    response = await client.get("/healthz", headers={"X-Request-Id": "x" * 500})
    assert response.headers["X-Request-Id"] != "x" * 500
