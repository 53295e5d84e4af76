"""`colmena dev` with no configuration runs the Mercado Pago and rates stories on its sandboxes.

One real `colmena dev` in an empty directory; the commands run as a second terminal would run
them: another process, same directory, no COLMENA_* variable.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import aiohttp
import asyncpg

from colmena.config.dev_stack import read_dev_stack
from tests.conftest import wait_for
from tests.test_dev import free_port, ready, start_dev, stop


async def operator(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("COLMENA_")}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "colmena", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_mercadopago_and_rates_stories_run_on_the_sandboxes(tmp_path: Path) -> None:
    port = free_port()
    process = start_dev(tmp_path, port)
    try:
        await wait_for(lambda: ready(port), timeout=60, interval=0.25)
        sandbox = f"http://127.0.0.1:{port}/sandbox"
        stack = read_dev_stack(tmp_path / ".colmena")
        assert stack is not None

        triggered = await operator(tmp_path, "trigger", "mercadopago", "approved")
        assert triggered.returncode == 0, triggered.stdout + triggered.stderr
        assert f"Mercado Pago API: {sandbox}/mercadopago" in triggered.stdout
        made = re.search(r"sandbox payment (\d+): approved \(accredited\)", triggered.stdout)
        assert made, triggered.stdout
        payment_id = made.group(1)

        async def settled() -> str | None:
            conn = await asyncpg.connect(stack.database_url)
            try:
                return await conn.fetchval(
                    "SELECT status FROM payments "
                    "WHERE provider = 'mercadopago' AND provider_payment_id = $1",
                    payment_id,
                )
            finally:
                await conn.close()

        assert await wait_for(settled, timeout=30, interval=0.25) == "approved"
        listed = await operator(tmp_path, "payments", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert {"provider": "mercadopago", "id": payment_id, "status": "approved"}.items() <= next(
            p for p in json.loads(listed.stdout) if p["id"] == payment_id
        ).items()

        for source in ("bcv", "binance"):
            scraped = await operator(tmp_path, "rates", "scrape", source)
            assert scraped.returncode == 0, scraped.stdout + scraped.stderr
            assert f"{source} [sandbox]" in scraped.stdout
        rates = await operator(tmp_path, "rates", "list")
        assert rates.returncode == 0, rates.stderr
        assert "bcv [sandbox] USD/VES" in rates.stdout
        assert "binance [sandbox] USDT/VES" in rates.stdout
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/api/v1/rates/latest") as response,
        ):
            latest = await response.json()
        assert {rate["source"] for rate in latest["rates"]} == {"bcv", "binance"}
        assert all(rate["sandbox"] is True for rate in latest["rates"])
    finally:
        output = await stop(process)
    assert process.returncode == 0, output
    assert f"{sandbox}/mercadopago" in output
    for command in (
        "colmena trigger mercadopago approved",
        "colmena rates scrape bcv",
        "colmena rates scrape binance",
        "colmena rates list",
    ):
        assert command in output
