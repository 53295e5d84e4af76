"""Run every bench script and write bench/REPORT.md: each figure, its same-run baseline, the ratio.

    python bench/report.py            # the whole suite (about 15 minutes on 2 cores)
    python bench/report.py outbox webhooks   # some of it: only their sections are replaced

Each script prints `FIGURE name: value unit [baseline=... (what)] [ratio=...]`; this collects
those lines as they are, with the machine and the exact command that produced them.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from bench.common import machine  # noqa: E402

HERE = Path(__file__).parent
SUITE: dict[str, list[str]] = {
    "outbox": ["outbox.py", "--messages", "5000"],
    "webhooks": ["webhooks.py", "--events", "5000", "--rounds", "3", "--rate", "100"],
    "e2e": ["e2e.py", "--payments", "200", "--rate", "8"],
    "capacity": [
        "capacity.py",
        "--rates",
        "30,40,50,60,75,90,105,120,140,160,185,215,250,290,340,370,400,460",
        "--seconds",
        "10",
        "--baseline",
        "1c7af29",
    ],
    "workers": ["workers.py", "--messages", "10000"],
    "licenses": ["licenses.py", "--licenses", "200", "--threads", "1,4"],
    "stamping": ["stamping.py", "--invoices", "200", "--e2e", "20", "--threads", "1,4"],
    "mail": ["mail.py", "--messages", "1000", "--rounds", "3"],
    "reconcile": ["reconcile.py"],
    "chaos": ["chaos.py", "--events", "600", "--rate", "40", "--rabbit-fault", "proxy"],
    "pg_sync_cost": ["pg_sync_cost.py", "--seconds", "5"],
    "console": ["console.py", "--payments", "100000", "--samples", "30"],
    "audit": ["audit.py", "--rows", "200000"],
    "backups": ["backups.py", "--payments", "200000"],
    "distributed": [
        "chaos.py",
        *("--distributed", "--events", "5000", "--rate", "100", "--throughput-payments", "500"),
    ],
}
FIGURE = re.compile(
    r"^FIGURE (?P<name>.+?): (?P<value>[-\d.]+|nan) (?P<unit>\S+)"
    r"(?: baseline=(?P<baseline>[-\d.]+) \((?P<what>.*?)\))?(?: ratio=(?P<ratio>[-\d.]+))?$"
)


def run(name: str) -> tuple[str, list[dict[str, str]], list[str], float]:
    command = [sys.executable, str(HERE / SUITE[name][0]), *SUITE[name][1:]]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    elapsed = time.monotonic() - started
    figures, notes = [], []
    for line in result.stdout.splitlines():
        match = FIGURE.match(line)
        if match:
            figures.append({key: value or "" for key, value in match.groupdict().items()})
        elif line.strip() and not line.startswith("machine:"):
            notes.append(line.strip())
    if result.returncode != 0:
        last_error = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
        notes.append(f"exit code {result.returncode}: {last_error}")
    shown = " ".join(["python", f"bench/{SUITE[name][0]}", *SUITE[name][1:]])
    return shown, figures, notes, elapsed


def section(
    name: str, command: str, figures: list[dict[str, str]], notes: list[str], elapsed: float
) -> list[str]:
    """One bench's part of the report: its command, its figures as a table, what else it said."""
    lines = [
        f"## {name}",
        "",
        f"`{command}` ({elapsed:.0f} s, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
    ]
    if figures:
        lines += ["| figure | value | baseline | ratio |", "| --- | --- | --- | --- |"]
        for figure in figures:
            baseline = (
                f"{figure['baseline']} {figure['unit']} ({figure['what']})"
                if figure["baseline"]
                else ""
            )
            lines.append(
                f"| {figure['name'].strip()} | {figure['value']} {figure['unit']} "
                f"| {baseline} | {figure['ratio']} |"
            )
        lines.append("")
    if notes:
        lines += ["```", *notes, "```", ""]
    return lines


def kept_sections(report: Path) -> dict[str, list[str]]:
    """The sections of an earlier report, by bench name, so a partial run replaces only its own."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in report.read_text().splitlines() if report.exists() else []:
        if line.startswith("## "):
            current = sections.setdefault(line[3:].strip(), [])
        if current is not None:
            current.append(line)
    return sections


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "only", nargs="*", help=f"bench names among {', '.join(SUITE)} (default: all)"
    )
    parser.add_argument("--output", type=Path, default=HERE / "REPORT.md")
    args = parser.parse_args()
    unknown = sorted(set(args.only) - set(SUITE))
    if unknown:
        parser.error(f"unknown bench(es) {', '.join(unknown)}; known: {', '.join(SUITE)}")
    names = args.only or list(SUITE)
    sections = kept_sections(args.output) if args.only else {}
    lines = [
        "# colmena benchmark report",
        "",
        f"Made by `python bench/report.py`; each section gives its command and when it ran (a "
        f"section rerun alone, `python bench/report.py NAME`, replaces only itself). Last run "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {machine()}.",
        "Every baseline is measured in the same run on the same machine; "
        "ratio = figure / baseline.",
        "",
    ]
    for name in names:
        print(f"running {name}...", flush=True)
        sections[name] = section(name, *run(name))
    for name in SUITE:
        if name in sections:
            lines += sections[name]
    args.output.write_text("\n".join(lines).rstrip("\n") + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
