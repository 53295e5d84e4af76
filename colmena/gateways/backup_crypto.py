"""Streamed, authenticated encryption of backup files: AES-256-GCM in chunks.

A dump can be larger than memory, so it is sealed as it streams, one chunk at a time (the
construction of Tink's streaming AEAD and age's STREAM):

    header  = MAGIC (8) | version (1) | key id (8) | salt (16) | chunk size (4, big-endian)
    chunk i = AES-256-GCM(file key, nonce = i (11 bytes, big-endian) | last (1), plaintext,
                          associated data = header)

- The file key is HKDF-SHA256(backup key, salt): a fresh key per file, so counter nonces never
  repeat under one key however many files a backup key seals.
- The last chunk (possibly empty) has the `last` byte set. A file cut at a chunk boundary ends
  on a chunk sealed as "not last", a file cut inside a chunk fails its tag, and bytes after the
  last chunk are refused: truncation and extension are both detected.
- The header is every chunk's associated data: a changed key id, salt or chunk size fails too.
- The key id is the first 8 bytes of SHA-256 over the key, so a restore picks the right key of
  a rotated list, and an operator can tell which key a file needs without seeing it.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from colmena.errors import PermanentError

MAGIC = b"COLMBAK\x00"
VERSION = 1
KEY_ID_BYTES = 8
SALT_BYTES = 16
TAG_BYTES = 16
DEFAULT_CHUNK = 1 << 20
MAX_CHUNK = 1 << 24
_HEADER = struct.Struct(f">8sB{KEY_ID_BYTES}s{SALT_BYTES}sI")
HEADER_BYTES = _HEADER.size
_MAX_CHUNKS = 1 << 88  # 11 counter bytes


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> object: ...


class BackupCryptoError(PermanentError):
    """A file that is not a colmena backup, was sealed with a key not configured, or was
    changed or cut short; the message says which."""


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:KEY_ID_BYTES]


def fingerprint(key: bytes) -> str:
    """The key id as printed: safe to show, it identifies a key without revealing it."""
    return key_id(key).hex()


def _file_key(key: bytes, salt: bytes) -> AESGCM:
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=salt, info=b"colmena backup v1"
    ).derive(key)
    return AESGCM(derived)


def _nonce(index: int, last: bool) -> bytes:
    if index >= _MAX_CHUNKS:
        raise BackupCryptoError("too many chunks for one file")
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _read_full(source: Readable, size: int) -> bytes:
    """Up to `size` bytes, fewer only at the end of the stream (pipes return short reads)."""
    parts: list[bytes] = []
    wanted = size
    while wanted:
        part = source.read(wanted)
        if not part:
            break
        parts.append(part)
        wanted -= len(part)
    return b"".join(parts)


@dataclass(frozen=True)
class Sealed:
    plaintext_bytes: int
    ciphertext_bytes: int
    key_fingerprint: str


def encrypt_stream(
    key: bytes, source: Readable, sink: Writable, *, chunk_size: int = DEFAULT_CHUNK
) -> Sealed:
    """Read `source` to its end and write it sealed to `sink`, holding one chunk at a time."""
    if not 0 < chunk_size <= MAX_CHUNK:
        raise ValueError(f"chunk size must be 1..{MAX_CHUNK}")
    salt = os.urandom(SALT_BYTES)
    header = _HEADER.pack(MAGIC, VERSION, key_id(key), salt, chunk_size)
    aead = _file_key(key, salt)
    sink.write(header)
    written, read, index = len(header), 0, 0
    chunk = _read_full(source, chunk_size)
    while True:
        following = _read_full(source, chunk_size) if len(chunk) == chunk_size else b""
        last = not following
        sealed = aead.encrypt(_nonce(index, last), chunk, header)
        sink.write(sealed)
        written += len(sealed)
        read += len(chunk)
        if last:
            return Sealed(read, written, fingerprint(key))
        chunk, index = following, index + 1


def read_header(source: Readable, keys: list[bytes]) -> tuple[bytes, bytes, int]:
    """(header, the matching key, chunk size) of a sealed stream, or BackupCryptoError."""
    header = _read_full(source, HEADER_BYTES)
    if len(header) < HEADER_BYTES:
        raise BackupCryptoError("not a colmena backup (shorter than its header)")
    magic, version, file_key_id, _salt, chunk_size = _HEADER.unpack(header)
    if magic != MAGIC:
        raise BackupCryptoError("not a colmena backup (no COLMBAK header)")
    if version != VERSION:
        raise BackupCryptoError(f"backup format version {version}, this colmena reads {VERSION}")
    if not 0 < chunk_size <= MAX_CHUNK:
        raise BackupCryptoError("corrupt backup header (chunk size)")
    for key in keys:
        if key_id(key) == file_key_id:
            return header, key, chunk_size
    raise BackupCryptoError(
        f"backup sealed with key {file_key_id.hex()}, which is not among COLMENA_BACKUP_KEYS "
        f"({', '.join(fingerprint(key) for key in keys) or 'none'})"
    )


def decrypt_stream(keys: list[bytes], source: Readable, sink: Writable) -> int:
    """Check and open a sealed stream into `sink`; returns the plaintext size.

    Chunks reach `sink` as each one is verified, so a file damaged in its middle has written its
    verified beginning before the error: callers that must not act on part of a file (a restore)
    rely on the consumer rolling back, or check with `sink` set to a null writer first.
    """
    header, key, chunk_size = read_header(source, keys)
    aead = _file_key(key, _HEADER.unpack(header)[3])
    sealed_size = chunk_size + TAG_BYTES
    total, index = 0, 0
    chunk = _read_full(source, sealed_size)
    while True:
        if len(chunk) < TAG_BYTES:
            raise BackupCryptoError("backup is truncated (its last chunk is missing)")
        following = _read_full(source, sealed_size) if len(chunk) == sealed_size else b""
        last = not following
        try:
            plain = aead.decrypt(_nonce(index, last), chunk, header)
        except InvalidTag:
            reason = "truncated or altered" if last else "altered"
            raise BackupCryptoError(f"backup is {reason} (chunk {index} fails its check)") from None
        sink.write(plain)
        total += len(plain)
        if last:
            return total
        chunk, index = following, index + 1
