"""pg_dump and pg_restore, and the directory backups live in.

A backup is PostgreSQL's own custom-format dump, streamed from pg_dump's stdout through the
sealing of `backup_crypto` into a hidden temporary file in the backup directory, flushed to disk
(fsync), then renamed into place and the directory flushed too: a file with a final name is
always complete. Any failure (a full disk, a read-only or missing directory, pg_dump failing)
removes the temporary file and leaves every older backup as it was.

The binaries must be at least as new as the server (pg_dump refuses an older server's newer
catalog, and a dump taken by an older pg_dump may miss newer features). They are looked for in
COLMENA_BACKUP_PG_BIN_DIR, then Debian's /usr/lib/postgresql/<server major>/bin, then PATH.
The database password never appears on a command line: it is handed over in PGPASSWORD.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, BinaryIO, cast
from urllib.parse import unquote

import structlog

from colmena.errors import PermanentError
from colmena.gateways.backup_crypto import DEFAULT_CHUNK, Sealed, decrypt_stream, encrypt_stream

log = structlog.get_logger(__name__)

SUFFIX = ".pgdump.cbk"
_NAME = re.compile(r"^colmena-(\d{8}T\d{6}(?:\d{6})?Z)" + re.escape(SUFFIX) + r"$")
_VERSION = re.compile(r"\(PostgreSQL\)\s+((\d+)[0-9.]*)")
DEBIAN_ROOT = Path("/usr/lib/postgresql")
STDERR_TAIL = 400


class BackupError(PermanentError):
    """A backup or restore that cannot go on; the message is one line for the operator."""


@dataclass(frozen=True)
class PgTools:
    pg_dump: Path
    pg_restore: Path
    major: int
    version: str  # as `pg_dump --version` says it, e.g. "15.20"


def tool_version(binary: Path) -> tuple[int, str]:
    result = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    match = _VERSION.search(result.stdout)
    if result.returncode != 0 or match is None:
        raise BackupError(f"{binary} --version did not answer a PostgreSQL version")
    return int(match.group(2)), match.group(1)


def _candidates(bin_dir: Path | None, server_major: int) -> list[Path]:
    if bin_dir is not None:
        return [bin_dir]
    found = [DEBIAN_ROOT / str(server_major) / "bin"]
    on_path = shutil.which("pg_dump")
    if on_path is not None:
        found.append(Path(on_path).parent)
    return found


def find_pg_tools(bin_dir: Path | None, server_major: int) -> PgTools:
    """pg_dump and pg_restore of a version that can dump a server of `server_major`."""
    looked: list[str] = []
    for directory in _candidates(bin_dir, server_major):
        dump, restore = directory / "pg_dump", directory / "pg_restore"
        if not (os.access(dump, os.X_OK) and os.access(restore, os.X_OK)):
            looked.append(str(directory))
            continue
        major, version = tool_version(dump)
        if major < server_major:
            raise BackupError(
                f"{dump} is version {version}, older than the server (major {server_major}): "
                f"install postgresql-client-{server_major} or set COLMENA_BACKUP_PG_BIN_DIR"
            )
        return PgTools(pg_dump=dump, pg_restore=restore, major=major, version=version)
    raise BackupError(
        f"pg_dump and pg_restore not found in {', '.join(looked)}: install "
        f"postgresql-client-{server_major} or set COLMENA_BACKUP_PG_BIN_DIR"
    )


def libpq_target(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password, and the environment that carries it (PGPASSWORD), so
    that no process listing shows it."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url, {}
    authority, slash, tail = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return url, {}
    user, _, password = userinfo.partition(":")
    return f"{scheme}://{user}@{hosts}{slash}{tail}", {"PGPASSWORD": unquote(password)}


def _environment(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **extra}


def backup_name(at: datetime) -> str:
    """`colmena-<UTC timestamp>.pgdump.cbk`: names sort by time, and say it without opening."""
    return f"colmena-{at.astimezone(UTC).strftime('%Y%m%dT%H%M%S%fZ')}{SUFFIX}"


def is_backup_name(name: str) -> bool:
    return _NAME.match(name) is not None


def _oserror(directory: Path, exc: OSError) -> str:
    reason = exc.strerror or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"backup directory {directory} is full ({reason})"
    return f"cannot write to backup directory {directory} ({reason})"


def _stderr_tail(stream: IO[bytes]) -> str:
    stream.seek(0)
    text = stream.read().decode("utf-8", "replace").strip().replace("\n", " | ")
    return text[-STDERR_TAIL:] or "no message"


class _HashingWriter:
    """Writes all of every chunk to an unbuffered file and hashes it: the digest recorded for
    the backup. Unbuffered, so a full disk fails the write that hit it, not a later close."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        view = memoryview(data)
        while view:
            written = self.raw.write(view)
            view = view[written or 0 :]
        return len(data)


