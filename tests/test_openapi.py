"""The published OpenAPI document against the server: the same routes and methods, the bot config
schema of the pydantic model, and real answers (success and error) valid against the documented
status codes, media types and schemas."""

from __future__ import annotations

import json
import uuid
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from colmena.actors.bots import ship_logs
from colmena.domain.tenants import BotConfig
from colmena.http.openapi import PATH, load_document
from colmena.store import rates as rates_store
from colmena.supervisor.runtimes import close_runtimes
from tests.bots_support import ADMIN_TOKEN, add_tenant, bearer, bot_settings, resources_for
from tests.conftest import wait_for

METHODS = ("get", "put", "post", "delete", "patch")
DOCUMENT = json.loads(load_document())


# Tags whose operations their own module's test checks with `Checked.assert_covers(tag)`
# (each needs its own stand-ins: SMTP for accounts, Stripe/Mercado Pago/Bitso for the others);
# test_real_answers_match_the_document covers every other operation.
OWN_TESTS = {
    "accounts": "tests/test_accounts.py",
    "checkout": "tests/test_checkout.py",
    "billing": "tests/test_billing.py",
    "notifications": "tests/test_notifications_api.py",
    "reports": "tests/test_reports_http.py",
}


def operations(tags: set[str] | None = None) -> set[tuple[str, str]]:
    """Every documented (method, path), or those tagged with one of `tags`."""
    return {
        (method.upper(), path)
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
        if method in METHODS and (tags is None or tags & set(operation.get("tags", ())))
    }


def _schema(reference_or_schema: dict[str, Any]) -> dict[str, Any]:
    """A standalone schema: the document's components ride along so its $refs resolve."""
    return {**reference_or_schema, "components": DOCUMENT["components"]}


def _response_spec(path: str, method: str, status: int) -> dict[str, Any]:
    responses = DOCUMENT["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, (
        f"{method} {path} answered {status}, documented: {sorted(responses)}"
    )
    spec = responses[str(status)]
    if "$ref" in spec:
        spec = DOCUMENT["components"]["responses"][spec["$ref"].rsplit("/", 1)[1]]
    return spec


class Checked:
    """Calls the server and checks each answer against the document; remembers what it saw."""

    def __init__(self, client) -> None:
        self.client = client
        self.seen: set[tuple[str, str, int]] = set()

    async def call(
        self, documented: str, method: str, path: str | None = None, **kwargs: Any
    ) -> tuple[int, Any]:
        response = await self.client.request(method, path or documented, **kwargs)
        spec = _response_spec(documented, method, response.status)
        body = await response.read()
        content = spec.get("content")
        if content is None:
            assert body == b"", f"{method} {documented} {response.status}: no body documented"
        else:
            assert response.content_type in content, (response.content_type, sorted(content))
            if response.content_type == "application/json":
                parsed = json.loads(body)
                validator = Draft202012Validator(
                    _schema(content["application/json"]["schema"]), format_checker=FormatChecker()
                )
                errors = [
                    f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                    for e in validator.iter_errors(parsed)
                ]
                assert not errors, f"{method} {documented} {response.status}: {errors}"
                body = parsed
        for header in spec.get("headers", {}):
            assert header in response.headers, (
                f"{method} {documented} {response.status}: no {header}"
            )
        self.seen.add((method, documented, response.status))
        return response.status, body

    def assert_covers(self, tag: str) -> None:
        """Every operation tagged `tag` was answered with a 2xx through this checker."""
        exercised = {(method, path) for method, path, status in self.seen if status < 300}
        missing = operations({tag}) - exercised
        assert not missing, f"{tag}: not exercised: {sorted(missing)}"


