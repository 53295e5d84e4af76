"""PostgreSQL failover on a pair of our own: a primary and its synchronous standby
(bench/cluster/postgres.py), colmena given both in one multi-host URL.

Shown here: pools land on the writable node whatever the host order, and let go of a node that
turns read-only; a URL with no writable host refuses to start every process in one line; the
real ingress and a worker carry on across SIGKILL of the primary plus promotion, with no restart;
and a webhook answered 2xx is on the promoted node even when the primary dies right after.

The tests that kill a primary get a pair of their own; the rest share one per module (about two
seconds to start). Without PostgreSQL 15's binaries they skip, and fail under CI=true.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from pydantic import SecretStr

from bench.chaos import wait_http
from bench.cluster.postgres import PG_BIN, PostgresPair
from colmena.config import Settings, load_settings
from colmena.gateways import sample_events as events
from colmena.runtime.startup import migrate
from colmena.store.pool import connect, create_pool
from tests import ops_support
from tests.conftest import AMQP_URL, in_ci, wait_for
from tests.ops_support import Spawned, colmena_env, free_port
from tests.payments_support import LICENSE_METADATA, STRIPE_SECRET, stripe_post_args
from tests.test_config_cli import run_colmena

spawn = ops_support.spawn


def _require_binaries() -> None:
    if (PG_BIN / "pg_basebackup").exists():
        return
    if in_ci():
        pytest.fail(f"no PostgreSQL binaries in {PG_BIN}, and CI=true: these tests must run")
    pytest.skip(f"no PostgreSQL binaries in {PG_BIN} (with CI=true this fails instead)")


def _started_pair(base_dir: Path) -> PostgresPair:
    _require_binaries()
    pair = PostgresPair(base_dir).__enter__()
    try:
        asyncio.run(migrate(pair.url))
    except BaseException:
        pair.stop()
        raise
    return pair


@pytest.fixture(scope="module")
def shared_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresPair]:
    """One migrated pair for the tests that leave both nodes as they found them."""
    pair = _started_pair(tmp_path_factory.mktemp("pg-shared"))
    yield pair
    pair.stop()


@pytest.fixture
def own_pair(tmp_path: Path) -> Iterator[PostgresPair]:
    """A migrated pair for one test that kills its primary."""
    pair = _started_pair(tmp_path)
    yield pair
    pair.stop()


def _standby_first_url(pair: PostgresPair) -> str:
    return (
        f"postgresql://postgres@{pair.standby.address},{pair.primary.address}/{pair.database}"
        "?target_session_attrs=read-write"
    )


async def test_pool_and_connection_land_on_the_primary_whatever_the_host_order(
    shared_pair: PostgresPair,
) -> None:
    url = _standby_first_url(shared_pair)
    conn = await connect(url)
    try:
        assert await conn.fetchval("SELECT inet_server_port()") == shared_pair.primary.port
    finally:
        await conn.close()
    pool = await create_pool(url, min_size=2, max_size=2)
    try:
        async with pool.acquire() as first, pool.acquire() as second:
            for pooled in (first, second):
                assert await pooled.fetchval("SELECT pg_is_in_recovery()") is False
                assert await pooled.fetchval("SELECT inet_server_port()") == (
                    shared_pair.primary.port
                )
    finally:
        await pool.close()


async def test_a_pooled_connection_to_a_node_turned_read_only_is_not_kept(
    shared_pair: PostgresPair,
) -> None:
    """An operator fences the primary (default_transaction_read_only): the pool's connection
    there is closed on release instead of failing every later write."""
    pool = await create_pool(shared_pair.url, min_size=1, max_size=1)
    try:
        fenced_pid = await pool.fetchval("SELECT pg_backend_pid()")

        async def fenced() -> bool:
            # The backend applies the reload at its next statement and reports the new value;
            # the release right after this query is where the pool lets the connection go.
            return bool(await pool.fetchval("SHOW default_transaction_read_only") == "on")

        def gone() -> bool:
            query = f"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = {fenced_pid}"
            return shared_pair.primary.sql(query) == "t"

        shared_pair.primary.sql("ALTER SYSTEM SET default_transaction_read_only = on")
        shared_pair.primary.sql("SELECT pg_reload_conf()")
        try:
            await wait_for(fenced, timeout=20)
            await wait_for(lambda: asyncio.to_thread(gone), timeout=20)
        finally:
            shared_pair.primary.sql("ALTER SYSTEM RESET default_transaction_read_only")
            shared_pair.primary.sql("SELECT pg_reload_conf()")
        await wait_for(
            lambda: asyncio.to_thread(
                lambda: shared_pair.primary.sql("SHOW default_transaction_read_only") == "off"
            ),
            timeout=20,
        )
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") != fenced_pid
            assert await conn.fetchval("SELECT pg_current_xact_id() IS NOT NULL") is True
    finally:
        await pool.close()


async def test_no_2xx_while_the_standby_acknowledges_nothing(
    shared_pair: PostgresPair, make_client, settings: Settings
) -> None:
    """The mechanism behind "2xx means on both nodes": with the standby frozen the commit waits,
    the ingress gives up at its database timeout and says 503; the provider's retry after the
    standby is back is a 2xx (the row committed locally meanwhile, so it is a duplicate)."""
    pay = settings.model_copy(update={"stripe_webhook_secrets": SecretStr(STRIPE_SECRET)})
    client = await make_client(pay, database_url=shared_pair.url)
    _, event = _payment_event()
    shared_pair.freeze_standby()
    try:
        frozen = await client.post("/webhooks/stripe", **stripe_post_args(event))
    finally:
        shared_pair.thaw_standby()
    assert frozen.status == 503
    retried = await client.post("/webhooks/stripe", **stripe_post_args(event))
    assert retried.status == 200
    assert (await retried.json())["duplicate"] is True
    conn = await asyncpg.connect(shared_pair.primary_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM inbox WHERE event_key = $1", event["id"])
    finally:
        await conn.close()


STANDBY_ONLY_COMMANDS = [
    ["migrate"],
    ["ingress"],
    ["scheduler"],
    ["worker", "--queues", "payments", "--processes", "1", "--threads", "1"],
]


@pytest.mark.parametrize("command", STANDBY_ONLY_COMMANDS, ids=lambda command: command[0])
def test_every_process_refuses_a_url_whose_only_host_is_a_standby(
    shared_pair: PostgresPair, command: list[str], tmp_path: Path
) -> None:
    url = f"{shared_pair.standby_url}?target_session_attrs=read-write"
    result = run_colmena(
        *command,
        env={
            "COLMENA_DATABASE_URL": url,
            "COLMENA_BROKER_URL": AMQP_URL,
            "COLMENA_DATA_DIR": str(tmp_path),
            "COLMENA_METRICS_PORT": str(free_port()),
            "COLMENA_SCHEDULER_METRICS_PORT": str(free_port()),
            "COLMENA_HTTP_PORT": str(free_port()),
            "COLMENA_INGRESS_METRICS_PORT": str(free_port()),
        },
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"colmena: no writable PostgreSQL among {shared_pair.standby.address} "
        "(COLMENA_DATABASE_URL): it is a standby (target_session_attrs=read-write)"
    ]


def test_a_url_of_standbys_only_says_all_are_standbys(shared_pair: PostgresPair) -> None:
    # Two names for the one standby: the message for a list with no writable host among them.
    hosts = f"127.0.0.1:{shared_pair.standby.port},localhost:{shared_pair.standby.port}"
    url = f"postgresql://postgres@{hosts}/{shared_pair.database}?target_session_attrs=read-write"
    result = run_colmena("migrate", env={"COLMENA_DATABASE_URL": url})
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"colmena: no writable PostgreSQL among {hosts} (COLMENA_DATABASE_URL): "
        "all are standbys (target_session_attrs=read-write)"
    ]


def test_a_url_of_a_standby_and_a_dead_host_names_each(shared_pair: PostgresPair) -> None:
    dead = f"127.0.0.1:{free_port()}"
    url = f"postgresql://postgres@{shared_pair.standby.address},{dead}/{shared_pair.database}"
    result = run_colmena("migrate", env={"COLMENA_DATABASE_URL": url})
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(
        f"colmena: no writable PostgreSQL among {shared_pair.standby.address},{dead} "
        f"(COLMENA_DATABASE_URL): {shared_pair.standby.address} is a standby; "
        f"{dead} cannot be reached ("
    )
    assert line.endswith("(target_session_attrs=read-write)")


# --- failover with real processes -------------------------------------------------------------


def _pair_settings(pair: PostgresPair, queue_prefix: str, tmp_path: Path) -> Settings:
    return load_settings(
        database_url=pair.url,
        broker_url=AMQP_URL,
        queue_prefix=queue_prefix,
        data_dir=tmp_path / "data",
        refusal_delay_s=0,
        _env_file=None,
    )


async def _start_ingress(spawn, settings: Settings) -> tuple[Spawned, str]:
    port = free_port()
    ingress = spawn(
        "ingress",
        ["ingress"],
        colmena_env(
            settings,
            COLMENA_HTTP_PORT=str(port),
            COLMENA_STRIPE_WEBHOOK_SECRETS=STRIPE_SECRET,
            COLMENA_RATE_LIMIT_PRESET="off",
        ),
    )
    await wait_http(f"http://127.0.0.1:{port}/healthz", timeout_s=60)
    return ingress, f"http://127.0.0.1:{port}/webhooks/stripe"


def _payment_event() -> tuple[str, dict]:
    intent = events.payment_intent(metadata=LICENSE_METADATA)
    return intent["id"], events.stripe_event("payment_intent.succeeded", intent)


async def _post(session: aiohttp.ClientSession, url: str, event: dict) -> int:
    async with session.post(url, **stripe_post_args(event)) as response:
        await response.read()
        return response.status


async def _post_until_accepted(
    session: aiohttp.ClientSession, url: str, event: dict, timeout: float = 60.0
) -> list[int]:
    """Post like a provider: again after a 503 (or no answer) until 2xx; the statuses seen."""
    statuses: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = await _post(session, url, event)
        except aiohttp.ClientError:
            status = 0
        statuses.append(status)
        if 200 <= status < 300:
            return statuses
        assert status in (0, 503), statuses
        await asyncio.sleep(0.2)
    raise AssertionError(f"not accepted within {timeout:.0f} s: {statuses}")


async def _approved(url: str, payment_ids: list[str]) -> bool:
    conn = await asyncpg.connect(url)
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM payments WHERE provider = 'stripe' "
            "AND provider_payment_id = ANY($1) AND status = 'approved'",
            payment_ids,
        )
    finally:
        await conn.close()
    return bool(count == len(payment_ids))


def _fence(pair: PostgresPair, read_only: bool) -> None:
    """What an operator does to stop writes on a primary: every transaction read-only."""
    if read_only:
        pair.primary.sql("ALTER SYSTEM SET default_transaction_read_only = on")
    else:
        pair.primary.sql("ALTER SYSTEM RESET default_transaction_read_only")
    pair.primary.sql("SELECT pg_reload_conf()")
    # pg_reload_conf() only signals the postmaster. Once a new session sees the setting, the
    # postmaster has reloaded it and signalled every backend, and each applies it before the
    # next statement it reads (the ingress's pooled connection's included).
    wanted = "on" if read_only else "off"
    deadline = time.monotonic() + 10
    while pair.primary.sql("SHOW default_transaction_read_only") != wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"default_transaction_read_only not {wanted} within 10 s")


async def test_no_writable_node_reachable_is_a_503_not_a_500(
    shared_pair: PostgresPair, spawn, queue_prefix: str, tmp_path: Path
) -> None:
    """Every host answers, none is writable: the pool's next connection fails with asyncpg's
    TargetServerAttributeNotMatched, which must read as "database down" (the provider
    retries), like a refused connection."""
    settings = _pair_settings(shared_pair, queue_prefix, tmp_path)
    _ingress, url = await _start_ingress(spawn, settings)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        assert await _post(session, url, _payment_event()[1]) == 200
        _fence(shared_pair, read_only=True)
        try:
            # The first may still reach the pooled connection (a read-only error); the ones after
            # it need a new connection, and find no writable host.
            statuses = [await _post(session, url, _payment_event()[1]) for _ in range(3)]
        finally:
            _fence(shared_pair, read_only=False)
        assert statuses == [503, 503, 503]
        await _post_until_accepted(session, url, _payment_event()[1])


async def test_ingress_and_worker_carry_on_across_kill_and_promotion(
    own_pair: PostgresPair,
    spawn,
    queue_prefix: str,
    tmp_path: Path,
) -> None:
    settings = _pair_settings(own_pair, queue_prefix, tmp_path)
    ingress, url = await _start_ingress(spawn, settings)
    worker = spawn(
        "worker",
        ["worker", "--queues", "payments", "--processes", "1", "--threads", "2"],
        colmena_env(settings, COLMENA_METRICS_PORT=str(free_port())),
    )
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        before = [_payment_event() for _ in range(5)]
        for _, event in before:
            assert await _post(session, url, event) == 200
        await wait_for(lambda: _approved(own_pair.url, [pid for pid, _ in before]), timeout=60)

        await asyncio.to_thread(own_pair.kill_primary)
        # No writable node: the ingress says 503 (the provider retries), it does not fail.
        assert await _post(session, url, _payment_event()[1]) == 503
        await asyncio.to_thread(own_pair.promote_standby)

        after = [_payment_event() for _ in range(5)]
        for _, event in after:
            await _post_until_accepted(session, url, event)
    await wait_for(lambda: _approved(own_pair.standby_url, [pid for pid, _ in after]), timeout=60)
    assert await _approved(own_pair.standby_url, [pid for pid, _ in before])
    assert ingress.process.poll() is None, ingress.output()
    assert worker.process.poll() is None, worker.output()


async def test_a_webhook_answered_2xx_is_on_the_promoted_node_after_an_instant_kill(
    own_pair: PostgresPair,
    spawn,
    queue_prefix: str,
    tmp_path: Path,
) -> None:
    """Senders keep webhooks in flight; at the 30th 2xx the primary is SIGKILLed on the spot.
    Every event answered 2xx, before or after that moment, must be on the promoted standby:
    the commit waited for the standby's flush before the ingress said yes."""
    _, url = await _start_ingress(spawn, _pair_settings(own_pair, queue_prefix, tmp_path))
    accepted: list[str] = []
    killed = asyncio.Event()

    async def sender(session: aiohttp.ClientSession) -> None:
        while not killed.is_set():
            _, event = _payment_event()
            try:
                status = await _post(session, url, event)
            except aiohttp.ClientError:
                continue
            if 200 <= status < 300:
                accepted.append(event["id"])
                if len(accepted) == 30 and not killed.is_set():
                    own_pair.kill_primary()  # blocks this loop: nothing is read meanwhile
                    killed.set()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        await asyncio.wait_for(asyncio.gather(*(sender(session) for _ in range(4))), 120)
    await asyncio.to_thread(own_pair.promote_standby)
    conn = await asyncpg.connect(own_pair.standby_url)
    try:
        stored = await conn.fetchval(
            "SELECT count(*) FROM inbox WHERE provider = 'stripe' AND event_key = ANY($1)",
            accepted,
        )
    finally:
        await conn.close()
    assert len(accepted) >= 30
    assert stored == len(accepted)
