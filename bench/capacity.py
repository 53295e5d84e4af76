"""Capacity: the highest payment rate colmena keeps up with, and what each payment costs.

A live colmena (1 ingress, 1 scheduler, `--workers` workers x 4 threads on payments+licenses,
PostgreSQL reached directly) gets signed Stripe webhooks open loop at each offered rate of the
sweep for `--seconds`; each is a payment settled, a license signed, packaged and emailed to a
local SMTP sink. A rate is kept up with when the backlog does not grow (by the end of sending,
at most one second's worth of payments is still without its email) and the p99 from webhook
sent to email accepted is under 1 s. The knee is the highest such rate; the sweep stops at the
first rate past it.

For every step it prints CPU seconds per payment per process group (from /proc through psutil:
ingress, scheduler, workers, PostgreSQL, RabbitMQ, and this driver, which holds the sender and
the SMTP sink), SQL round trips per payment (`colmena_db_statements_total` of every colmena
process) and transactions per payment (`xact_commit` of the run's database, less the driver's
own polling). The step's figures cover its sending and draining.

With `--baseline REV` the same sweep also runs on another commit of colmena (a temporary git
worktree of REV, driven by this checkout's sender, SMTP sink and measurement, the four driver
files copied in), and each figure is given with REV's as baseline: capacity against an earlier
colmena, measured in one run on one machine. The two sweeps run side by side and take their
steps in turn, REV's first at the first rate, this checkout's first at the next, and so on, so
that a machine whose speed drifts during the run (a shared host's steal time) weighs on both
alike; sweeping one after the other, the second sweep came out 10-15% dearer in CPU per
payment whichever commit it was. While one system is measured the other idles beside it: its
few idle statements fall on the shared PostgreSQL and RabbitMQ figures. Stopped by SIGTERM or
Ctrl-C, it stops both colmenas, drops their databases and queues, and removes the worktree.

    python bench/capacity.py [--rates 60,90,120,150,180,240] [--seconds 15] [--workers 2]
                             [--baseline REV]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp
import asyncpg
import psutil
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.chaos import RunningSystem, running_system, wait_http  # noqa: E402
from bench.common import exit_on_sigterm, figure, machine, percentile  # noqa: E402
from bench.open_loop import emailed, send_open_loop, signed_payments  # noqa: E402

P99_LIMIT_S = 1.0
# How long a baseline sweep told to stop may take to stop its colmena before it is killed.
CHILD_STOP_S = 60.0
ROOT = Path(__file__).parent.parent
# What drives a sweep; a baseline commit runs with this checkout's copies of them.
DRIVER_FILES = (
    "bench/capacity.py",
    "bench/open_loop.py",
    "bench/common.py",
    "bench/standins/smtp.py",
)
PACE = "PACE: ready for the next step"
FIGURE_LINE = re.compile(r"FIGURE (?P<name>.+): (?P<value>[-0-9.]+) ")
SERVICES = {"postgresql": ("postgres",), "rabbitmq": ("beam.smp", "epmd", "erl_child_setup")}


ProcessCpu = dict[tuple[int, float], float]  # (pid, start time) -> user + system CPU seconds


def cpu_of(processes: Iterable[psutil.Process]) -> ProcessCpu:
    seen: ProcessCpu = {}
    for process in processes:
        try:
            with process.oneshot():
                times = process.cpu_times()
                seen[(process.pid, process.create_time())] = times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return seen


def tree(pid: int) -> list[psutil.Process]:
    """A process and its living descendants."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def named(names: Iterable[str]) -> list[psutil.Process]:
    wanted = set(names)
    return [process for process in psutil.process_iter(["name"]) if process.info["name"] in wanted]


def cpu_by_group(system: RunningSystem) -> dict[str, ProcessCpu]:
    ingress, scheduler = system.processes.others
    groups = {
        "ingress": cpu_of(tree(ingress.pid)),
        "scheduler": cpu_of(tree(scheduler.pid)),
        "workers": cpu_of(
            process for worker in system.processes.workers for process in tree(worker.pid)
        ),
    }
    groups.update({group: cpu_of(named(names)) for group, names in SERVICES.items()})
    # This process alone: the colmena processes are its children, counted above.
    groups["driver (sender, SMTP sink)"] = cpu_of([psutil.Process(os.getpid())])
    return groups


def cpu_spent(before: ProcessCpu, after: ProcessCpu) -> float:
    """CPU seconds spent between the snapshots by the processes alive at the second one (a
    process that ended in between is left out rather than counted negative)."""
    return sum(seconds - before.get(process, 0.0) for process, seconds in after.items())


def metrics_ports(system: RunningSystem) -> list[int]:
    return [
        system.ingress_metrics_port,
        system.scheduler_metrics_port,
        *system.processes.worker_metrics_ports,
    ]


async def statements_sent(session: aiohttp.ClientSession, system: RunningSystem) -> float:
    """`colmena_db_statements_total` summed over the ingress, the scheduler and the workers."""
    total = 0.0
    for port in metrics_ports(system):
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
        for family in text_string_to_metric_families(text):
            if family.name == "colmena_db_statements":
                total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return total