@dataclass(frozen=True)
class DumpResult:
    path: Path
    size_bytes: int
    sha256: str
    sealed: Sealed


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _temporary_in(directory: Path, name: str) -> Iterator[tuple[BinaryIO, Path]]:
    """A hidden file beside where `name` will be, removed unless renamed away."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".partial")
    except OSError as exc:
        raise BackupError(_oserror(directory, exc)) from None
    path = Path(tmp)
    try:
        with os.fdopen(fd, "wb", buffering=0) as raw:
            yield raw, path
    finally:
        path.unlink(missing_ok=True)


def dump_database(
    tools: PgTools,
    database_url: str,
    directory: Path,
    name: str,
    key: bytes,
    *,
    chunk_size: int = DEFAULT_CHUNK,
) -> DumpResult:
    """Dump the database, sealed with `key`, to `directory/name`; BackupError on any failure,
    with nothing left behind. Blocking: call it from a thread."""
    target, env = libpq_target(database_url)
    final = directory / name
    with (
        _temporary_in(directory, name) as (raw, tmp),
        tempfile.TemporaryFile() as stderr,
        subprocess.Popen(
            [str(tools.pg_dump), "--format=custom", "--compress=6", f"--dbname={target}"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=_environment(env),
        ) as process,
    ):
        output = cast(IO[bytes], process.stdout)
        writer = _HashingWriter(raw)
        try:
            sealed = encrypt_stream(key, output, writer, chunk_size=chunk_size)
            os.fsync(raw.fileno())
        except OSError as exc:
            process.kill()
            raise BackupError(_oserror(directory, exc)) from None
        code = process.wait()
        if code != 0:
            raise BackupError(f"pg_dump failed (exit {code}): {_stderr_tail(stderr)}")
        try:
            os.rename(tmp, final)
            _fsync_directory(directory)
        except OSError as exc:
            raise BackupError(_oserror(directory, exc)) from None
    return DumpResult(
        path=final,
        size_bytes=sealed.ciphertext_bytes,
        sha256=writer.digest.hexdigest(),
        sealed=sealed,
    )


class _NullSink:
    def write(self, data: bytes) -> int:
        return len(data)


def verify_file(path: Path, keys: list[bytes]) -> int:
    """Open the whole file with the keys and discard it: BackupCryptoError when it is not
    intact. Run before a restore, so a damaged file is refused before the database is touched."""
    with _open_backup(path) as source:
        return decrypt_stream(keys, source, _NullSink())


@contextlib.contextmanager
def _open_backup(path: Path) -> Iterator[BinaryIO]:
    try:
        source = path.open("rb")
    except OSError as exc:
        raise BackupError(f"cannot read {path} ({exc.strerror})") from None
    with source:
        yield source


def restore_database(
    tools: PgTools, path: Path, keys: list[bytes], database_url: str, *, keep_owners: bool
) -> None:
    """Feed the opened backup to pg_restore on stdin, in one transaction (a failure leaves the
    target as empty as it was). Blocking: call it from a thread."""
    target, env = libpq_target(database_url)
    arguments = [
        str(tools.pg_restore),
        "--exit-on-error",
        "--single-transaction",
        f"--dbname={target}",
    ]
    if not keep_owners:
        arguments += ["--no-owner", "--no-privileges"]
    with (
        _open_backup(path) as source,
        tempfile.TemporaryFile() as stderr,
        subprocess.Popen(
            arguments, stdin=subprocess.PIPE, stderr=stderr, env=_environment(env)
        ) as process,
    ):
        feed = cast(IO[bytes], process.stdin)
        try:
            decrypt_stream(keys, source, feed)
        except BrokenPipeError:
            pass  # pg_restore stopped reading: its exit code and message say why
        except BaseException:
            process.kill()  # a damaged file: pg_restore's transaction is never committed
            raise
        finally:
            with contextlib.suppress(BrokenPipeError):
                feed.close()
        code = process.wait()
        if code != 0:
            raise BackupError(f"pg_restore failed (exit {code}): {_stderr_tail(stderr)}")


def remove_backup(path: Path) -> bool:
    """Delete a pruned backup's file; False when it was already gone."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
