"""The first hour of a new user: `colmena dev` in an empty directory, then every command its
banner and the README's stories name, from a second terminal with no COLMENA_* variable.

Each must succeed with the outcome the README promises: payment approved, license emailed and
downloadable, Mercado Pago payment settled, invoice stamped and emailed, rates listed, tenant bot
started and its logs read, a dead letter listed and requeued.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email import message_from_bytes, policy
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import wait_for
from tests.test_dev import free_port, ready

Check = Callable[[], Awaitable[object]]
PAY = "colmena trigger stripe payment_intent.succeeded"


@dataclass
class DevSession:
    """A running `colmena dev` and a way to type commands in a second terminal."""

    workdir: Path
    port: int
    process: subprocess.Popen[bytes]
    output: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("COLMENA_")}

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        """A command line as a user types it (`colmena ...` or `curl ...`)."""
        argv = shlex.split(command)
        if argv[0] == "colmena":
            argv = [sys.executable, "-m", "colmena", *argv[1:]]
        return subprocess.run(
            argv, cwd=self.workdir, env=self.env(), capture_output=True, text=True, timeout=60
        )

    def ok(self, command: str) -> str:
        result = self.run(command)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def json(self, command: str) -> object:
        return json.loads(self.ok(command))

    def banner(self) -> str:
        return self.output.read_text(errors="replace")

    def mails(self) -> list[Path]:
        box = self.workdir / ".colmena" / "mail"
        return sorted(box.glob("*.eml")) if box.exists() else []


@pytest.fixture
async def dev(tmp_path: Path) -> AsyncIterator[DevSession]:
    port = free_port()
    output = tmp_path / "dev-output.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLMENA_")}
    env["COLMENA_HTTP_PORT"] = str(port)
    # This machine's Docker engine has no bridge network; a laptop's has (the default).
    env["COLMENA_BOT_NETWORK"] = "none"
    workdir = tmp_path / "project"
    workdir.mkdir()
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "colmena", "dev"],
            cwd=workdir,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    session = DevSession(workdir=workdir, port=port, process=process, output=output)
    try:
        await wait_for(lambda: ready(port), timeout=90, interval=0.25)
        await wait_for(_banner_printed(session), timeout=30, interval=0.1)
        yield session
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    assert process.returncode == 0, session.banner()[-4000:]


def _banner_printed(session: DevSession) -> Check:
    async def check() -> bool:
        return "colmena dev is running" in session.banner()

    return check


def banner_commands(banner: str) -> list[str]:
    """The command lines under the banner's "try next" heading."""
    lines = banner.split("try next", 1)[1].splitlines()[1:]
    commands = []
    for line in lines:
        stripped = line.strip()
        if not stripped:
            break
        if stripped.startswith("colmena "):
            commands.append(stripped.split("  #", 1)[0].strip())
    return commands


async def _payments(session: DevSession, status: str, provider: str) -> list[dict]:
    found = session.json("colmena payments list --json")
    assert isinstance(found, list)
    return [p for p in found if p["status"] == status and p["provider"] == provider]


