"""`colmena check`: what each part needs configured, and whether it is; no secret shown."""

from __future__ import annotations

import json
import sys

import click

from colmena.config.dev_stack import load_operator_settings
from colmena.config.readiness import requirements

EXIT_NOT_READY = 1


@click.command("check")
@click.option("--json", "as_json", is_flag=True, help="one JSON document for scripts")
def check_command(as_json: bool) -> None:
    """Readiness of the configuration, part by part. Exits 1 when anything is missing."""
    found = requirements(load_operator_settings())
    if as_json:
        click.echo(
            json.dumps(
                [
                    {"part": r.part, "purpose": r.purpose, "variable": r.variable, "ready": r.ready}
                    for r in found
                ],
                indent=2,
            )
        )
    else:
        width = max(len(r.variable) for r in found)
        for r in found:
            mark = "ok     " if r.ready else "MISSING"
            click.echo(f"{mark}  {r.part:<9} {r.variable:<{width}}  {r.purpose}")
        missing = sum(not r.ready for r in found)
        click.echo("ready" if not missing else f"{missing} setting(s) missing")
    if any(not r.ready for r in found):
        sys.exit(EXIT_NOT_READY)


COMMANDS = [check_command]
