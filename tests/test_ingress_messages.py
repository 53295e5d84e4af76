"""What the ingress says when it refuses: a 503 reason logged once, error messages that help."""

from __future__ import annotations

import json

from colmena.config import Settings
from tests.fuzz_support import capture_logs


async def test_the_reason_for_a_503_is_logged_once(make_client, settings: Settings) -> None:
    unconfigured = settings.model_copy(update={"stripe_webhook_secrets": None})
    client = await make_client(unconfigured)

    with capture_logs() as logs:
        statuses = []
        for _ in range(3):
            response = await client.post("/webhooks/stripe", data=b"{}")
            statuses.append((response.status, (await response.json())["error"]["code"]))
        lines = [json.loads(line) for line in logs.since(0).splitlines()]

    assert statuses == [(503, "not_configured")] * 3
    said = [line for line in lines if line["event"] == "answering 503"]
    assert [(line["level"], line["route"], line["code"], line["reason"]) for line in said] == [
        ("warning", "/webhooks/stripe", "not_configured", "Stripe webhooks are not configured")
    ]


async def test_a_route_without_parameters_says_so(client) -> None:
    response = await client.get("/api/v1/rates/latest", params={"pair": "USD/VES"})
    assert response.status == 400
    assert (await response.json())["error"]["message"] == "unknown parameter 'pair'; it takes none"