async def test_every_story_runs_out_of_the_box(dev: DevSession) -> None:
    # The banner's own suggestions, each exactly as printed.
    commands = banner_commands(dev.banner())
    assert commands, dev.banner()
    for command in commands:
        dev.ok(command)

    # Stripe: a payment approved, its license emailed and downloadable.
    dev.ok(f"{PAY} --email ana@example.com")
    await wait_for(lambda: _payments(dev, "approved", "stripe"), timeout=30, interval=0.25)
    await wait_for(_mail_to(dev, "ana@example.com"), timeout=30, interval=0.25)
    link = _download_link(_mail_to_now(dev, "ana@example.com"))
    async with aiohttp.ClientSession() as http:
        async with http.get(link) as page:
            assert page.status == 200
        async with http.post(link, headers={"Origin": dev.base}) as download:
            assert download.status == 200
            package = await download.read()
    license_key = zipfile.ZipFile(io.BytesIO(package)).read("license.key").decode().strip()
    # Verified with the dev key files `colmena dev` made, not new ones.
    assert "signature: valid" in dev.ok(f"colmena license verify {license_key}")
    licenses = dev.json("colmena license list --email ana@example.com --json")
    assert isinstance(licenses, list) and len(licenses) == 1

    # Mercado Pago: made in the dev sandbox, notified, settled.
    dev.ok("colmena trigger mercadopago approved")
    await wait_for(lambda: _payments(dev, "approved", "mercadopago"), timeout=30, interval=0.25)

    # CFDI: stamped through the PAC sandbox with the locally minted test CSD, and emailed.
    dev.ok(f"{PAY} --email cfdi@example.com --rfc XAXX010101000")
    await wait_for(_stamped_invoice(dev), timeout=60, interval=0.5)
    await wait_for(_mail_with_attachment(dev, "cfdi@example.com", ".xml"), timeout=60, interval=0.5)

    # Rates: scraped from the recorded sandbox answers, listed and marked as such.
    dev.ok("colmena rates scrape bcv")
    assert "[sandbox]" in dev.ok("colmena rates list")

    # Tenants and bots: the README's curl lines, as written but for the port.
    created = dev.ok("colmena tenants create --email bot@example.com")
    token = re.search(r"cmt_[A-Za-z0-9_\-]+", created)
    assert token is not None, created
    curl = shutil.which("curl")
    assert curl is not None, "curl is needed to run the README's lines"
    started = json.loads(dev.ok(_curl(dev, token.group(0), "-X POST", "/api/v1/bot/start")))
    assert started["status"] == "queued"
    await wait_for(_bot_running(dev, token.group(0)), timeout=60, interval=0.5)
    await wait_for(_bot_logged(dev, token.group(0)), timeout=60, interval=0.5)

    # Keys: a provider key stored through the API, then re-encrypted with the dev key file.
    stored = dev.ok(
        _curl(
            dev,
            token.group(0),
            '-X POST -d \'{"provider": "binance", "key": "k3y-for-tests"}\'',
            "/api/v1/keys",
        )
    )
    assert json.loads(stored)["provider"] == "binance"
    # The bots actor takes the sealed key in; rotating is idempotent, so repeat until it has.
    await wait_for(_rotated_one_key(dev), timeout=30, interval=0.5)

    # Operators: status, check, and a dead letter listed, fixed and requeued.
    status = dev.json("colmena status --json")
    assert isinstance(status, dict) and status["broker_error"] is None
    dev.ok(f"{PAY} --email lost@example.com --product missing-product")
    letters = await wait_for(_dead_letters(dev), timeout=60, interval=0.5)
    [letter] = letters
    (dev.workdir / ".colmena" / "products" / "missing-product").mkdir(parents=True)
    (dev.workdir / ".colmena" / "products" / "missing-product" / "README.txt").write_text(
        "now here\n"
    )
    assert "requeued 1 message(s)" in dev.ok(f"colmena dlq requeue --id {letter['message_id']}")
    await wait_for(_mail_to(dev, "lost@example.com"), timeout=30, interval=0.25)


def _curl(dev: DevSession, token: str, options: str, path: str) -> str:
    return f'curl -sS {options} -H "Authorization: Bearer {token}" {dev.base}{path}'


def _mail_to_now(dev: DevSession, address: str) -> bytes | None:
    for path in dev.mails():
        raw = path.read_bytes()
        if address in message_from_bytes(raw, policy=policy.default).get("To", ""):
            return raw
    return None


def _mail_to(dev: DevSession, address: str) -> Check:
    async def check() -> bytes | None:
        return _mail_to_now(dev, address)

    return check


def _mail_with_attachment(dev: DevSession, address: str, suffix: str) -> Check:
    async def check() -> bool:
        for path in dev.mails():
            mail = message_from_bytes(path.read_bytes(), policy=policy.default)
            if address not in mail.get("To", ""):
                continue
            if any(
                (part.get_filename() or "").endswith(suffix) for part in mail.iter_attachments()
            ):
                return True
        return False

    return check


def _download_link(raw: bytes | None) -> str:
    assert raw is not None
    mail = message_from_bytes(raw, policy=policy.default)
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None
    found = re.search(r"https?://\S+/downloads/\S+", body.get_content())
    assert found is not None, body.get_content()
    return found.group(0)


def _stamped_invoice(dev: DevSession) -> Check:
    async def check() -> bool:
        return "stamped" in dev.ok("colmena invoices list")

    return check


def _bot_running(dev: DevSession, token: str) -> Check:
    async def check() -> bool:
        status = json.loads(dev.ok(_curl(dev, token, "", "/api/v1/bot/status")))
        return status["actual"] == "running"

    return check


def _bot_logged(dev: DevSession, token: str) -> Check:
    async def check() -> bool:
        result = dev.run(_curl(dev, token, "-f", "/api/v1/bot/logs?tail=100"))
        return result.returncode == 0 and bool(json.loads(result.stdout).get("lines"))

    return check


def _rotated_one_key(dev: DevSession) -> Check:
    async def check() -> bool:
        return "1 provider key(s) re-encrypted" in dev.ok("colmena keys rotate")

    return check


def _dead_letters(dev: DevSession) -> Check:
    async def check() -> list:
        found = dev.json("colmena dlq list --json")
        assert isinstance(found, list)
        return found

    return check
