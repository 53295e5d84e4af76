"""`colmena dev` with no configuration runs the tenant's whole story: sign up, verify the email,
log in, upgrade through a subscription checkout on the Stripe Billing sandbox, plan raised.

One real `colmena dev` in an empty directory; the tenant is an HTTP client, the verification
link is read from the mail `colmena dev` drops as .eml files, and the sandbox's "pay" posts the
signed subscription webhooks to the same ingress.
"""

from __future__ import annotations

import re
import uuid
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import aiohttp

from tests.conftest import wait_for
from tests.test_dev import free_port, ready, start_dev, stop

VERIFY_LINK = re.compile(r"https?://\S+/api/v1/verify/cml_[A-Za-z0-9_-]{43}")
PASSWORD = "correct horse battery staple"


def verify_link(mail_dir: Path, email: str) -> str | None:
    """The verification link of the mail dropped for `email`, once it is there."""
    for path in sorted(mail_dir.glob("*.eml")) if mail_dir.exists() else []:
        message = message_from_bytes(path.read_bytes(), policy=policy.default)
        assert isinstance(message, EmailMessage)
        body = message.get_body(("plain",))
        if message["To"] == email and body is not None:
            found = VERIFY_LINK.search(body.get_content())
            if found:
                return found.group(0)
    return None


async def test_sign_up_verify_upgrade_and_the_plan_is_raised(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    email = f"ana-{uuid.uuid4().hex[:8]}@example.com"
    process = start_dev(tmp_path, port)
    try:
        await wait_for(lambda: ready(port), timeout=60, interval=0.25)
        async with aiohttp.ClientSession() as http:
            signup = await http.post(
                f"{base}/api/v1/signup", json={"email": email, "password": PASSWORD}
            )
            assert signup.status == 202, await signup.text()

            async def link() -> str | None:
                return verify_link(tmp_path / ".colmena" / "mail", email)

            verified = await http.get(await wait_for(link, timeout=30, interval=0.25))
            assert verified.status == 200, await verified.text()
            login = await http.post(
                f"{base}/api/v1/login", json={"email": email, "password": PASSWORD}
            )
            assert login.status == 200, await login.text()
            me = {"Authorization": f"Bearer {(await login.json())['access_token']}"}

            async def plan() -> str:
                answer = await http.get(f"{base}/api/v1/bot/config", headers=me)
                return str((await answer.json())["plan"])

            assert await plan() == "free"
            checkout = await http.post(
                f"{base}/api/v1/billing/checkout", json={"plan": "pro"}, headers=me
            )
            assert checkout.status == 201, await checkout.text()
            session = await checkout.json()
            assert session["url"].startswith(f"{base}/sandbox/stripe-billing/checkout/cs_test_")
            page = await http.get(session["url"])
            assert page.status == 200 and "SANDBOX" in await page.text()
            paid = await http.post(session["url"] + "/pay", allow_redirects=False)
            assert paid.status == 303, await paid.text()
            assert paid.headers["Location"].startswith(f"{base}/billing/return?status=success")

            async def raised() -> bool:
                return await plan() == "pro"

            await wait_for(raised, timeout=30, interval=0.25)
            config = await (await http.get(f"{base}/api/v1/bot/config", headers=me)).json()
            assert config["limits"] == {
                "max_symbols": 5,
                "live_allowed": True,
                "max_capital": "100000",
            }
            portal = await http.post(f"{base}/api/v1/billing/portal", headers=me)
            assert portal.status == 201, await portal.text()
    finally:
        output = await stop(process)
    assert process.returncode == 0, output
