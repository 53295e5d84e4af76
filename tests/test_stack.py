"""The stack that ships is the stack that is tested: ops/Dockerfile and docker-compose.yml, built
and started here (bases from Debian's packages, docker-compose.local.yml), then used as an
operator would: a paid webhook in, the license emailed, an invoice stamped with its PDF, a
worker service scaled, a worker restarted under load, the stack taken down and brought back.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from colmena.cli.payments import build_stripe_event
from colmena.gateways import stripe
from colmena.sandbox.pac import SANDBOX_TOKEN
from colmena.sandbox.test_csd import CSD_PASSWORD, ISSUER_NAME, ISSUER_RFC, make_ca, make_csd
from tests.stack_support import (
    COLMENA_IMAGE,
    ROOT,
    Stack,
    build_images,
    copy_project,
    run,
    wait_for,
    wait_for_prebuild,
)

pytestmark = [pytest.mark.stack, pytest.mark.docker]

PRODUCT = "colmena-enterprise"
WEBHOOK_SECRET = f"whsec_{secrets.token_hex(16)}"
LOAD = 40


def _quoted(pem: str) -> str:
    return '"' + pem.strip() + '"'


def write_configuration(project: Path, name: str) -> None:
    """`.env`, the product files and the CSD next to the compose file, as an operator would."""
    keys = project / "keys"
    keys.mkdir()
    run([ROOT / ".venv" / "bin" / "colmena", "license", "keygen", "--out-dir", keys])
    seal = dict(
        line.split("=", 1)
        for line in run([ROOT / ".venv" / "bin" / "colmena", "keys", "keygen"]).stdout.split()
    )
    csd_dir = project / "secrets" / "csd"
    csd_dir.mkdir(parents=True)
    make_csd(make_ca()).write(csd_dir, "csd")
    for path in csd_dir.iterdir():
        path.chmod(0o644)  # read by the stamping worker's user through the read-only mount
    (project / "products" / PRODUCT).mkdir(parents=True)
    (project / "products" / PRODUCT / "README.txt").write_text("colmena enterprise\n")

    database_password, broker_password = secrets.token_hex(16), secrets.token_hex(16)
    settings = {
        "POSTGRES_PASSWORD": database_password,
        "RABBITMQ_DEFAULT_USER": "colmena",
        "RABBITMQ_DEFAULT_PASS": broker_password,
        "GRAFANA_ADMIN_PASSWORD": secrets.token_hex(16),
        "COLMENA_DATABASE_URL": f"postgresql://colmena:{database_password}@postgres:5432/colmena",
        "COLMENA_BROKER_URL": f"amqp://colmena:{broker_password}@rabbitmq:5672/%2F?heartbeat=30",
        "COLMENA_ENV": "production",
        # One consumer per worker container, so a scale of 3 shows 3 consumers.
        "COLMENA_WORKER_PROCESSES": "1",
        "COLMENA_WORKER_THREADS": "4",
        "COLMENA_MIN_BACKOFF_MS": "200",
        "COLMENA_MAX_BACKOFF_MS": "2000",
        "COLMENA_RELAY_GRACE_S": "1",
        "COLMENA_RATE_LIMIT_WEBHOOKS": "off",
        "COLMENA_STRIPE_WEBHOOK_SECRETS": WEBHOOK_SECRET,
        "COLMENA_LICENSE_SIGNING_KEY": _quoted((keys / "license-signing-key.pem").read_text()),
        "COLMENA_LICENSE_PUBLIC_KEY": _quoted((keys / "license-public-key.pem").read_text()),
        "COLMENA_LICENSE_BASE_URL": "https://licenses.example.com",
        "COLMENA_SMTP_HOST": "smtp",
        "COLMENA_SMTP_PORT": "1025",
        "COLMENA_SMTP_STARTTLS": "false",
        "COLMENA_SMTP_SENDER": "licenses@example.com",
        "COLMENA_PAC_ENVIRONMENT": "TEST",
        "COLMENA_PAC_BASE_URL": "http://pac:8090",
        "COLMENA_PAC_API_URL": "http://pac:8090",
        "COLMENA_PAC_TOKEN": SANDBOX_TOKEN,
        "COLMENA_CFDI_CSD_CER_PATH": "/run/colmena/csd/csd.cer",
        "COLMENA_CFDI_CSD_KEY_PATH": "/run/colmena/csd/csd.key",
        "COLMENA_CFDI_CSD_PASSWORD": CSD_PASSWORD,
        "COLMENA_CFDI_ISSUER_RFC": ISSUER_RFC,
        "COLMENA_CFDI_ISSUER_NAME": ISSUER_NAME,
        "COLMENA_CFDI_ISSUER_REGIME": "601",
        "COLMENA_CFDI_ISSUER_POSTAL_CODE": "42501",
        "COLMENA_SECRET_KEYS": Fernet.generate_key().decode(),
        **seal,
        "COLMENA_BOT_ADMIN_TOKEN": secrets.token_hex(32),
        # Bots of this run only, on no network; rate sources that are never reached.
        "COLMENA_BOT_INSTANCE": name,
        "COLMENA_BOT_NETWORK": "none",
        "COLMENA_BCV_URL": "http://127.0.0.1:9/",
        "COLMENA_BINANCE_P2P_URL": "http://127.0.0.1:9/",
        "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
    }
    lines = [f"{key}={value}" for key, value in settings.items()]
    (project / ".env").write_text("\n".join(lines) + "\n")


def license_event(*, rfc: str | None = None) -> tuple[str, bytes]:
    metadata = {
        "email": f"buyer-{secrets.token_hex(4)}@example.com",
        "locale": "es-MX",
        "product": PRODUCT,
        "product_kind": "license",
        "edition": "enterprise",
        "seats": "5",
    }
    if rfc:
        metadata.update(
            rfc=rfc,
            fiscal_name="PUBLICO EN GENERAL",
            fiscal_regime="616",
            fiscal_postal_code="06600",
            cfdi_use="S01",
        )
    event = build_stripe_event(
        "payment_intent.succeeded",
        payment_id=None,
        amount=150_000,
        currency="mxn",
        metadata=metadata,
    )
    return metadata["email"], json.dumps(event).encode()


def post_webhook(stack: Stack, body: bytes) -> None:
    url = f"http://{stack.ingress_address}:8080/webhooks/stripe"
    headers = {
        "Content-Type": "application/json",
        "Stripe-Signature": stripe.sign(body.decode(), WEBHOOK_SECRET),
    }
    status, answer = stack.post(url, body, headers)
    assert status in (200, 202), (status, answer)


def payments_consumers(stack: Stack) -> int:
    status = stack.compose("exec", "-T", "--index", "1", "ingress", "colmena", "status", "--json")
    return int(json.loads(status.stdout)["queues"]["payments"]["consumers"])


def image_size(image: str) -> str:
    size = int(run(["docker", "image", "inspect", "-f", "{{.Size}}", image]).stdout)
    return f"{image} {size / 1e6:.0f} MB"


def test_the_stack_builds_starts_and_keeps_its_data(tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    started = time.monotonic()
    wait_for_prebuild(timeout=1500)
    timings["waited for prebuild"] = time.monotonic() - started
    project = copy_project(tmp_path)
    stack = Stack(project)
    write_configuration(project, stack.name)
    timings.update(build_images(project))
    try:
        started = time.monotonic()
        stack.up()
        wait_for("every healthcheck", stack.all_healthy, timeout=300, every=2)
        timings["stack up, healthy"] = time.monotonic() - started

        # Every container runs as a non-root user; the two that drive the Docker engine in the
        # socket's group (their reconcile passes are part of every healthy scheduler tick).
        for container in stack.containers():
            service = container["Config"]["Labels"]["com.docker.compose.service"]
            user = container["Config"]["User"]
            assert user not in ("", "0", "root"), service
            if service in ("worker-bots", "scheduler"):
                socket_group = str(os.stat("/var/run/docker.sock").st_gid)
                assert container["HostConfig"]["GroupAdd"] == [socket_group], service
        for service in ("worker-bots", "scheduler"):  # and the group is enough to reach it
            pinged = stack.compose(
                "exec", "-T", service, "python3", "-c",
                "import docker, os; print(os.getuid(), docker.from_env().ping())",
            )  # fmt: skip
            assert pinged.stdout.split() == ["10001", "True"], (service, pinged.stderr)

        # A paid license with a CFDI: the license email, the invoice stamped, its PDF filed.
        email, body = license_event(rfc="XAXX010101000")
        post_webhook(stack, body)
        smtp_logs = wait_for(
            "the license email",
            lambda: next((logs for logs in [stack.smtp_logs()] if email in logs), None),
            timeout=120,
        )
        assert "https://licenses.example.com/downloads/" in smtp_logs
        pdf_path = wait_for(
            "the stamped invoice's PDF",
            lambda: stack.sql(
                "SELECT pdf_path FROM invoices WHERE status = 'stamped' AND pdf_path IS NOT NULL"
            ),
            timeout=180,
        )
        head = stack.compose(
            "exec", "-T", "worker-stamping", "python3", "-c",
            f"import sys; sys.stdout.write(open({pdf_path!r}, 'rb').read(5).decode())",
        )  # fmt: skip
        assert head.stdout == "%PDF-"
        stamping_logs = stack.logs(stack.containers("worker-stamping")[0]["Name"].lstrip("/"))
        assert "harfbuzz" not in stamping_logs.lower()

        # Three payments consumers after --scale.
        stack.compose("up", "-d", "--no-recreate", "--scale", "worker-payments=3")
        wait_for("3 payments consumers", lambda: payments_consumers(stack) == 3, timeout=120)

        # A worker container restarted under load loses nothing: half the load goes in while
        # it works, it is stopped (SIGKILL after 2 s) with that half in flight, the other half
        # arrives while it is down, then it starts again.
        [licenses_worker] = stack.containers("worker-licenses")
        bodies = [license_event()[1] for _ in range(LOAD)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda body: post_webhook(stack, body), bodies[: LOAD // 2]))
            run(["docker", "stop", "-t", "2", licenses_worker["Id"]])
            list(pool.map(lambda body: post_webhook(stack, body), bodies[LOAD // 2 :]))
        payments_total = LOAD + 1
        wait_for(
            "every payment recorded",
            lambda: stack.count("SELECT count(*) FROM payments") == payments_total,
            timeout=120,
        )
        assert stack.count("SELECT count(*) FROM licenses") < payments_total
        run(["docker", "start", licenses_worker["Id"]])
        wait_for(
            "every payment licensed and emailed",
            lambda: (
                stack.count(
                    "SELECT count(*) FROM licenses l JOIN license_emails e ON e.license_id = l.id "
                    "WHERE e.sent_at IS NOT NULL"
                )
                >= payments_total
            ),
            timeout=300,
            every=2,
        )
        assert stack.count("SELECT count(*) FROM payments") == payments_total
        assert stack.count("SELECT count(*) FROM licenses") == payments_total
        status = stack.compose(
            "exec", "-T", "--index", "1", "ingress", "colmena", "status", "--json"
        )
        assert json.loads(status.stdout)["dead_letters"] == 0

        # down (volumes kept) and up again: the data is still there.
        stack.down()
        started = time.monotonic()
        stack.up()
        wait_for("every healthcheck after down/up", stack.all_healthy, timeout=300, every=2)
        timings["stack up again, healthy"] = time.monotonic() - started
        assert stack.count("SELECT count(*) FROM payments") == payments_total
        assert stack.count("SELECT count(*) FROM licenses") == payments_total
        assert stack.count("SELECT count(*) FROM invoices WHERE status = 'stamped'") == 1
    except Exception:
        print(stack.unhealthy_report())
        raise
    finally:
        stack.down("-v")
    sizes = [
        COLMENA_IMAGE,
        *(
            f"colmena-local/{n}"
            for n in ("postgres:15", "rabbitmq:3", "redis:7", "prometheus:2", "debian:bookworm")
        ),
    ]
    print("\n" + "\n".join(f"{what}: {seconds:.1f} s" for what, seconds in timings.items()))
    print("\n".join(image_size(image) for image in sizes))