def test_the_document_is_openapi_3_1_with_valid_schemas() -> None:
    assert DOCUMENT["openapi"] == "3.1.0"
    for schema in DOCUMENT["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert names == {part[1:-1] for part in path.split("/") if part.startswith("{")}, (
                method,
                path,
            )
            assert operation["responses"], (method, path)
    unresolved = [ref for ref in _refs(DOCUMENT) if not _resolves(ref)]
    assert not unresolved, unresolved


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def _resolves(ref: str) -> bool:
    node: Any = DOCUMENT
    for part in ref.removeprefix("#/").split("/"):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_the_bot_config_schema_is_the_pydantic_model() -> None:
    assert DOCUMENT["components"]["schemas"]["BotConfig"] == BotConfig.model_json_schema()


async def test_every_api_route_is_documented_and_nothing_else(client) -> None:
    served = {
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/v1/")
        and route.method != "HEAD"
    }
    assert served == operations()


@pytest.fixture
def active(settings, tmp_path):
    yield bot_settings(settings, tmp_path, "process", None, bot_sse_max_seconds=1.0)
    close_runtimes()


async def test_real_answers_match_the_document(active, make_client, db, start_worker) -> None:
    tenant_id, token = await add_tenant(db)
    for source, pair, value in (("bcv", "USD/VES", "36.5123"), ("binance", "USDT/VES", "38.1")):
        await rates_store.insert(
            db,
            source=source,
            pair=pair,
            value=Decimal(value),
            effective_date=date(2026, 9, 1),
            status="accepted",
            reason="seed",
            buy=Decimal(value) if source == "binance" else None,
            sell=Decimal(value) if source == "binance" else None,
        )
    client = await make_client(active)
    api = Checked(client)
    me, admin = bearer(token), bearer(ADMIN_TOKEN)
    start_worker(settings_override=active, queues=["bots"])

    status, document = await api.call(PATH, "GET")
    assert status == 200 and document == DOCUMENT

    # A running bot (a real process, started by a real worker): its logs and their stream.
    status, accepted = await api.call(
        "/api/v1/bot/{action}", "POST", "/api/v1/bot/start", headers=me
    )
    assert status == 202

    async def finished() -> bool:
        answer = await client.get(f"/api/v1/commands/{accepted['command_id']}", headers=me)
        return (await answer.json())["status"] != "queued"

    await wait_for(finished, timeout=30)
    shipper = resources_for(active)  # the supervisor side copies the bot's lines for the ingress
    await shipper.start()
    try:
        await wait_for(lambda: ship_logs(shipper), timeout=30)
    finally:
        await shipper.close()
    assert (await api.call("/api/v1/bot/logs", "GET", "/api/v1/bot/logs?tail=5", headers=me))[
        0
    ] == 200
    assert (await api.call("/api/v1/bot/logs", "GET", "/api/v1/bot/logs?tail=x", headers=me))[
        0
    ] == 422
    status, events = await api.call(
        "/api/v1/bot/logs/stream", "GET", "/api/v1/bot/logs/stream?tail=1", headers=me
    )
    assert status == 200 and events.startswith(b"data: ")

    # Commands and their status.
    for action in ("stop", "restart"):
        status, accepted = await api.call(
            "/api/v1/bot/{action}", "POST", f"/api/v1/bot/{action}", headers=me
        )
        assert status == 202
    assert (await api.call("/api/v1/bot/{action}", "POST", "/api/v1/bot/start"))[0] == 401
    command = "/api/v1/commands/{command_id}"
    assert (
        await api.call(command, "GET", f"/api/v1/commands/{accepted['command_id']}", headers=me)
    )[0] == 200
    assert (await api.call(command, "GET", f"/api/v1/commands/{uuid.uuid4()}", headers=me))[
        0
    ] == 404
    assert (await api.call("/api/v1/bot/status", "GET", headers=me))[0] == 200
    assert (await api.call("/api/v1/bot/status", "GET", headers=bearer("cmt_forged")))[0] == 401

    # Config: read, unchanged, changed, invalid fields, not JSON.
    status, current = await api.call("/api/v1/bot/config", "GET", headers=me)
    assert status == 200
    config = "/api/v1/bot/config"
    assert (await api.call(config, "PUT", json=current["config"], headers=me))[0] == 200
    assert (
        await api.call(config, "PUT", json={**current["config"], "capital": "250.75"}, headers=me)
    )[0] == 202
    assert (
        await api.call(config, "PUT", json={"symbols": [], "mode": "x", "capital": 1}, headers=me)
    )[0] == 422
    assert (await api.call(config, "PUT", data=b"{not json", headers=me))[0] == 400

    # Provider keys.
    keys = "/api/v1/keys"
    new_key = {"provider": "binance", "key": "k-" + uuid.uuid4().hex}
    assert (await api.call(keys, "POST", json=new_key, headers=me))[0] == 201
    assert (
        await api.call(keys, "POST", json={"provider": "Bin ance", "key": "short"}, headers=me)
    )[0] == 422
    assert (await api.call(keys, "GET", headers=me))[0] == 200
    assert (
        await api.call("/api/v1/keys/{provider}", "DELETE", "/api/v1/keys/binance", headers=me)
    )[0] == 204
    assert (
        await api.call("/api/v1/keys/{provider}", "DELETE", "/api/v1/keys/binance", headers=me)
    )[0] == 404

    # Admin.
    assert (await api.call("/api/v1/admin/bots", "GET", headers=admin))[0] == 200
    assert (await api.call("/api/v1/admin/bots", "GET", headers=me))[0] == 401
    stop = "/api/v1/admin/bots/{tenant}/stop"
    assert (await api.call(stop, "POST", f"/api/v1/admin/bots/{tenant_id}/stop", headers=admin))[
        0
    ] == 202
    assert (await api.call(stop, "POST", "/api/v1/admin/bots/nobody/stop", headers=admin))[0] == 404

    # Rates.
    assert (await api.call("/api/v1/rates/latest", "GET"))[0] == 200
    assert (await api.call("/api/v1/rates/latest", "GET", "/api/v1/rates/latest?x=1"))[0] == 400
    history = "/api/v1/rates/history"
    assert (await api.call(history, "GET", f"{history}?pair=USD/VES&limit=1"))[0] == 200
    assert (await api.call(history, "GET", f"{history}?pair=USD/VES&limit=0"))[0] == 400
    convert = "/api/v1/rates/convert"
    status, converted = await api.call(convert, "GET", f"{convert}?amount=100.50&from=USD&to=USDT")
    assert status == 200 and len(converted["rates"]) == 2
    assert (await api.call(convert, "GET", f"{convert}?amount=1&from=CNY&to=VES"))[0] == 404

    # The public catalog (empty here: no product was added).
    status, catalog = await api.call("/api/v1/catalog", "GET", "/api/v1/catalog?currency=MXN")
    assert status == 200 and catalog["products"] == []
    assert (await api.call("/api/v1/catalog", "GET", "/api/v1/catalog?currency=mxn!"))[0] == 400

    exercised = {(method, path) for method, path, status in api.seen if status < 300}
    wanted = operations() - operations(set(OWN_TESTS))
    assert exercised == wanted, f"not exercised: {sorted(wanted - exercised)}"


def test_every_tag_checked_elsewhere_names_a_test_that_covers_it() -> None:
    """A tag in OWN_TESTS is documented, and its module really calls `assert_covers` on it."""
    for tag, module in OWN_TESTS.items():
        assert operations({tag}), f"no operation is tagged {tag}"
        assert f'assert_covers("{tag}")' in Path(module).read_text(), module
