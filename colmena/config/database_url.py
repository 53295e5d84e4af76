"""What a PostgreSQL URL names: its hosts, and the kind of session colmena asks them for.

A URL may list several hosts, a primary and its standbys, the way libpq and asyncpg take them:
`postgresql://user@h1:5432,h2:5432/db?target_session_attrs=read-write`. asyncpg tries them in
order and keeps the first that matches `target_session_attrs`. Every colmena process writes, so
that must be a writable session: `read-write` (the default here, where asyncpg's is `any`) or
`primary`. Any other value would let a pool settle on a standby and fail each write, so it is
refused before anything starts. Messages name hosts and ports, never the user or password.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

WRITABLE_SESSIONS = ("read-write", "primary")
DEFAULT_SESSION = "read-write"
EMPTY_ENTRY = "an empty entry in the host list (two commas together, or one at an end)"


@dataclass(frozen=True)
class DatabaseHost:
    name: str
    port: int | None

    def __str__(self) -> str:
        host = f"[{self.name}]" if ":" in self.name else self.name
        return host if self.port is None else f"{host}:{self.port}"


@dataclass(frozen=True)
class DatabaseTarget:
    """The hosts a URL lists (none: libpq's default, a local socket) and the session wanted."""

    hosts: tuple[DatabaseHost, ...]
    session_attrs: str

    def describe_hosts(self) -> str:
        return ",".join(str(host) for host in self.hosts) or "the default host"


def _port(text: str, host: str) -> int | None:
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"the port of host {host!r} is not a number from 1 to 65535")
    return int(text)


def _host(entry: str) -> DatabaseHost:
    """One `host[:port]` or `[v6]:port` entry. Messages quote the host part only: in a URL
    missing its `@`, what follows a colon may be a password."""
    if not entry:
        raise ValueError(EMPTY_ENTRY)
    if entry.startswith("["):
        name, closed, rest = entry[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise ValueError(f"malformed IPv6 host {entry!r}: expected [address]:port")
        port_text = rest[1:]
    else:
        name, _, port_text = entry.partition(":")
        if ":" in port_text:
            raise ValueError(f"host {name!r}: an IPv6 address needs brackets, [address]:port")
    if not name:
        raise ValueError("a port without a host in the host list")
    return DatabaseHost(unquote(name), _port(port_text, name))


def _unique(hosts: tuple[DatabaseHost, ...]) -> tuple[DatabaseHost, ...]:
    seen: set[DatabaseHost] = set()
    for host in hosts:
        if host in seen:
            raise ValueError(f"host {host} is listed twice")
        seen.add(host)
    return hosts


def _query_hosts(query: dict[str, list[str]]) -> tuple[DatabaseHost, ...]:
    """Hosts given as `?host=h1,h2&port=p1,p2` (one port may serve them all), as libpq allows."""
    names = query["host"][-1].split(",")
    ports = query.get("port", [""])[-1].split(",")
    if len(ports) == 1:
        ports *= len(names)
    if len(ports) != len(names):
        raise ValueError(f"{len(names)} hosts but {len(ports)} ports in the URL's query")
    if not all(names):
        raise ValueError(EMPTY_ENTRY)
    return _unique(
        tuple(
            DatabaseHost(name, _port(port, name)) for name, port in zip(names, ports, strict=True)
        )
    )


def parse_database_url(value: str) -> DatabaseTarget:
    """The hosts and session of a PostgreSQL URL; ValueError saying what is wrong otherwise."""
    parts = urlsplit(value)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError("expected postgresql://user@host:port/database")
    query = parse_qs(parts.query)
    hostlist = parts.netloc.rpartition("@")[2]
    hosts = _unique(tuple(_host(entry) for entry in hostlist.split(","))) if hostlist else ()
    if not hosts and "host" in query:
        hosts = _query_hosts(query)
    if not hosts and not parts.path.strip("/"):
        raise ValueError("expected postgresql://user@host:port/database")
    session = query.get("target_session_attrs", [DEFAULT_SESSION])[-1]
    if session not in WRITABLE_SESSIONS:
        raise ValueError(
            f"target_session_attrs={session} could land on a node colmena cannot write to; "
            "use target_session_attrs=read-write (or primary)"
        )
    return DatabaseTarget(hosts, session)
