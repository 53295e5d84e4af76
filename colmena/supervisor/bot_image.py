"""The sample bot image: static busybox plus ops/bot/bot.sh, made with `docker import`.

No registry is needed: the root filesystem is a tar built in memory. The tag carries a
digest of its inputs, so building is idempotent (an existing tag is reused) and a changed
script or busybox produces a new tag instead of silently reusing a stale image.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import docker
import structlog
from docker.errors import ImageNotFound

from colmena.supervisor.docker_runtime import NOBODY

log = structlog.get_logger(__name__)

REPOSITORY = "colmena-bot"
BOT_PATH = "/bot/bot.sh"
# Applets bot.sh and the keys delivery (cat, mv) rely on, besides sh's builtins.
_APPLETS = ("sh", "sleep", "date", "cat", "kill", "mv")


def bot_script() -> bytes:
    """The packaged bot script (colmena/supervisor/bot.sh; ops/bot/bot.sh links to it)."""
    return Path(__file__).with_name("bot.sh").read_bytes()


def find_busybox() -> Path:
    """Busybox must be statically linked: the image holds no C library."""
    found = shutil.which("busybox")
    if found is None:
        raise FileNotFoundError("busybox not found on PATH (install busybox-static)")
    return Path(found)


def ensure_bot_image(
    client: docker.DockerClient,
    repository: str = REPOSITORY,
    busybox: Path | None = None,
) -> str:
    """Return the tag of the bot image, importing it first if the engine lacks it."""
    busybox_bytes = (busybox or find_busybox()).read_bytes()
    script = bot_script()
    digest = hashlib.sha256(busybox_bytes + b"\0" + script).hexdigest()[:12]
    tag = f"{repository}:{digest}"
    try:
        client.images.get(tag)
        return tag
    except ImageNotFound:
        pass
    client.api.import_image_from_data(
        _root_filesystem(busybox_bytes, script),
        repository=repository,
        tag=digest,
        changes=[
            f'CMD ["/bin/sh", "{BOT_PATH}"]',
            f"USER {NOBODY}",
            "ENV PATH=/bin",
            "WORKDIR /tmp",
        ],
    )
    log.info("bot_image_imported", tag=tag)
    return tag


def _root_filesystem(busybox: bytes, script: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory, mode in (("bin", 0o755), ("bot", 0o755), ("tmp", 0o1777)):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        _add_file(tar, "bin/busybox", busybox, 0o755)
        for applet in _APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        _add_file(tar, BOT_PATH.lstrip("/"), script, 0o755)
    return buffer.getvalue()


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))
