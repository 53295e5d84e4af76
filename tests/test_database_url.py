"""COLMENA_DATABASE_URL: one host or a primary with its standbys; bad lists are one clear line."""

from __future__ import annotations

import pytest

from colmena.config import SettingsError, load_settings
from colmena.config.database_url import DatabaseHost, parse_database_url


def test_multi_host_url_lists_every_host_in_order() -> None:
    target = parse_database_url(
        "postgresql://app:pw@db1:5432,db2:5433,[fd00::3]:5434/colmena"
        "?target_session_attrs=read-write"
    )
    assert target.hosts == (
        DatabaseHost("db1", 5432),
        DatabaseHost("db2", 5433),
        DatabaseHost("fd00::3", 5434),
    )
    assert target.describe_hosts() == "db1:5432,db2:5433,[fd00::3]:5434"
    assert target.session_attrs == "read-write"


def test_writable_session_is_the_default_and_primary_is_allowed() -> None:
    assert parse_database_url("postgresql://app@db1,db2/colmena").session_attrs == "read-write"
    primary = parse_database_url("postgresql://app@db1,db2/colmena?target_session_attrs=primary")
    assert primary.session_attrs == "primary"


def test_hosts_in_the_query_and_socket_urls_still_parse() -> None:
    target = parse_database_url("postgresql://app@/colmena?host=db1,db2&port=5432")
    assert target.hosts == (DatabaseHost("db1", 5432), DatabaseHost("db2", 5432))
    socket = parse_database_url("postgresql://postgres:@/postgres?host=/tmp/pg")
    assert socket.hosts == (DatabaseHost("/tmp/pg", None),)
    assert parse_database_url("postgresql:///colmena").describe_hosts() == "the default host"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://app@db1:5432,,db2:5432/colmena", "an empty entry in the host list"),
        ("postgresql://app@db1:5432,db2:5432,/colmena", "an empty entry in the host list"),
        ("postgresql://app@db1:5432,db2:x/colmena", "the port of host 'db2' is not a number"),
        ("postgresql://app@db1:99999/colmena", "the port of host 'db1' is not a number"),
        ("postgresql://app@db1:5432,:5433/colmena", "a port without a host"),
        ("postgresql://app@db1,db1/colmena", "host db1 is listed twice"),
        ("postgresql://app@fd00::1:5432/colmena", "an IPv6 address needs brackets"),
        ("postgresql://app@[fd00::1]5432/colmena", "malformed IPv6 host"),
        ("postgresql://app@/colmena?host=db1,db2&port=1,2,3", "2 hosts but 3 ports"),
        (
            "postgresql://app@db1,db2/colmena?target_session_attrs=any",
            "target_session_attrs=any could land on a node colmena cannot write to",
        ),
        (
            "postgresql://app@db1,db2/colmena?target_session_attrs=standby",
            "use target_session_attrs=read-write (or primary)",
        ),
        ("mysql://app@db1/colmena", "expected postgresql://user@host:port/database"),
        ("postgresql://", "expected postgresql://user@host:port/database"),
    ],
)
def test_bad_database_urls_are_refused_in_one_line(url: str, message: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(database_url=url, _env_file=None)
    text = str(refused.value)
    assert text.startswith("invalid setting COLMENA_DATABASE_URL: ")
    assert message in text
    assert "\n" not in text


def test_a_url_missing_its_at_sign_does_not_echo_the_password() -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(database_url="postgresql://app:hunter2/colmena", _env_file=None)
    assert "hunter2" not in str(refused.value)
    assert "the port of host 'app' is not a number" in str(refused.value)