@dataclass
class Step:
    rate: float
    payments: int
    p50_s: float
    p99_s: float
    backlog_at_end: int
    drained: bool
    cpu_per_payment_ms: dict[str, float] = field(default_factory=dict)
    statements_per_payment: float = 0.0
    transactions_per_payment: float = 0.0

    @property
    def kept_up(self) -> bool:
        return self.drained and self.backlog_at_end <= self.rate and self.p99_s < P99_LIMIT_S


class Driver:
    """The driver's own connection, counting its statements (they are no payment's cost)."""

    def __init__(self, db: asyncpg.Connection, database: str) -> None:
        self.db = db
        self.database = database
        self.statements = 0

    async def committed(self) -> int:
        self.statements += 1
        value = await self.db.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", self.database
        )
        return int(value)

    async def settled_commits(self) -> int:
        """xact_commit once the backends' statistics reached it (flushed about every second)."""
        previous = await self.committed()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            await asyncio.sleep(1.5)
            current = await self.committed()
            if current - previous <= 2:  # only the driver's own reads moved it
                return current
            previous = current
        return previous

    async def emailed(self, payment_ids: Iterable[str]) -> dict[str, float]:
        self.statements += 1
        return await emailed(self.db, list(payment_ids))


async def run_step(
    system: RunningSystem,
    driver: Driver,
    session: aiohttp.ClientSession,
    rate: float,
    seconds: float,
    first_amount: int,
) -> Step:
    count = int(rate * seconds)
    payments = signed_payments(count, first_amount)
    cpu_before = cpu_by_group(system)
    statements_before = await statements_sent(session, system)
    commits_before = await driver.settled_commits()
    driver_statements_before = driver.statements

    sent_at = await send_open_loop(session, system.webhook_url, payments, rate=rate)
    backlog_at_end = count - len(await driver.emailed(sent_at))
    deadline = time.monotonic() + max(60.0, 2 * seconds)
    done = await driver.emailed(sent_at)
    while len(done) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        done = await driver.emailed(sent_at)

    commits = await driver.settled_commits() - commits_before
    statements = await statements_sent(session, system) - statements_before
    cpu_after = cpu_by_group(system)
    latencies = [done[payment] - sent_at[payment] for payment in done]
    driver_statements = driver.statements - driver_statements_before
    return Step(
        rate=rate,
        payments=count,
        p50_s=percentile(latencies, 50),
        p99_s=percentile(latencies, 99) if len(done) == count else float("inf"),
        backlog_at_end=backlog_at_end,
        drained=len(done) == count,
        cpu_per_payment_ms={
            group: cpu_spent(cpu_before[group], cpu_after[group]) / count * 1000
            for group in cpu_after
        },
        statements_per_payment=statements / count,
        transactions_per_payment=(commits - driver_statements) / count,
    )


def print_step(step: Step) -> None:
    verdict = "keeps up" if step.kept_up else "falls behind"
    print(
        f"offered {step.rate:g}/s: {verdict}; p50 {step.p50_s * 1000:.0f} ms, "
        f"p99 {step.p99_s * 1000:.0f} ms, {step.backlog_at_end} of {step.payments} not yet "
        f"emailed when sending ended{'' if step.drained else ', not drained'}",
        flush=True,
    )
    costs = ", ".join(f"{group} {ms:.2f}" for group, ms in step.cpu_per_payment_ms.items())
    print(f"  CPU ms per payment: {costs}; total {sum(step.cpu_per_payment_ms.values()):.2f}")
    print(
        f"  per payment: {step.statements_per_payment:.1f} SQL round trips, "
        f"{step.transactions_per_payment:.1f} transactions",
        flush=True,
    )


class Turns(Protocol):
    """What runs around each of this sweep's steps: another sweep's steps, taken in turn."""

    async def before(self, index: int) -> None: ...

    async def after(self, index: int) -> None: ...


class Alone:
    async def before(self, index: int) -> None:
        return None

    async def after(self, index: int) -> None:
        return None


class Paced(Alone):
    """A sweep run by `BaselineSweep`: before each step it says so and waits to be told to go."""

    async def before(self, index: int) -> None:
        print(PACE, flush=True)
        await asyncio.to_thread(sys.stdin.readline)


async def sweep(args: argparse.Namespace, turns: Turns) -> list[Step]:
    """This checkout's steps, each taken when `turns` says (before or after the other's)."""
    rates = [float(rate) for rate in args.rates.split(",")]
    async with running_system(worker_count=args.workers, database_via_proxy=False) as system:
        for port in metrics_ports(system):
            await wait_http(f"http://127.0.0.1:{port}/metrics")
        database = await system.db.fetchval("SELECT current_database()")
        driver = Driver(system.db, database)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            await run_step(system, driver, session, 10, 3, 10_000)  # warm-up
            steps: list[Step] = []
            for index, rate in enumerate(rates):
                await turns.before(index)
                step = await run_step(
                    system, driver, session, rate, args.seconds, 100_000 * (index + 1)
                )
                print_step(step)
                steps.append(step)
                await turns.after(index)
                if not step.kept_up:
                    break
    return steps


