"""Helpers for the tenant and bot tests: settings per runtime, tenants, waiting on the runtime."""

from __future__ import annotations

import io
import tarfile
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import docker
from cryptography.fernet import Fernet
from pydantic import SecretStr

from colmena.config import Settings
from colmena.domain.key_sealing import encode_key, generate_private_key, public_key_of
from colmena.domain.tenants import DEFAULT_CONFIG, new_token, token_digest
from colmena.runtime.publisher import AmqpPublisher
from colmena.runtime.resources import Resources
from colmena.store import tenants as store
from colmena.supervisor.bot_image import find_busybox
from colmena.supervisor.runtime import INSTANCE_LABEL, BotStatus, Runtime

ADMIN_TOKEN = "admin-" + uuid.uuid4().hex
FIRST_KEY = Fernet.generate_key().decode()
SEAL_PRIVATE_KEY = generate_private_key()  # the supervisor's; the ingress gets the public half
SEAL_PUBLIC_KEY = public_key_of(SEAL_PRIVATE_KEY)


def bot_settings(
    settings: Settings, tmp_path: Path, kind: str, image: str | None, **overrides: Any
) -> Settings:
    """Test settings: own instance label (containers of parallel runs never mix), no network,
    a fast heartbeat, a short restart backoff, quick log-stream polls, and both halves of the
    key-sealing pair (one process plays the ingress and the supervisor)."""
    values: dict[str, Any] = {
        "bot_runtime": kind,
        "bot_image": image,
        "bot_network": "none",
        "bot_instance": f"test-{uuid.uuid4().hex[:10]}",
        "bot_log_dir": tmp_path / "bot-logs",
        "bot_heartbeat_seconds": 1,
        "bot_stop_timeout_seconds": 2,
        "bot_restart_backoff_seconds": 0.2,
        "bot_restart_max_backoff_seconds": 1.0,
        "bot_restart_max": 3,
        "bot_restart_window_seconds": 120.0,
        "secret_keys": SecretStr(FIRST_KEY),
        "key_seal_public_key": encode_key(SEAL_PUBLIC_KEY),
        "key_seal_private_key": SecretStr(encode_key(SEAL_PRIVATE_KEY)),
        "bot_admin_token": SecretStr(ADMIN_TOKEN),
        "bot_sse_keepalive_seconds": 0.5,
        "bot_sse_poll_seconds": 0.1,
        **overrides,
    }
    return settings.model_copy(update=values)


def resources_for(settings: Settings) -> Resources:
    return Resources(
        settings,
        database_url=settings.require_database_url(),
        publisher=AmqpPublisher(settings.require_broker_url(), settings.queue_prefix),
    )


async def add_tenant(
    conn: asyncpg.Connection, plan: str = "free", config: dict[str, Any] | None = None
) -> tuple[str, str]:
    """(tenant id, API token) of a new tenant with a stopped bot."""
    tenant_id, token = f"t-{uuid.uuid4().hex[:10]}", new_token()
    created = await store.create_tenant(
        conn,
        tenant_id=tenant_id,
        email=f"{tenant_id}@example.com",
        plan=plan,
        token_sha256=token_digest(token),
        config=config or dict(DEFAULT_CONFIG),
    )
    assert created is not None
    return tenant_id, token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def bot_of(runtime: Runtime, tenant_id: str) -> BotStatus | None:
    return next((b for b in runtime.list_bots() if b.tenant_id == tenant_id), None)


def remove_instance(client: docker.DockerClient, instance: str) -> None:
    for row in client.api.containers(all=True, filters={"label": [f"{INSTANCE_LABEL}={instance}"]}):
        client.api.remove_container(row["Id"], force=True)


def image_from(engine: docker.DockerClient, cmd: str, applets: tuple[str, ...]) -> str:
    """A busybox image with only `applets` linked and `cmd` as its command."""
    buffer = io.BytesIO()
    busybox = find_busybox().read_bytes()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("bin", "tmp"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(busybox), 0o755
        tar.addfile(info, io.BytesIO(busybox))
        for applet in applets:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    tag = uuid.uuid4().hex[:12]
    engine.api.import_image_from_data(
        buffer.getvalue(), repository="colmena-test-bad", tag=tag, changes=[f"CMD {cmd}"]
    )
    return f"colmena-test-bad:{tag}"
