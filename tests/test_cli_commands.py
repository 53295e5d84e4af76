"""The `colmena` group loads a command's module only when that command runs: the table it loads
from must name every command exactly once, and a light command must not pay for the web
application."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from typing import Any

from click.testing import CliRunner

import colmena.cli
from colmena.cli import COMMAND_MODULES, cli, load_command


def _modules_with_commands() -> dict[str, list[str]]:
    """Each module of colmena.cli that defines COMMANDS, with the names of its commands."""
    found = {}
    for info in pkgutil.iter_modules(colmena.cli.__path__):
        module = importlib.import_module(f"colmena.cli.{info.name}")
        if hasattr(module, "COMMANDS"):
            found[info.name] = [command.name for command in module.COMMANDS]
    return found


def test_the_table_names_every_command_of_every_module_and_no_other() -> None:
    declared = {
        name: module for module, names in _modules_with_commands().items() for name in names
    }
    assert declared == COMMAND_MODULES


def test_each_name_loads_its_own_command_and_an_unknown_one_none() -> None:
    for name in COMMAND_MODULES:
        command = load_command(name)
        assert command is not None and command.name == name
    assert load_command("no-such-command") is None


def test_help_lists_every_command_and_an_unknown_one_is_refused() -> None:
    runner = CliRunner()
    listed = runner.invoke(cli, ["--help"])
    assert listed.exit_code == 0
    for name in COMMAND_MODULES:
        assert f"\n  {name} " in listed.output, name
    unknown = runner.invoke(cli, ["no-such-command"])
    assert unknown.exit_code == 2
    assert "No such command 'no-such-command'" in unknown.output


TREE_PROBE = """
import json, sys
import click
from colmena.cli import COMMAND_MODULES, load_command

def tree(command):
    if isinstance(command, click.Group):
        return {name: tree(sub) for name, sub in command.commands.items()}
    return None

names = sorted(COMMAND_MODULES, reverse=sys.argv[1] == "reverse")
alone = {name: tree(load_command(name)) for name in names}
print(json.dumps({"alone": alone, "all": {name: tree(load_command(name)) for name in names}}))
"""


def _trees_as_loaded(order: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each command's subcommands right after its module loaded (modules loaded one by one in
    `order`), and the same commands once every module is loaded."""
    result = subprocess.run(
        [sys.executable, "-c", TREE_PROBE, order],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    trees = json.loads(result.stdout)
    return trees["alone"], trees["all"]


def test_no_module_adds_to_a_command_of_another() -> None:
    for order in ("forward", "reverse"):
        alone, everything = _trees_as_loaded(order)
        assert alone == everything, order
    assert set(everything["reconcile"]) == {"mercadopago", "report"}


def test_a_process_command_does_not_import_the_web_application() -> None:
    probe = (
        "import sys\n"
        "from colmena.cli import cli\n"
        "try:\n"
        "    cli(['migrate', '--help'], prog_name='colmena')\n"
        "except SystemExit:\n"
        "    pass\n"
        "loaded = [m for m in ('colmena.http.app', 'colmena.dev', 'colmena.cli.payments')"
        " if m in sys.modules]\n"
        "print('loaded:', loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert "Apply pending database migrations" in result.stdout
    assert "loaded: []" in result.stdout, result.stdout
