"""License emails built and sent, and the worker CPU each one costs.

colmena's mailer (`SmtpMailer.send_email`: the message's bytes from `gateways.mime`, then MAIL,
RCPT and DATA on a kept session) against a baseline measured in the same run: the email
package building the same email (EmailMessage, set_content, add_alternative) and aiosmtplib's
`send_message` flattening it, with a NOOP before each reuse of the session, which is how
colmena sent mail before. Both render the email with `license_delivery_email` first, in the
locales es and en alternately, and send it to an SMTP server (the benches' sink, accepting all)
in a child process, so the CPU figures are the sender's alone (this process's
`time.process_time`), logging as a worker does (JSON at INFO). The build figures time the bytes
alone: `Composer.compose` against `EmailMessage` + `as_bytes`. Rounds alternate the two; each
figure is the median round.

    python bench/mail.py [--messages 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

import aiosmtplib
import structlog

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.common import exit_on_sigterm, figure, machine  # noqa: E402
from bench.standins.smtp import SmtpSink  # noqa: E402
from colmena.config.logging import configure_logging  # noqa: E402
from colmena.gateways.mail import RenderedEmail, SmtpMailer, license_delivery_email  # noqa: E402
from colmena.gateways.mime import Composer  # noqa: E402

SENDER = "Colmena <licencias@colmena.example>"
TO = "ana.perez@example.com"
NOW = datetime(2026, 3, 4, 15, 30, tzinfo=UTC)
log = structlog.get_logger("colmena.gateways.mail")


def rendered(index: int) -> RenderedEmail:
    return license_delivery_email(
        locale=("es-VE", "en-US")[index % 2],
        product_name="Colmena Industrial",
        amount="1,500.00 MXN",
        download_url=f"https://licencias.colmena.example/downloads/{index:043d}",
        link_expires_at=NOW + timedelta(hours=72),
        license_expires_at=NOW + timedelta(days=365),
    )


def email_package_message(email: RenderedEmail) -> EmailMessage:
    """The email as colmena built it with the email package before `gateways.mime`."""
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = TO
    message["Subject"] = email.subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain="colmena.example")
    message.set_content(email.text)
    message.add_alternative(email.html, subtype="html")
    return message


class EmailPackageMailer:
    """The baseline's sender: one kept session, NOOP before each reuse, `send_message`, and
    the same log line as colmena's mailer."""

    def __init__(self, host: str, port: int) -> None:
        self._client = aiosmtplib.SMTP(
            hostname=host, port=port, local_hostname="colmena.example", start_tls=False
        )
        self._connected = False

    async def send_email(self, to: str, email: RenderedEmail) -> str:
        message = email_package_message(email)
        if self._connected:
            await self._client.noop()
        else:
            await self._client.connect()
            self._connected = True
        await self._client.send_message(message)
        message_id = str(message["Message-ID"])
        log.info("mail_sent", message_id=message_id, host=self._client.hostname, port=25)
        return message_id

    async def close(self) -> None:
        await self._client.quit()


async def send_round(
    send: Callable[[str, RenderedEmail], Awaitable[str]], messages: int
) -> tuple[float, float]:
    """(CPU seconds, wall seconds) for rendering and sending `messages` emails one by one."""
    cpu, wall = time.process_time(), time.perf_counter()
    for index in range(messages):
        await send(TO, rendered(index))
    return time.process_time() - cpu, time.perf_counter() - wall


def build_round(build: Callable[[RenderedEmail], bytes], messages: int) -> float:
    """CPU seconds for building the bytes of `messages` already rendered emails."""
    emails = [rendered(index) for index in range(messages)]
    cpu = time.process_time()
    for email in emails:
        build(email)
    return time.process_time() - cpu


async def measure(host: str, port: int, messages: int, rounds: int) -> int:
    colmena = SmtpMailer(host=host, port=port, sender=SENDER)
    baseline = EmailPackageMailer(host, port)
    await colmena.send_email(TO, rendered(0))  # open both sessions before timing
    await baseline.send_email(TO, rendered(0))
    composer = Composer(SENDER)

    def compose(email: RenderedEmail) -> bytes:
        return composer.compose(to=TO, subject=email.subject, text=email.text, html=email.html).data

    def email_package(email: RenderedEmail) -> bytes:
        return email_package_message(email).as_bytes(policy=policy.SMTP)

    ours: list[tuple[float, float]] = []
    theirs: list[tuple[float, float]] = []
    built_ours: list[float] = []
    built_theirs: list[float] = []
    for round_ in range(rounds):
        theirs.append(await send_round(baseline.send_email, messages))
        ours.append(await send_round(colmena.send_email, messages))
        built_theirs.append(build_round(email_package, messages))
        built_ours.append(build_round(compose, messages))
        print(
            f"round {round_ + 1}: colmena {ours[-1][0] / messages * 1e6:.0f} µs CPU/email, "
            f"email package {theirs[-1][0] / messages * 1e6:.0f} µs CPU/email",
            flush=True,
        )
    await colmena.close()
    await baseline.close()

    def cpu_us(runs: list[tuple[float, float]]) -> float:
        return statistics.median(cpu for cpu, _ in runs) / messages * 1e6

    def rate(runs: list[tuple[float, float]]) -> float:
        return messages / statistics.median(wall for _, wall in runs)

    def build_us(runs: list[float]) -> float:
        return statistics.median(runs) / messages * 1e6

    what = "email package, NOOP per reuse"
    figure("license email build+send CPU", cpu_us(ours), "µs/email", baseline=cpu_us(theirs),
           baseline_name=what)  # fmt: skip
    figure("license emails sent, one at a time", rate(ours), "emails/s", baseline=rate(theirs),
           baseline_name=what)  # fmt: skip
    figure("license email bytes built", build_us(built_ours), "µs/email",
           baseline=build_us(built_theirs), baseline_name="EmailMessage + as_bytes")  # fmt: skip
    return 2 * (rounds * messages + 1)


def serve_sink() -> None:
    """The child process: an SMTP sink; prints its port, and how many emails it accepted once
    its stdin closes."""
    with SmtpSink() as sink:
        print(sink.port, flush=True)
        sys.stdin.read()
        print(sink.received, flush=True)


def main() -> None:
    exit_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000, help="emails per round and sender")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        serve_sink()
        return
    print(f"machine: {machine()}")
    # A worker's logging (JSON lines at INFO), written where they cost their CPU and no more.
    configure_logging(dev=False, level="INFO")
    logging.getLogger().handlers[0].setStream(open(os.devnull, "w"))  # noqa: SIM115
    child = subprocess.Popen(
        [sys.executable, __file__, "--sink"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        port = int(child.stdout.readline())
        sent = asyncio.run(measure("127.0.0.1", port, args.messages, args.rounds))
    finally:
        child.stdin.close()
        accepted = child.stdout.readline().strip()
        child.wait(timeout=30)
    print(f"emails sent {sent}, accepted by the server {accepted}")
    if accepted != str(sent):
        raise SystemExit("the server did not accept every email sent")


if __name__ == "__main__":
    main()
