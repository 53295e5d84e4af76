"""README.md stays true to the code: every setting and the test command are documented."""

from __future__ import annotations

from pathlib import Path

from colmena.config import Settings

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    missing = [
        f"COLMENA_{name.upper()}"
        for name in Settings.model_fields
        if f"COLMENA_{name.upper()}" not in README
    ]
    assert missing == []


def test_readme_names_the_set_up_commands() -> None:
    assert "    $ colmena dev" in README
    assert "    $ python -m pytest" in README
