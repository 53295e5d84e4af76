"""How provider keys reach a bot: one JSON file on memory-backed storage, never the environment.

The environment of a container is part of its config (the engine writes it to disk, `docker
inspect` shows it) and a process's environment is readable in /proc, so keys travel as a file
instead. The bot learns only the file's path (BOT_KEYS_FILE, not a secret). Its content is a
JSON object from provider to key, `{"binance": "..."}`, `{}` when the tenant stored none; it is
complete once the bot can read it, and it changes only when the bot is started again.

Docker: the file lives on a tmpfs mounted at /run/colmena (mode 0700, owned by the bot's uid)
and is written after start by an exec that reads it from stdin, because the engine's archive
API writes below a tmpfs mount, into the container's layer on disk. Processes: a 0700
directory under $XDG_RUNTIME_DIR or /dev/shm, removed when the bot stops.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

KEYS_FILE_ENV = "BOT_KEYS_FILE"
KEYS_FILE_NAME = "keys.json"
CONTAINER_KEYS_DIR = "/run/colmena"
CONTAINER_KEYS_FILE = f"{CONTAINER_KEYS_DIR}/{KEYS_FILE_NAME}"
_MEMORY_DIRS = ("/dev/shm",)


def keys_document(keys: Mapping[str, str]) -> bytes:
    """The keys file's bytes: provider names to keys, sorted so equal keys give equal files."""
    return json.dumps(dict(keys), sort_keys=True, separators=(",", ":")).encode()


def memory_backed_dir() -> Path:
    """Where the process runtime keeps keys files: a tmpfs, so nothing reaches the disk.

    The system temporary directory is the last resort (a machine without /dev/shm), said in
    a warning since that one may be on disk.
    """
    candidates = [os.environ.get("XDG_RUNTIME_DIR", ""), *_MEMORY_DIRS]
    for candidate in candidates:
        if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK):
            return Path(candidate)
    fallback = Path(tempfile.gettempdir())
    log.warning("no memory-backed directory for bots' keys files", path=str(fallback))
    return fallback


def write_keys_file(base: Path, document: bytes) -> Path:
    """Write the keys file into a new private directory under `base`; returns the file.

    Written under another name and renamed, so the bot never reads half a file.
    """
    directory = Path(tempfile.mkdtemp(prefix="colmena-bot-", dir=base))  # mode 0700
    try:
        partial = directory / f".{KEYS_FILE_NAME}.new"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as handle:
            handle.write(document)
        target = directory / KEYS_FILE_NAME
        partial.rename(target)
    except BaseException:
        remove_keys_file(directory / KEYS_FILE_NAME)
        raise
    return target


def remove_keys_file(path: Path) -> None:
    """Remove a keys file and its private directory; nothing to do when they are gone."""
    shutil.rmtree(path.parent, ignore_errors=True)
