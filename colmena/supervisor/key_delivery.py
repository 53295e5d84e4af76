"""How provider keys reach a bot: one JSON file on memory-backed storage, never the environment.

The environment of a container is part of its config (the engine writes it to disk, `docker
inspect` shows it) and a process's environment is readable in /proc, so keys travel as a file
instead. The bot learns only the file's path (BOT_KEYS_FILE, not a secret). Its content is a
JSON object from provider to key, `{"binance": "..."}`, `{}` when the tenant stored none; it is
complete once the bot can read it. When the tenant stores or deletes a key while the bot runs,
the file is replaced in place (a new file renamed over the old one, so a reader gets the old
keys or the new ones, never half), and the bot re-reads it when it changes.

Docker: the file lives on a tmpfs mounted at /run/colmena (mode 0700, owned by the bot's uid)
and is written after start, and replaced later, by an exec that reads it from stdin, because
the engine's archive API writes below a tmpfs mount, into the container's layer on disk.
Processes: a 0700 directory under $XDG_RUNTIME_DIR or /dev/shm, removed when the bot stops.
"""

from __future__ import annotations

import json
import os
import secrets
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
    target = directory / KEYS_FILE_NAME
    try:
        replace_keys_file(target, document)
    except BaseException:
        remove_keys_file(target)
        raise
    return target


def replace_keys_file(target: Path, document: bytes) -> None:
    """Put `document` at `target` (mode 0400) in one rename, over the file that was there.

    The new content goes to a fresh name in the same private directory first (O_EXCL under a
    random name: a leftover of a write that died cannot block this one), so a bot reading
    `target` meanwhile sees the old keys or the new ones, never half a file.
    """
    partial = target.with_name(f".{KEYS_FILE_NAME}.{secrets.token_hex(8)}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(document)
        partial.rename(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def remove_keys_file(path: Path) -> None:
    """Remove a keys file and its private directory; nothing to do when they are gone."""
    shutil.rmtree(path.parent, ignore_errors=True)