def report_figures(args: argparse.Namespace, steps: list[Step], baseline_output: str) -> None:
    kept = [step for step in steps if step.kept_up]
    if not kept:
        print(f"no rate of {args.rates} was kept up with")
        return
    knee = kept[-1]
    baseline = baseline_figures(baseline_output)
    label = f"colmena at {args.baseline}"

    def report(name: str, value: float, unit: str) -> None:
        figure(name, value, unit, baseline=baseline.get(name), baseline_name=label)

    report("knee (highest rate kept up with)", knee.rate, "payments/s")
    report("p99 at the knee", knee.p99_s * 1000, "ms")
    report("CPU per payment at the knee", sum(knee.cpu_per_payment_ms.values()), "ms")
    for group, ms in knee.cpu_per_payment_ms.items():
        report(f"CPU per payment at the knee: {group}", ms, "ms")
    report("SQL round trips per payment", knee.statements_per_payment, "statements")
    report("transactions per payment", knee.transactions_per_payment, "transactions")


def baseline_figures(output: str) -> dict[str, float]:
    return {
        match["name"]: float(match["value"])
        for match in (FIGURE_LINE.match(line) for line in output.splitlines())
        if match
    }


class BaselineSweep:
    """The sweep of commit `args.baseline`, from a temporary worktree, in a child process that
    takes a step each time `before` or `after` lets it; its lines are echoed with a "baseline: "
    prefix."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tree = Path(tempfile.mkdtemp(prefix="colmena-baseline-")) / "tree"
        self.lines: list[str] = []
        self.child: asyncio.subprocess.Process | None = None
        self.waiting = False  # the child waits to be told to take its next step

    async def __aenter__(self) -> BaselineSweep:
        args = self.args
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(self.tree), args.baseline],
            check=True,
            capture_output=True,
        )
        try:
            for name in DRIVER_FILES:
                shutil.copyfile(ROOT / name, self.tree / name)
            command = ["bench/capacity.py", "--rates", args.rates, "--paced"]
            command += ["--seconds", str(args.seconds), "--workers", str(args.workers)]
            print(f"baseline: colmena at {args.baseline}", flush=True)
            self.child = await asyncio.create_subprocess_exec(
                sys.executable,
                *command,
                cwd=self.tree,
                env={**os.environ, "PYTHONPATH": str(self.tree)},
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except BaseException:  # the worktree is already there: remove it
            await self.__aexit__()
            raise
        return self

    async def _echo_until_paced(self) -> None:
        """Echo the child's lines until it waits for its next step or ends."""
        assert self.child is not None and self.child.stdout is not None
        async for raw in self.child.stdout:
            line = raw.decode()
            if line.rstrip("\n") == PACE:
                self.waiting = True
                return
            self.lines.append(line)
            print(f"baseline: {line}", end="", flush=True)
        if await self.child.wait() != 0:
            raise SystemExit(f"the baseline sweep failed (exit {self.child.returncode})")

    async def _step(self) -> None:
        """Let the baseline take its next step, if it has one, and wait until it took it."""
        assert self.child is not None and self.child.stdin is not None
        if not self.waiting and self.child.returncode is None:
            await self._echo_until_paced()
        if self.waiting:
            self.waiting = False
            self.child.stdin.write(b"go\n")
            await self.child.stdin.drain()
            await self._echo_until_paced()

    async def before(self, index: int) -> None:
        """The baseline goes first at every other rate: the first, the third, ..."""
        if index % 2 == 0:
            await self._step()

    async def after(self, index: int) -> None:
        if index % 2 == 1:
            await self._step()

    async def output(self) -> str:
        """The baseline's whole output, once it took alone the steps it has left."""
        assert self.child is not None
        while self.waiting or self.child.returncode is None:
            await self._step()
        return "".join(self.lines)

    async def __aexit__(self, *exc_info: object) -> None:
        if self.child is not None and self.child.returncode is None:
            # SIGTERM first: the child then stops the colmena it runs and drops its database
            # (`exit_on_sigterm`); a SIGKILL would leave them running.
            self.child.terminate()
            try:
                await asyncio.wait_for(self.child.wait(), CHILD_STOP_S)
            except TimeoutError:
                self.child.kill()
                await self.child.wait()
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(self.tree)],
            check=True,
            capture_output=True,
        )
        shutil.rmtree(self.tree.parent, ignore_errors=True)


async def run(args: argparse.Namespace) -> None:
    if args.paced:
        report_figures(args, await sweep(args, Paced()), "")
    elif args.baseline:
        async with BaselineSweep(args) as baseline:
            steps = await sweep(args, baseline)
            report_figures(args, steps, await baseline.output())
    else:
        report_figures(args, await sweep(args, Alone()), "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default="60,90,120,150,180,240", help="offered payments/s")
    parser.add_argument("--seconds", type=float, default=15.0, help="sending time per rate")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline", help="a git commit to sweep beside this one, as the baseline")
    parser.add_argument("--paced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    print(
        f"machine: {machine()}; workers: {args.workers} x 4 threads; "
        f"rates {args.rates} for {args.seconds:g} s each"
    )
    exit_on_sigterm()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
