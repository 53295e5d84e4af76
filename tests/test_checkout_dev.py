"""`colmena dev` with no configuration sells a license end to end on each provider's sandbox:
checkout -> the sandbox's page "pays" -> the signed webhook -> the order paid -> the license
emailed (an .eml in the dev mail directory)."""

from __future__ import annotations

from email import message_from_bytes
from pathlib import Path

import aiohttp
import asyncpg

from colmena.config.dev_stack import read_dev_stack
from tests.conftest import wait_for
from tests.test_dev import free_port, ready, start_dev, stop

# Where each sandbox's buyer page posts to pay, from the redirect URL the checkout answered.
PAY_URL = {
    "stripe": lambda url: f"{url}/pay",
    "mercadopago": lambda url: url.replace("/redirect?", "/redirect/pay?"),
    "bitso": lambda url: f"{url}/pay",
}


async def _order_status(database_url: str, order_id: str) -> str | None:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval("SELECT status FROM orders WHERE id = $1::uuid", order_id)
    finally:
        await conn.close()


def _mail_to(mail_dir: Path, address: str) -> list[str]:
    found = []
    for path in sorted(mail_dir.glob("*.eml")) if mail_dir.exists() else []:
        message = message_from_bytes(path.read_bytes())
        if message["To"] == address:
            found.append(str(message["Subject"]))
    return found


async def test_a_checkout_is_paid_on_each_sandbox_and_the_license_mailed(tmp_path: Path) -> None:
    port = free_port()
    process = start_dev(tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_for(lambda: ready(port), timeout=60, interval=0.25)
        stack = read_dev_stack(tmp_path / ".colmena")
        assert stack is not None
        async with aiohttp.ClientSession() as http:
            for provider, pay_url in PAY_URL.items():
                email = f"buyer-{provider}@example.com"
                async with http.post(
                    f"{base}/api/v1/checkout",
                    json={
                        "product": "colmena-enterprise",
                        "edition": "standard",
                        "currency": "MXN",
                        "email": email,
                        "provider": provider,
                    },
                ) as response:
                    answer = await response.json()
                    assert response.status == 201, (provider, answer)
                assert answer["redirect_url"].startswith(f"{base}/sandbox/")
                async with http.get(answer["redirect_url"]) as page:
                    assert page.status == 200
                    assert "SANDBOX" in await page.text()
                async with http.post(
                    pay_url(answer["redirect_url"]), allow_redirects=False
                ) as paid:
                    assert paid.status == 303, (provider, await paid.text())
                    assert paid.headers["Location"].startswith(f"{base}/checkout/success?order=")

                async def is_paid(order_id: str = answer["order_id"]) -> bool:
                    return await _order_status(stack.database_url, order_id) == "paid"

                await wait_for(is_paid, timeout=30, interval=0.25)

                async def mailed(address: str = email) -> list[str]:
                    return _mail_to(tmp_path / ".colmena" / "mail", address)

                assert await wait_for(mailed, timeout=30, interval=0.25)
                async with http.get(f"{base}/checkout/success?order={answer['order_id']}") as page:
                    assert "pagado" in await page.text()
    finally:
        output = await stop(process)
    assert process.returncode == 0, output
    for sandbox in ("stripe", "bitso"):
        assert f"{base}/sandbox/{sandbox}" in output
