"""The sealed backup format: round trips of any size, and every kind of damage refused."""

from __future__ import annotations

import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colmena.config import load_settings
from colmena.config.settings import SettingsError
from colmena.gateways.backup_crypto import (
    HEADER_BYTES,
    TAG_BYTES,
    BackupCryptoError,
    decrypt_stream,
    encrypt_stream,
    fingerprint,
)

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))


def seal(data: bytes, *, key: bytes = KEY, chunk_size: int = 64) -> bytes:
    sink = io.BytesIO()
    encrypt_stream(key, io.BytesIO(data), sink, chunk_size=chunk_size)
    return sink.getvalue()


def unseal(blob: bytes, keys: list[bytes] | None = None) -> bytes:
    sink = io.BytesIO()
    decrypt_stream(keys or [KEY], io.BytesIO(blob), sink)
    return sink.getvalue()


class Trickle(io.RawIOBase):
    """A pipe-like source that hands out at most 7 bytes per read."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        part, self.data = self.data[: min(size, 7)], self.data[min(size, 7) :]
        return bytes(part)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=700), chunk=st.integers(min_value=1, max_value=200))
def test_any_data_round_trips_at_any_chunk_size(data: bytes, chunk: int) -> None:
    sealed = seal(data, chunk_size=chunk)
    chunks = max(1, -(-len(data) // chunk))  # an empty stream is one empty, last chunk
    assert len(sealed) == HEADER_BYTES + len(data) + chunks * TAG_BYTES
    assert unseal(sealed) == data


def test_short_reads_from_a_pipe_are_handled() -> None:
    data = os.urandom(1000)
    sink = io.BytesIO()
    encrypt_stream(KEY, Trickle(data), sink, chunk_size=100)
    out = io.BytesIO()
    decrypt_stream([KEY], Trickle(sink.getvalue()), out)
    assert out.getvalue() == data


def test_the_same_data_seals_differently_each_time() -> None:
    assert seal(b"same") != seal(b"same")


@pytest.mark.parametrize("cut", [1, TAG_BYTES, 64 + TAG_BYTES, 2 * (64 + TAG_BYTES)])
def test_a_truncated_file_is_refused(cut: int) -> None:
    """Cut inside the last chunk, or exactly at a chunk boundary: both detected."""
    sealed = seal(os.urandom(64 * 4 + 10))
    with pytest.raises(BackupCryptoError, match="truncated|altered"):
        unseal(sealed[:-cut])


def test_a_file_cut_after_a_full_last_chunk_is_refused() -> None:
    data = os.urandom(64 * 3)  # the last chunk is full: its "last" marker is all that says so
    sealed = seal(data)
    with pytest.raises(BackupCryptoError):
        unseal(sealed[: -(64 + TAG_BYTES)])


def test_bytes_appended_are_refused() -> None:
    with pytest.raises(BackupCryptoError):
        unseal(seal(b"x" * 100) + b"\x00" * 20)


def test_an_altered_byte_is_refused_wherever_it_is() -> None:
    sealed = bytearray(seal(os.urandom(300)))
    for position in (HEADER_BYTES - 1, HEADER_BYTES + 3, len(sealed) // 2, len(sealed) - 1):
        damaged = bytearray(sealed)
        damaged[position] ^= 0x01
        with pytest.raises(BackupCryptoError):
            unseal(bytes(damaged))


def test_the_wrong_key_is_named_by_fingerprint_and_a_rotated_list_opens_old_files() -> None:
    sealed = seal(b"payments", key=OTHER)
    with pytest.raises(BackupCryptoError, match=fingerprint(OTHER)) as refused:
        unseal(sealed, [KEY])
    assert OTHER.hex() not in str(refused.value)
    assert unseal(sealed, [KEY, OTHER]) == b"payments"


def test_not_a_backup_is_said_so() -> None:
    with pytest.raises(BackupCryptoError, match="not a colmena backup"):
        unseal(b"PGDMP" + b"\x00" * 100)
    with pytest.raises(BackupCryptoError, match="shorter than its header"):
        unseal(b"COLM")


def test_keys_setting_is_checked_and_never_echoed() -> None:
    good = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    loaded = load_settings(backup_keys=f"{good}, {good}", _env_file=None)
    assert loaded.backup_key_ring() == [KEY, KEY]
    with pytest.raises(SettingsError, match="key 2 is 3 bytes") as short:
        load_settings(backup_keys=f"{good},AAAA", _env_file=None)
    assert good not in str(short.value)
    with pytest.raises(SettingsError, match="key 1 is not base64"):
        load_settings(backup_keys="not base64!", _env_file=None)
