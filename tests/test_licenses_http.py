"""The license routes with bad input, the cleanup job, and the `colmena dev` fallbacks."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import shutil
import stat
from datetime import UTC, datetime
from email import message_from_bytes, policy
from typing import Any

import pytest
from prometheus_client import REGISTRY

from colmena.actors.licenses import cleanup_licenses, deliver_license, send_email
from colmena.domain.licensing import (
    License,
    load_private_key,
    load_public_key,
    sign_license,
    verify_license_key,
)
from colmena.errors import is_permanent
from colmena.gateways.license_keys import SigningKeyMissing, public_key, signing_key
from colmena.gateways.maildrop import MailDropMailer
from colmena.gateways.mailer import MailerNotConfigured, mailer_for
from colmena.store import licenses as store
from colmena.store import payments
from tests.fuzz_support import LogCapture, capture_logs
from tests.licenses_support import (
    LINK,
    PRODUCT,
    SIGNING_KEY,
    a_key,
    deliver_inline,
    insert_payment,
    license_settings,
    resources_for,
    tampered,
)
from tests.standins.smtp import SmtpStandin


@pytest.fixture
def smtp():
    with SmtpStandin() as server:
        yield server


@pytest.fixture
def active(settings, smtp, tmp_path):
    return license_settings(settings, smtp, tmp_path)


async def test_forged_and_truncated_tokens_are_404_and_spend_nothing(
    active, smtp, db, make_client
) -> None:
    token = await deliver_inline(active, await insert_payment(db), smtp)
    client = await make_client(active)
    forged = secrets.token_urlsafe(32)
    for bad in (forged, token[:-1], token[:20], token + "A", "not a token", "%00"):
        for method in ("GET", "POST"):
            response = await client.request(method, f"/downloads/{bad}")
            assert response.status == 404, (bad, method)
            assert response.content_type == "text/html"
            assert "Link not found" in await response.text()
            assert "form-action 'self'" in response.headers["Content-Security-Policy"]
    assert await db.fetchval("SELECT used FROM download_links") == 0
    assert (await client.post(f"/downloads/{token}")).status == 200


def cross_site_refusals() -> float:
    labels = {"reason": "download_cross_site"}
    return REGISTRY.get_sample_value("colmena_security_events_total", labels) or 0.0


async def test_cross_site_download_posts_are_403_and_spend_nothing(
    active, smtp, db, make_client
) -> None:
    token = await deliver_inline(active, await insert_payment(db), smtp)
    client = await make_client(active)
    own = str(client.make_url("/")).rstrip("/")
    before = cross_site_refusals()
    for headers in (
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "cross-site", "Origin": own},
        {"Origin": "https://evil.example"},
        {"Origin": "https://shop.example.com.evil.example"},
        {"Origin": "null"},
    ):
        response = await client.post(f"/downloads/{token}", headers=headers)
        assert response.status == 403, headers
        assert response.content_type == "text/html"
        assert "Download blocked" in await response.text()
    assert cross_site_refusals() == before + 5
    assert await db.fetchval("SELECT used FROM download_links") == 0
    assert await db.fetchval("SELECT count(*) FROM download_log") == 0

    # The page's own form, from the public origin (COLMENA_LICENSE_BASE_URL), or from this one.
    page = {"Origin": "https://SHOP.example.com:443", "Sec-Fetch-Site": "same-origin"}
    downloaded = await client.post(f"/downloads/{token}", headers=page)
    assert downloaded.status == 200 and downloaded.content_type == "application/zip"
    assert downloaded.headers["Server"] == "colmena"  # a streamed answer has them too
    assert downloaded.headers["Strict-Transport-Security"].startswith("max-age=")
    assert await db.fetchval("SELECT used FROM download_links") == 1


async def test_an_expired_link_is_410_on_get_and_post(active, smtp, db, make_client) -> None:
    token = await deliver_inline(active, await insert_payment(db), smtp)
    await db.execute("UPDATE download_links SET expires_at = now() - interval '1 second'")
    client = await make_client(active)
    page = await client.get(f"/downloads/{token}")
    assert page.status == 410 and "venció" in await page.text()
    post = await client.post(f"/downloads/{token}")
    assert post.status == 410 and "expired" in await post.text()
    assert await db.fetchval("SELECT used FROM download_links") == 0
    assert await db.fetchval("SELECT outcome FROM download_log") == "expired"


async def test_two_simultaneous_posts_on_a_one_time_link_download_once(
    active, smtp, db, make_client
) -> None:
    token = await deliver_inline(active, await insert_payment(db), smtp)
    client = await make_client(active)
    responses = await asyncio.gather(*(client.post(f"/downloads/{token}") for _ in range(5)))
    assert sorted(r.status for r in responses) == [200, 410, 410, 410, 410]
    assert await db.fetchval("SELECT used FROM download_links") == 1


async def test_per_ip_rate_limit_answers_429(active, smtp, db, make_client) -> None:
    client = await make_client(active.model_copy(update={"rate_limit_downloads": "2/min"}))
    forged = secrets.token_urlsafe(32)
    assert (await client.get(f"/downloads/{forged}")).status == 404
    assert (await client.get(f"/downloads/{forged}")).status == 404
    limited = await client.post(f"/downloads/{forged}")
    assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1


async def test_per_token_rate_limit_answers_429_before_the_database(
    active, smtp, db, make_client
) -> None:
    token = await deliver_inline(active, await insert_payment(db), smtp)
    client = await make_client(active.model_copy(update={"license_download_token_per_minute": 1}))
    assert (await client.post(f"/downloads/{token}")).status == 200
    limited = await client.post(f"/downloads/{token}")
    assert limited.status == 429 and "Too many attempts" in await limited.text()
    assert limited.headers["Retry-After"]
    other = secrets.token_urlsafe(32)  # another token is limited on its own
    assert (await client.post(f"/downloads/{other}")).status == 404
    assert await db.fetchval("SELECT count(*) FROM download_log") == 1


async def test_a_missing_product_is_503_and_the_link_stays_unspent(
    active, smtp, db, make_client, tmp_path
) -> None:
    token = await deliver_inline(active, await insert_payment(db), smtp)
    product = active.license_products_path / PRODUCT
    product.rename(tmp_path / "elsewhere")  # this ingress's host lacks the product
    client = await make_client(active)
    with capture_logs() as logs:
        response = await client.post(f"/downloads/{token}")
    assert response.status == 503 and "not spent" in await response.text()
    assert "does not exist" in refusal(logs)["reason"]
    assert await db.fetchval("SELECT used FROM download_links") == 0
    assert await db.fetchval("SELECT outcome FROM download_log") == "unavailable"

    (tmp_path / "elsewhere").rename(product)
    assert (await client.post(f"/downloads/{token}")).status == 200


async def test_a_package_that_does_not_match_its_recorded_digest_is_503_and_unspent(
    active, smtp, db, make_client
) -> None:
    """This host's product differs from the one the link was emailed with: the ingress
    refuses to send bytes other than those the worker recorded."""
    token = await deliver_inline(active, await insert_payment(db), smtp)
    recorded = await db.fetchval("SELECT package_sha256 FROM licenses")
    readme = active.license_products_path / PRODUCT / "README.txt"
    original, built = readme.read_bytes(), readme.stat()
    readme.write_bytes(b"Colmena bot, another build\n")
    client = await make_client(active)
    with capture_logs() as logs:
        response = await client.post(f"/downloads/{token}")
    assert response.status == 503 and "not spent" in await response.text()
    line = refusal(logs)
    assert line["level"] == "error" and f"not the recorded {recorded}" in line["reason"]
    assert "colmena license resend" in line["event"]
    assert await db.fetchval("SELECT used FROM download_links") == 0
    assert await db.fetchval("SELECT outcome FROM download_log") == "unavailable"

    readme.write_bytes(original)  # the same file again, its time included: the same package
    os.utime(readme, ns=(built.st_atime_ns, built.st_mtime_ns))
    downloaded = await client.post(f"/downloads/{token}")
    assert downloaded.status == 200
    assert hashlib.sha256(await downloaded.read()).hexdigest() == recorded


def refusal(logs: LogCapture) -> dict[str, Any]:
    [line] = [
        json.loads(text)
        for text in logs.text().splitlines()
        if text.startswith("{") and "download refused" in json.loads(text)["event"]
    ]
    return line


async def test_public_key_and_status_endpoints(active, smtp, db, make_client) -> None:
    await deliver_inline(active, await insert_payment(db), smtp)
    key = await db.fetchval("SELECT license_key FROM licenses")
    client = await make_client(active)
    served = await client.get("/licenses/public-key")
    assert served.status == 200
    assert verify_license_key(key, load_public_key(await served.text())).product == "colmena-bot"

    valid = await client.get(f"/licenses/{key}/status")
    assert valid.status == 200
    assert (await valid.json())["status"] == "valid"
    for bad in (tampered(key), key[:-3], "abc"):
        refused = await client.get(f"/licenses/{bad}/status")
        assert refused.status == 400
        assert (await refused.json())["error"]["code"] == "invalid_license_key"
    unknown = await client.get(f"/licenses/{a_key()}/status")  # signed by us, never stored here
    assert unknown.status == 404


async def test_status_says_expired_for_an_expired_license(active, db, make_client) -> None:
    payment_id = await insert_payment(db)
    license = License(
        license_id="6d3f4a8e-0f7e-4c39-9a53-0c0e6a1b7f10", product="colmena-bot",
        edition="standard", customer_email="ana@example.com", seats=1,
        issued_at=datetime(2020, 1, 1, tzinfo=UTC), expires_at=datetime(2021, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    key = sign_license(license, load_private_key(SIGNING_KEY.private_pem))
    await store.issue(
        db,
        license,
        payment=await payments.get(db, payment_id),
        locale=None,
        key=key,
        package=("0" * 64, 1),
        link=store.LinkDraft(token_sha256=bytes(32), ttl_s=60, max_downloads=1),
        lease_s=0,
    )
    client = await make_client(active)
    assert (await (await client.get(f"/licenses/{key}/status")).json())["status"] == "expired"


async def test_cleanup_removes_dead_links_and_a_resend_records_the_same_package(
    active, smtp, db
) -> None:
    await deliver_inline(active, await insert_payment(db), smtp)
    license_id, sha, size = await db.fetchrow(
        "SELECT id, package_sha256, package_size FROM licenses"
    )
    resources = resources_for(active)
    await resources.start()
    try:
        assert await cleanup_licenses(resources) == 0  # the link still works: nothing to remove
        await db.execute(
            "UPDATE download_links SET expires_at = now() - interval '9 days', "
            "created_at = now() - interval '12 days'"
        )
        assert await cleanup_licenses(resources) == 1
        assert await db.fetchval("SELECT count(*) FROM download_links") == 0

        await db.execute("UPDATE licenses SET package_sha256 = NULL, package_size = NULL")
        shutil.rmtree(active.license_archive_path)  # a fresh host: no archive cached
        async with resources.pool.acquire() as conn:
            email_id = await store.add_email(conn, license_id, "resend")
        await send_email(resources, email_id)
    finally:
        await resources.close()
    [_, mail] = await smtp.wait_for_async(2)
    assert LINK.search(mail.message.get_body(preferencelist=("plain",)).get_content())
    assert tuple(await db.fetchrow("SELECT package_sha256, package_size FROM licenses")) == (
        sha,
        size,
    )


async def test_dev_without_a_key_generates_one_once_and_production_refuses(
    settings, tmp_path
) -> None:
    dev = settings.model_copy(
        update={"env": "dev", "license_signing_key": None, "data_dir": tmp_path / "d"}
    )
    first = signing_key(dev)
    key_file = tmp_path / "d" / "license-signing-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.public_key().public_bytes_raw() == public_key(dev).public_bytes_raw()
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["license-signing-key.pem"]
    with pytest.raises(SigningKeyMissing, match="COLMENA_LICENSE_SIGNING_KEY"):
        signing_key(dev.model_copy(update={"env": "production"}))


async def test_dev_without_smtp_writes_the_email_to_a_file(settings, smtp, db, tmp_path) -> None:
    dev = license_settings(settings, smtp, tmp_path, smtp_host=None)
    assert isinstance(mailer_for(dev), MailDropMailer)
    with pytest.raises(MailerNotConfigured, match="COLMENA_SMTP_HOST") as unset:
        mailer_for(dev.model_copy(update={"env": "production"}))
    assert is_permanent(unset.value)
    payment_id = await insert_payment(db, locale=None)
    resources = resources_for(dev)
    await resources.start()
    try:
        await deliver_license(resources, payment_id)
    finally:
        await resources.close()
    [eml] = (dev.data_dir / "mail").glob("*.eml")
    message = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert message["To"] == "ana@example.com" and "license is ready" in message["Subject"]
    assert smtp.messages == []
    assert await db.fetchval("SELECT sent_at IS NOT NULL FROM license_emails")
    assert LINK.search(message.get_body(preferencelist=("plain",)).get_content())
