"""What the ingress says when it refuses: a 503 reason logged once, error messages that help."""

from __future__ import annotations

import structlog

from colmena.config import Settings


async def test_the_reason_for_a_503_is_logged_once(make_client, settings: Settings) -> None:
    unconfigured = settings.model_copy(update={"stripe_webhook_secrets": None})
    client = await make_client(unconfigured)

    with structlog.testing.capture_logs() as logs:
        statuses = []
        for _ in range(3):
            response = await client.post("/webhooks/stripe", data=b"{}")
            statuses.append((response.status, (await response.json())["error"]["code"]))

    assert statuses == [(503, "not_configured")] * 3
    said = [entry for entry in logs if entry["event"] == "answering 503"]
    assert said == [
        {
            "event": "answering 503",
            "log_level": "warning",
            "route": "/webhooks/stripe",
            "code": "not_configured",
            "reason": "Stripe webhooks are not configured",
            "once": True,
        }
    ]


async def test_a_route_without_parameters_says_so(client) -> None:
    response = await client.get("/api/v1/rates/latest", params={"pair": "USD/VES"})
    assert response.status == 400
    assert (await response.json())["error"]["message"] == "unknown parameter 'pair'; it takes none"
