"""`colmena check`: what each part needs configured, and whether it is; no secret shown.

Against a running `colmena dev` a part that one of its sandboxes stands in for is ready, marked
"(dev sandbox)".
"""

from __future__ import annotations

import json
import sys

import click

from colmena.config import load_settings
from colmena.config.dev_stack import operator_settings
from colmena.config.readiness import requirements

EXIT_NOT_READY = 1


@click.command("check")
@click.option("--json", "as_json", is_flag=True, help="one JSON document for scripts")
def check_command(as_json: bool) -> None:
    """Readiness of the configuration, part by part. Exits 1 when anything is missing."""
    settings, stack = operator_settings(load_settings())
    found = requirements(settings, stack.sandboxes if stack is not None else ())
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "part": r.part,
                        "purpose": r.purpose,
                        "variable": r.variable,
                        "ready": r.ready,
                        "sandbox": r.sandbox,
                    }
                    for r in found
                ],
                indent=2,
            )
        )
    else:
        width = max(len(r.variable) for r in found)
        for r in found:
            mark = "ok     " if r.ready else "MISSING"
            served = " (dev sandbox)" if r.sandbox else ""
            click.echo(f"{mark}  {r.part:<9} {r.variable:<{width}}  {r.purpose}{served}")
        missing = sum(not r.ready for r in found)
        click.echo("ready" if not missing else f"{missing} setting(s) missing")
    if any(not r.ready for r in found):
        sys.exit(EXIT_NOT_READY)


COMMANDS = [check_command]
