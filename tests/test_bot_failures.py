"""What a tenant is told about a refused start: the kind, in fixed words, never the engine's."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from colmena.domain.bot_failures import StartFailureKind, start_failure

# Messages as the runtimes word them (Docker's from a real engine, abridged).
ENTRYPOINT_MISSING = (
    "failed to create task for container: failed to create shim task: OCI runtime create "
    'failed: runc create failed: unable to start container process: exec: "/bin/no-such-bot": '
    "stat /bin/no-such-bot: no such file or directory: unknown"
)
MOUNT_REFUSED = (
    "error mounting /var/lib/docker/volumes/secret-host-dir/_data to rootfs at /data: "
    "operation not supported"
)
KEYS_REFUSED = "keys not delivered (exit 127): /bin/sh: cat: Permission denied"
FIXED_MESSAGES = {start_failure(e).message for e in (ENTRYPOINT_MISSING, MOUNT_REFUSED, "")} | {
    start_failure(KEYS_REFUSED).message
}


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (ENTRYPOINT_MISSING, StartFailureKind.PROGRAM_CANNOT_RUN),
        ('exec: "bot": executable file not found in $PATH', StartFailureKind.PROGRAM_CANNOT_RUN),
        ("exec /bot/bot.sh: exec format error", StartFailureKind.PROGRAM_CANNOT_RUN),
        ("/bin/sh: No such file or directory", StartFailureKind.PROGRAM_CANNOT_RUN),  # processes
        (KEYS_REFUSED, StartFailureKind.KEYS_NOT_DELIVERED),  # though it says permission denied
        ("keys not delivered: timed out", StartFailureKind.KEYS_NOT_DELIVERED),
        (MOUNT_REFUSED, StartFailureKind.ENGINE_REFUSED),
        ("", StartFailureKind.ENGINE_REFUSED),
    ],
)
def test_each_kind_of_refusal_is_named(error: str, kind: StartFailureKind) -> None:
    assert start_failure(error).kind is kind


def test_no_word_of_the_engines_message_reaches_the_tenant() -> None:
    told = start_failure(MOUNT_REFUSED).message
    assert "/var/lib" not in told and "secret-host-dir" not in told and "mount" not in told
    assert "no-such-bot" not in start_failure(ENTRYPOINT_MISSING).message
    assert len(FIXED_MESSAGES) == len(StartFailureKind)


@given(st.text())
def test_whatever_the_engine_says_the_tenant_gets_one_of_the_fixed_sentences(error: str) -> None:
    failure = start_failure(error)
    assert failure.message in FIXED_MESSAGES
    assert failure.kind in StartFailureKind
